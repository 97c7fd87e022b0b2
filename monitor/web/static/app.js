// hessmon live page: polls the monitor's read-only JSON API and draws the
// run's curvature with uPlot. No framework, no build step: the file is
// served as it is from the Go binary.
"use strict";

(() => {
  const API = "api/"; // relative: the page works under any mount prefix
  const params = new URLSearchParams(location.search);
  const pollMs = Math.max(200, Number(params.get("poll")) || 2000);
  const HEAT_ROWS = 96;
  const HEAT_DECADES = 6; // colour range below each column's peak
  const ESD_POINTS = 500;
  const palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
    "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"];

  const state = {
    runs: [], // summaries from api/runs
    runsKey: "",
    selected: [], // run ids shown, in the API's order
    userChose: false,
    wanted: params.getAll("run"), // runs named in the URL
    data: new Map(), // run id -> {snaps: [], from: 0}
    charts: new Map(), // chart key -> {sig, u, el}
    heat: new Map(), // run id -> heat-map cache
    version: 0, // bumps when data or selection change
    drawn: -1,
    lastOK: null,
  };

  // ---- numbers ------------------------------------------------------------

  const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);

  function fmt(v) {
    v = num(v);
    if (v === null) return "—";
    const a = Math.abs(v);
    if (v === 0) return "0";
    if (Number.isInteger(v) && a < 1e7) return String(v);
    if (a >= 1e5 || a < 1e-3) return v.toExponential(3).replace(/\.?0+e/, "e");
    return String(Number(v.toPrecision(5)));
  }

  // erfc for x ≥ 0 (Abramowitz & Stegun 7.1.26), no cancellation in the tails.
  function erfcPos(x) {
    const t = 1 / (1 + 0.3275911 * x);
    const p = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t;
    return p * Math.exp(-x * x);
  }

  // Mass of N(0, 1/2·…) between z-scores za < zb, i.e. (erf(zb) − erf(za)) / 2.
  function gaussMass(za, zb) {
    if (za >= 0) return 0.5 * (erfcPos(za) - erfcPos(zb));
    if (zb <= 0) return 0.5 * (erfcPos(-zb) - erfcPos(-za));
    return 0.5 * (2 - erfcPos(-za) - erfcPos(zb));
  }

  // The ESD's grid range and kernel variance, as estimators.ESDResult.Density
  // (PyHessian's density_generate) computes them.
  function esdShape(esd) {
    const nodes = esd.nodes || [], weights = esd.weights || [];
    const probes = esd.probes || 1, steps = esd.steps || nodes.length;
    if (!nodes.length || nodes.length !== weights.length || nodes.length !== probes * steps) return null;
    let lmin = 0, lmax = 0;
    for (let p = 0; p < probes; p++) {
      let lo = Infinity, hi = -Infinity;
      for (let i = p * steps; i < (p + 1) * steps; i++) {
        const x = num(nodes[i]);
        if (x === null) return null;
        lo = Math.min(lo, x);
        hi = Math.max(hi, x);
      }
      lmin += lo;
      lmax += hi;
    }
    lmin = lmin / probes - 0.01;
    lmax = lmax / probes + 0.01;
    const sigma2 = num(esd.sigma2) > 0 ? esd.sigma2 : 1e-5;
    return { nodes, weights, lmin, lmax, variance: sigma2 * Math.max(1, lmax - lmin) };
  }

  function kernelDensity(shape, x) {
    const c = 1 / Math.sqrt(2 * Math.PI * shape.variance);
    let s = 0;
    for (let i = 0; i < shape.nodes.length; i++) {
      const w = shape.weights[i];
      if (w) {
        const d = x - shape.nodes[i];
        s += w * Math.exp(-d * d / (2 * shape.variance));
      }
    }
    return c * s;
  }

  // Mean density over each cell [edges[r], edges[r+1]]: keeps every node's
  // mass however narrow the kernel is against the cells (as the Go heat map).
  function cellDensity(shape, edges) {
    const rows = edges.length - 1, out = new Float64Array(rows);
    const s = Math.sqrt(2 * shape.variance);
    for (let i = 0; i < shape.nodes.length; i++) {
      const w = shape.weights[i], t = shape.nodes[i];
      if (!(w > 0)) continue;
      // Only cells within 8σ of the node get mass worth drawing.
      for (let r = upper(edges, t - 8 * s) - 1; r < rows && edges[r] <= t + 8 * s; r++) {
        if (r < 0) continue;
        out[r] += w * gaussMass((edges[r] - t) / s, (edges[r + 1] - t) / s);
      }
    }
    for (let r = 0; r < rows; r++) out[r] /= edges[r + 1] - edges[r];
    return out;
  }

  // upper returns the first index whose edge is above x.
  function upper(edges, x) {
    let lo = 0, hi = edges.length;
    while (lo < hi) {
      const m = (lo + hi) >> 1;
      if (edges[m] > x) hi = m; else lo = m + 1;
    }
    return lo;
  }

  // ---- colours ------------------------------------------------------------

  const viridis = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const heatColours = Array.from({ length: 64 }, (_, i) => {
    const t = i / 63 * (viridis.length - 1), k = Math.min(viridis.length - 2, Math.floor(t)), f = t - k;
    const c = viridis[k].map((v, j) => Math.round(v + f * (viridis[k + 1][j] - v)));
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  });
  const heatColour = (t) => heatColours[Math.max(0, Math.min(63, Math.round(t * 63)))];

  function alpha(hex, a) {
    const n = parseInt(hex.slice(1), 16);
    return `rgba(${n >> 16},${(n >> 8) & 255},${n & 255},${a})`;
  }

  const runColour = (id) => palette[Math.max(0, state.runs.findIndex((r) => r.id === id)) % palette.length];

  // ---- fetching -----------------------------------------------------------

  async function getJSON(url) {
    const resp = await fetch(url, { cache: "no-store", headers: { Accept: "application/json" } });
    if (!resp.ok) {
      let msg = resp.statusText;
      try { msg = (await resp.json()).error || msg; } catch (_) { /* not JSON */ }
      const err = new Error(`${url}: ${resp.status} ${msg}`);
      err.status = resp.status;
      throw err;
    }
    return { body: await resp.json(), resp };
  }

  // nextURL returns the next page of a paginated answer: the API names the
  // first step still to come in X-Hessmon-Next-From (and in a Link
  // rel="next"); no header means the answer is complete.
  function nextURL(resp, id) {
    const from = resp.headers.get("X-Hessmon-Next-From");
    if (from !== null && /^\d+$/.test(from.trim())) return snapURL(id, from.trim());
    const link = resp.headers.get("Link");
    const m = link && /<([^>]*)>\s*;\s*rel="?next"?/.exec(link);
    return m ? new URL(m[1], resp.url).href : null;
  }

  const snapURL = (id, from) => `${API}runs/${encodeURIComponent(id)}/snapshots?from=${from}`;

  async function fetchRun(id) {
    let r = state.data.get(id);
    if (!r) {
      r = { snaps: [], from: 0 };
      state.data.set(id, r);
    }
    let url = snapURL(id, r.from);
    for (let page = 0; url && page < 10000; page++) {
      const { body, resp } = await getJSON(url);
      let added = 0;
      for (const s of body || []) {
        if (s.step < r.from) continue; // a page that overlaps what we have
        r.snaps.push(s);
        r.from = s.step + 1;
        added++;
      }
      if (added) state.version++;
      url = added || page === 0 ? nextURL(resp, id) : null;
    }
  }

  async function poll() {
    try {
      const { body: runs } = await getJSON(API + "runs");
      setRuns(runs || []);
      for (const id of state.selected) await fetchRun(id);
      state.lastOK = new Date();
      draw();
      setStatus("ok");
    } catch (err) {
      setStatus("error", err);
    }
    setTimeout(poll, pollMs);
  }

  // ---- runs and selection -------------------------------------------------

  function setRuns(runs) {
    const key = JSON.stringify(runs.map((r) => [r.id, r.snapshots, r.last_step, r.failures]));
    if (key === state.runsKey) return;
    state.runsKey = key;
    state.runs = runs;
    const ids = runs.map((r) => r.id);
    if (!state.userChose) {
      const wanted = state.wanted.filter((id) => ids.includes(id));
      if (wanted.length) {
        state.selected = wanted;
      } else if (runs.length) {
        // The newest run: the one a user who just started training wants.
        const newest = runs.reduce((a, b) => (Date.parse(b.started) > Date.parse(a.started) ? b : a));
        state.selected = [newest.id];
      }
    }
    state.selected = ids.filter((id) => state.selected.includes(id));
    state.version++;
    renderRunPicker();
  }

  function renderRunPicker() {
    const box = document.getElementById("runs");
    box.replaceChildren();
    if (!state.runs.length) {
      const p = document.createElement("p");
      p.className = "empty";
      p.textContent = "no runs yet";
      box.append(p);
      return;
    }
    for (const r of state.runs) {
      const label = document.createElement("label");
      const cb = document.createElement("input");
      cb.type = "checkbox";
      cb.value = r.id;
      cb.checked = state.selected.includes(r.id);
      cb.addEventListener("change", onPick);
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = runColour(r.id);
      const meta = document.createElement("span");
      meta.className = "meta";
      meta.textContent = `${r.model || ""} · ${r.snapshots} probes` + (r.light ? ` (${r.light} light)` : "") +
        `, last step ${r.last_step}` +
        (r.failures ? `, ${r.failures} failed` : "");
      label.append(cb, sw, document.createTextNode(r.id), meta);
      box.append(label);
    }
  }

  function onPick() {
    state.userChose = true;
    state.selected = [...document.querySelectorAll("#runs input:checked")].map((cb) => cb.value);
    const q = new URLSearchParams(location.search);
    q.delete("run");
    for (const id of state.selected) q.append("run", id);
    history.replaceState(null, "", "?" + q.toString());
    state.version++;
    Promise.all(state.selected.map(fetchRun)).then(draw, (err) => setStatus("error", err));
  }

  function setStatus(kind, err) {
    const el = document.getElementById("status");
    el.dataset.state = kind;
    if (kind === "error") {
      el.textContent = `API unreachable (${err && err.message ? err.message : err}); retrying every ${pollMs / 1000} s`;
      return;
    }
    const last = Math.max(-1, ...state.selected.map((id) => {
      const s = state.data.get(id)?.snaps;
      return s && s.length ? s[s.length - 1].step : -1;
    }));
    el.textContent = (last >= 0 ? `latest probe at step ${last} · ` : "waiting for the first probe · ") +
      `updated ${state.lastOK.toLocaleTimeString()} · polling every ${pollMs / 1000} s`;
  }

  // ---- charts -------------------------------------------------------------

  const multi = () => state.selected.length > 1;
  const name = (id, what) => (multi() ? `${id} ${what}` : what);

  // Ticks and grid lines at powers of ten only: uPlot's default log splits
  // (2…9 of every decade) crowd a short chart.
  function decades(u, axis, lo, hi) {
    for (const ms of [[1], [1, 2, 5], [1, 1.5, 2, 3, 5, 7]]) {
      const out = [];
      for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
        for (const m of ms) {
          const v = m * Math.pow(10, e);
          if (v >= lo * 0.999 && v <= hi * 1.001) out.push(v);
        }
      }
      if (out.length >= 3 || ms.length === 6) return out.length >= 2 ? out : [lo, hi];
    }
  }
  // asinhSplits puts ticks at 0 and ±10^k inside [lo, hi], every other
  // decade when there are many.
  function asinhSplits(u, axis, lo, hi) {
    const m = Math.max(Math.abs(lo), Math.abs(hi));
    if (!(m > 0) || !Number.isFinite(m)) return [lo, hi];
    const top = Math.floor(Math.log10(m)), c = u.scales[u.axes[axis].scale].asinh || m / 100;
    const bottom = Math.max(top - 12, Math.ceil(Math.log10(10 * c))); // decades inside ±10c crowd 0
    const step = top - bottom > 5 ? 2 : 1;
    const out = lo <= 0 && hi >= 0 ? [0] : [];
    for (let e = top; e >= bottom; e -= step) {
      const v = Math.pow(10, e);
      if (v <= hi) out.push(v);
      if (-v >= lo) out.push(-v);
    }
    out.sort((a, b) => a - b);
    return out.length >= 2 ? out : [lo, hi];
  }
  const logAxis = (label) => ({ size: 64, label, splits: decades, values: (u, vs) => vs.map((v) => (v == null ? "" : fmt(v))) });

  // autoY picks the y axis for the values in cols: logarithmic when all are
  // positive and span two decades or more, asinh (linear near 0,
  // logarithmic beyond) when they change sign and a few are far above the
  // rest, linear otherwise. The first probes of a run are often far above
  // the later ones, and the sharpness threshold far above λ1; a linear
  // axis flattens everything else.
  function autoY(cols, label, key) {
    const vals = [];
    for (const ys of cols) for (const v of ys) if (v != null && Number.isFinite(v)) vals.push(v);
    const abs = vals.map(Math.abs).filter((v) => v > 0).sort((a, b) => a - b);
    let scale = {}, axis = { size: 64, label }, sig = "lin";
    if (abs.length && vals.every((v) => v > 0) && abs[abs.length - 1] / abs[0] >= 100) {
      scale = { distr: 3 };
      axis = logAxis(label + " (log axis)");
      sig = "log";
    } else if (abs.length > 2 && abs[abs.length - 1] / abs[abs.length >> 1] >= 30) {
      const c = abs[abs.length >> 2];
      // uPlot's own asinh range and splits can fail on such data (an
      // invalid array length); ours pad by 5% in the axis' own coordinate.
      scale = {
        distr: 4, asinh: c,
        range: (u, lo, hi) => {
          const a = Math.asinh(lo / c), b = Math.asinh(hi / c), p = 0.05 * (b - a || 1);
          return [c * Math.sinh(a - p), c * Math.sinh(b + p)];
        },
      };
      axis = { size: 64, label: label + " (asinh axis)", splits: asinhSplits, values: (u, vs) => vs.map((v) => (v == null ? "" : fmt(v))) };
      sig = "asinh " + c;
    }
    if (key) axis.scale = key;
    return { scale, axis, sig };
  }

  function line(label, stroke, extra) {
    return Object.assign({ label, stroke, width: 1.5, spanGaps: true, value: (u, v) => fmt(v) }, extra);
  }

  function plot(key, el, series, data, extra) {
    const sig = JSON.stringify(series.map((s) => [s.label, s.scale || "y"])) + (extra.sigExtra || "");
    let c = state.charts.get(key);
    if (c && c.sig === sig && c.el === el) {
      c.u.setData(data);
      return c.u;
    }
    if (c) c.u.destroy();
    const opts = Object.assign({
      width: Math.max(240, el.clientWidth),
      height: 240,
      series: [{ label: "step", value: (u, v) => (v === null ? "—" : String(v)) }, ...series],
      scales: { x: { time: false } },
      axes: [{ label: "step" }, { size: 64 }],
      legend: { live: true },
      cursor: { drag: { x: true, y: false } },
    }, extra.opts);
    const u = new uPlot(opts, data, el);
    state.charts.set(key, { sig, u, el });
    return u;
  }

  // table joins per-run tables [x, ...ys] on their steps.
  function join(tables) {
    if (tables.length === 1) return tables[0];
    return uPlot.join(tables);
  }

  function goodSnaps(id) {
    return (state.data.get(id)?.snaps || []).filter((s) => !s.failure);
  }

  // A light probe has λ1 and λmin only; a snapshot without a kind (an
  // older store) is a full probe.
  const isLight = (s) => s.kind === "light";

  function drawLambda() {
    const series = [], tables = [];
    for (const id of state.selected) {
      const snaps = state.data.get(id)?.snaps || [];
      const k = Math.max(0, ...snaps.map((s) => (s.eigenvalues || []).length));
      const x = snaps.map((s) => s.step);
      const t = [x];
      const c = runColour(id);
      for (let i = 0; i < k; i++) {
        t.push(snaps.map((s) => (s.failure || !s.eigenvalues ? null : num(s.eigenvalues[i]))));
        series.push(line(name(id, `λ${i + 1}`), multi() ? c : palette[i % palette.length],
          { width: i === 0 ? 2 : 1.25, dash: multi() && i > 0 ? [2 + 2 * i, 3] : undefined }));
      }
      // λ1 is dense (every probe has it, light or full) and λ2..k come
      // from full probes: when a run has both kinds, ring λ1 at its full
      // probes (the legend's value says why the probe was taken).
      if (k > 0 && snaps.some(isLight)) {
        t.push(snaps.map((s) => (s.failure || isLight(s) || !s.eigenvalues ? null : num(s.eigenvalues[0]))));
        series.push(line(name(id, "full probe"), multi() ? c : "#111", {
          paths: () => null, spanGaps: false, width: 1.5,
          points: { show: true, size: 10, stroke: multi() ? c : "#111", fill: "transparent", width: 1.5 },
        }));
      }
      t.push(snaps.map((s) => num(s.sharpness_threshold)));
      series.push(line(name(id, "threshold"), multi() ? c : "#555", { dash: [8, 5], width: 1.5 }));
      tables.push(t);
    }
    // The threshold is often orders of magnitude above λ1 until the edge of
    // stability: autoY's log axis shows both.
    const data = join(tables), y = autoY(data.slice(1), "λ");
    plot("lambda", document.getElementById("chart-lambda"), series, data, {
      opts: { scales: { x: { time: false }, y: y.scale }, axes: [{ label: "step" }, y.axis] },
      sigExtra: y.sig,
    });
  }

  function drawTrace() {
    const series = [], tables = [], bands = [];
    for (const id of state.selected) {
      const snaps = goodSnaps(id).filter((s) => s.trace);
      const c = multi() ? runColour(id) : palette[0];
      const v = snaps.map((s) => num(s.trace.value));
      const se = snaps.map((s) => num(s.trace.stderr));
      const base = series.length + 1;
      tables.push([snaps.map((s) => s.step), v,
        v.map((x, i) => (x === null || se[i] === null ? null : x + 2 * se[i])),
        v.map((x, i) => (x === null || se[i] === null ? null : x - 2 * se[i]))]);
      series.push(line(name(id, "trace"), c, { width: 2 }),
        line(name(id, "+2·stderr"), alpha(c, 0.5), { width: 1 }),
        line(name(id, "−2·stderr"), alpha(c, 0.5), { width: 1 }));
      bands.push({ series: [base + 1, base + 2], fill: alpha(c, 0.15) });
    }
    const data = join(tables), y = autoY(data.slice(1), "trace");
    plot("trace", document.getElementById("chart-trace"), series, data, {
      opts: { bands, scales: { x: { time: false }, y: y.scale }, axes: [{ label: "step" }, y.axis] },
      sigExtra: y.sig,
    });
  }

  function drawESD() {
    const latest = [];
    for (const id of state.selected) {
      const snaps = goodSnaps(id);
      for (let i = snaps.length - 1; i >= 0; i--) {
        const sh = snaps[i].esd && esdShape(snaps[i].esd);
        if (sh) {
          latest.push({ id, step: snaps[i].step, sh });
          break;
        }
      }
    }
    const el = document.getElementById("chart-esd");
    if (!latest.length) return;
    const lo = Math.min(...latest.map((l) => l.sh.lmin)), hi = Math.max(...latest.map((l) => l.sh.lmax));
    const x = Array.from({ length: ESD_POINTS }, (_, i) => lo + (hi - lo) * i / (ESD_POINTS - 1));
    const dx = x[1] - x[0];
    const ys = latest.map((l) => {
      const d = x.map((v) => kernelDensity(l.sh, v));
      const s = d.reduce((a, b) => a + b, 0) * dx; // unit Riemann sum, as PyHessian
      return s > 0 ? d.map((v) => v / s) : d;
    });
    const peak = Math.max(...ys.map((y) => Math.max(...y)));
    const floor = peak * Math.pow(10, -HEAT_DECADES);
    const data = [x, ...ys.map((y) => y.map((v) => Math.max(v, floor)))];
    const series = latest.map((l, i) => line(name(l.id, `density at step ${l.step}`),
      multi() ? runColour(l.id) : palette[0], { width: 1.5, fill: alpha(multi() ? runColour(l.id) : palette[0], 0.08) }));
    const u = plot("esd", el, series, data, {
      opts: {
        series: [{ label: "λ", value: (u, v) => fmt(v) }, ...series],
        scales: { x: { time: false }, y: { distr: 3, range: () => [floor, peak * 2] } },
        axes: [{ label: "eigenvalue λ" }, logAxis("density")],
      },
      sigExtra: latest.map((l) => l.step).join(","),
    });
    u.hessmonSteps = latest.map((l) => ({ run: l.id, step: l.step }));
  }

  // heatCache keeps each run's heat-map columns: a column is computed once,
  // and all of them again only when a new probe's spectrum leaves the range.
  function heatCache(id) {
    let h = state.heat.get(id);
    if (!h) {
      h = { lo: 0, hi: 0, c: 1, cols: [], seen: 0 };
      state.heat.set(id, h);
    }
    const snaps = goodSnaps(id);
    const fresh = [];
    for (const s of snaps.slice(h.seen)) {
      const sh = s.esd && esdShape(s.esd);
      if (sh) fresh.push({ step: s.step, sh });
    }
    h.seen = snaps.length;
    if (!fresh.length) return h;
    let lo = Infinity, hi = -Infinity;
    for (const f of [...h.cols, ...fresh]) {
      const s3 = 3 * Math.sqrt(f.sh.variance);
      for (let i = 0; i < f.sh.nodes.length; i++) {
        if (f.sh.weights[i] > 0) {
          lo = Math.min(lo, f.sh.nodes[i] - s3);
          hi = Math.max(hi, f.sh.nodes[i] + s3);
        }
      }
    }
    // Rows are even on an asinh axis, linear within ±c and logarithmic
    // beyond: Hessian spectra put a spike at 0 and outliers decades away,
    // and early probes can be far wider than later ones. c is a tenth of
    // the largest |λ| of a narrow probe (the first quartile).
    const widths = [...h.cols, ...fresh].map((f) => Math.max(...f.sh.nodes.map(Math.abs))).sort((a, b) => a - b);
    const c = Math.max(0.1 * widths[widths.length >> 2], (hi - lo) * 1e-6) || 1;
    const rebuild = !h.cols.length || lo < h.lo || hi > h.hi || c > 4 * h.c || c < h.c / 4;
    if (rebuild) {
      const pad = 0.05 * (hi - lo || 1);
      h.lo = lo - pad;
      h.hi = hi + pad;
      h.c = c;
      const u0 = Math.asinh(h.lo / h.c), u1 = Math.asinh(h.hi / h.c);
      h.edges = Array.from({ length: HEAT_ROWS + 1 }, (_, r) => h.c * Math.sinh(u0 + (u1 - u0) * r / HEAT_ROWS));
    }
    const todo = rebuild ? [...h.cols, ...fresh] : fresh;
    if (rebuild) h.cols = [];
    for (const f of todo) {
      const dens = cellDensity(f.sh, h.edges);
      f.dens = dens;
      f.peak = Math.max(...dens);
      h.cols.push(f);
    }
    return h;
  }

  function drawHeat(u, h) {
    const ctx = u.ctx, { left, top, width, height } = u.bbox;
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, width, height);
    ctx.clip();
    ctx.fillStyle = heatColour(0);
    ctx.fillRect(left, top, width, height);
    const cols = h.cols, edges = h.edges;
    for (let c = 0; c < cols.length; c++) {
      const s = cols[c].step;
      const half = cols.length > 1 ? (c > 0 ? (s - cols[c - 1].step) / 2 : (cols[1].step - s) / 2) : 0.5;
      const x0 = c > 0 ? (cols[c - 1].step + s) / 2 : Math.max(Math.min(0, s), s - half);
      const x1 = c < cols.length - 1 ? (s + cols[c + 1].step) / 2 : s + half;
      const px0 = u.valToPos(x0, "x", true), px1 = u.valToPos(x1, "x", true);
      if (px1 < left || px0 > left + width || !(cols[c].peak > 0)) continue;
      for (let r = 0; r < HEAT_ROWS; r++) {
        const d = cols[c].dens[r];
        if (!(d > 0)) continue;
        const t = Math.log10(d / cols[c].peak) / HEAT_DECADES + 1;
        if (t <= 0) continue;
        const py0 = u.valToPos(edges[r], "y", true), py1 = u.valToPos(edges[r + 1], "y", true);
        ctx.fillStyle = heatColour(t);
        ctx.fillRect(px0, py1, px1 - px0 + 1, py0 - py1 + 1);
      }
    }
    ctx.restore();
  }

  function drawHeatmaps() {
    const box = document.getElementById("heatmaps");
    const keep = new Set();
    for (const id of state.selected) {
      const key = "heat:" + id;
      keep.add(key);
      const h = heatCache(id);
      if (!h.cols.length) continue;
      let el = box.querySelector(`[data-run="${CSS.escape(id)}"]`);
      if (!el) {
        el = document.createElement("div");
        el.className = "chart";
        el.dataset.run = id;
        box.append(el);
      }
      const x = h.cols.map((c) => c.step);
      const l1 = new Map(goodSnaps(id).map((s) => [s.step, s.eigenvalues ? num(s.eigenvalues[0]) : null]));
      const data = [x, x.map((s) => l1.get(s) ?? null)];
      // Each column reaches halfway to its neighbours; the x range holds
      // the outer halves too. h is read at draw time: it grows in place.
      const span = () => {
        const c = h.cols, n = c.length, first = c[0].step, last = c[n - 1].step;
        const a = n > 1 ? (c[1].step - first) / 2 : 0.5, b = n > 1 ? (last - c[n - 2].step) / 2 : 0.5;
        return [Math.max(Math.min(0, first), first - a), last + b];
      };
      plot(key, el, [line(name(id, "λ1"), "#ffffff", { width: 1.25, dash: [4, 3] })], data, {
        opts: {
          height: 220,
          scales: { x: { time: false, range: span }, y: { distr: 4, asinh: h.c, range: () => [h.lo, h.hi] } },
          axes: [{ label: multi() ? `step (${id})` : "step" },
            { size: 64, label: "eigenvalue λ", splits: asinhSplits, values: (u, vs) => vs.map((v) => (v == null ? "" : fmt(v))) }],
          hooks: { drawClear: [(u) => drawHeat(u, h)] },
        },
        sigExtra: (multi() ? "multi " : "one ") + h.c,
      });
    }
    for (const [key, c] of state.charts) {
      if (key.startsWith("heat:") && !keep.has(key)) {
        c.u.destroy();
        c.el.remove();
        state.charts.delete(key);
      }
    }
  }

  function drawBlocks() {
    const series = [], tables = [];
    for (const id of state.selected) {
      const snaps = goodSnaps(id).filter((s) => s.trace && s.trace.blocks);
      const names = [];
      for (const s of snaps) for (const b of s.trace.blocks) if (!names.includes(b.name)) names.push(b.name);
      const t = [snaps.map((s) => s.step)];
      names.forEach((bn, i) => {
        t.push(snaps.map((s) => num((s.trace.blocks.find((b) => b.name === bn) || {}).value)));
        series.push(line(name(id, bn), palette[(i + (multi() ? state.selected.indexOf(id) * 3 : 0)) % palette.length]));
      });
      if (names.length) tables.push(t);
    }
    if (!tables.length) return;
    const data = join(tables), y = autoY(data.slice(1), "block trace");
    plot("blocks", document.getElementById("chart-blocks"), series, data, {
      opts: { scales: { x: { time: false }, y: y.scale }, axes: [{ label: "step" }, y.axis] },
      sigExtra: y.sig,
    });
  }

  function drawLoss() {
    const series = [], tables = [];
    for (const id of state.selected) {
      const snaps = state.data.get(id)?.snaps || [];
      const c = multi() ? runColour(id) : palette[0];
      tables.push([snaps.map((s) => s.step), snaps.map((s) => num(s.loss)), snaps.map((s) => num(s.learning_rate))]);
      series.push(line(name(id, "loss"), c, { scale: "loss", width: 2 }),
        line(name(id, "learning rate"), multi() ? c : palette[3], { scale: "lr", dash: [6, 4] }));
    }
    const data = join(tables);
    const y = autoY(data.filter((_, i) => i > 0 && series[i - 1].scale === "loss"), "loss", "loss");
    plot("loss", document.getElementById("chart-loss"), series, data, {
      sigExtra: y.sig,
      opts: {
        scales: { x: { time: false }, loss: y.scale, lr: {} },
        axes: [{ label: "step" }, y.axis,
          { scale: "lr", side: 1, size: 64, label: "learning rate", grid: { show: false } }],
      },
    });
  }

  function drawCost() {
    const series = [], tables = [];
    for (const id of state.selected) {
      const snaps = state.data.get(id)?.snaps || [];
      const c = multi() ? runColour(id) : palette[0];
      tables.push([snaps.map((s) => s.step), snaps.map((s) => num(s.hvps)), snaps.map((s) => num(s.seconds)),
        snaps.map((s) => (s.failure ? num(s.hvps) ?? 0 : null))]);
      series.push(line(name(id, "HVPs"), c, { scale: "hvps", width: 2 }),
        line(name(id, "seconds"), multi() ? c : palette[3], { scale: "s", dash: [6, 4] }),
        line(name(id, "failed"), "#c0392b", {
          scale: "hvps", paths: () => null, spanGaps: false,
          points: { show: true, size: 9, stroke: "#c0392b", fill: "#c0392b" },
        }));
    }
    plot("cost", document.getElementById("chart-cost"), series, join(tables), {
      opts: {
        scales: { x: { time: false }, hvps: { range: (u, lo, hi) => [0, Math.max(1, hi * 1.1)] }, s: { range: (u, lo, hi) => [0, hi > 0 ? hi * 1.1 : 1] } },
        axes: [{ label: "step" }, { scale: "hvps", size: 64, label: "HVPs" },
          { scale: "s", side: 1, size: 64, label: "seconds", grid: { show: false } }],
      },
    });
  }

  // ---- tables -------------------------------------------------------------

  function cell(tr, field, value, text) {
    const td = document.createElement("td");
    td.dataset.field = field;
    if (value !== undefined) td.dataset.value = typeof value === "string" ? value : JSON.stringify(value);
    td.textContent = text;
    tr.append(td);
    return td;
  }

  function drawLatest() {
    const body = document.querySelector("#latest tbody");
    body.replaceChildren();
    for (const id of state.selected) {
      const snaps = state.data.get(id)?.snaps || [];
      if (!snaps.length) continue;
      const s = snaps[snaps.length - 1];
      const tr = document.createElement("tr");
      tr.dataset.run = id;
      if (s.failure) tr.className = "failed";
      const first = cell(tr, "run", id, id);
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = runColour(id);
      first.prepend(sw);
      cell(tr, "step", s.step, String(s.step));
      cell(tr, "kind", isLight(s) ? "light" : "full", isLight(s) ? "light" : "full");
      cell(tr, "reason", s.reason || "", s.reason || "—");
      cell(tr, "loss", num(s.loss), fmt(s.loss));
      cell(tr, "learning_rate", num(s.learning_rate), fmt(s.learning_rate));
      const ev = (s.eigenvalues || []).map(num);
      cell(tr, "eigenvalues", ev, s.failure ? `failed: ${s.failure}` : ev.map(fmt).join(", ") || "—");
      cell(tr, "sharpness_threshold", num(s.sharpness_threshold), fmt(s.sharpness_threshold));
      cell(tr, "lambda_min", s.lambda_min ? num(s.lambda_min.value) : null, s.lambda_min ? fmt(s.lambda_min.value) : "—");
      cell(tr, "sharpness_ratio", num(s.sharpness_ratio), fmt(s.sharpness_ratio));
      // The trace is a full-only estimate: after a light probe, show the
      // latest full probe's and say its step.
      let ts = s.failure ? null : s;
      for (let i = snaps.length - 1; !ts?.trace && i >= 0; i--) if (!snaps[i].failure && snaps[i].trace) ts = snaps[i];
      const tv = ts && ts.trace;
      const tc = cell(tr, "trace", tv ? num(tv.value) : null,
        tv ? `${fmt(tv.value)} ± ${fmt(tv.stderr)}` + (ts.step !== s.step ? ` (step ${ts.step})` : "") : "—");
      tc.dataset.stderr = JSON.stringify(tv ? num(tv.stderr) : null);
      tc.dataset.step = JSON.stringify(tv ? ts.step : null);
      cell(tr, "hvps", num(s.hvps), fmt(s.hvps));
      cell(tr, "seconds", num(s.seconds), fmt(s.seconds));
      const nl = snaps.filter(isLight).length;
      cell(tr, "probes", snaps.length, nl ? `${snaps.length} (${nl} light)` : String(snaps.length));
      const nf = snaps.filter((x) => x.failure).length;
      cell(tr, "failures", nf, String(nf));
      body.append(tr);
    }
  }

  function drawFailures() {
    const body = document.querySelector("#failures tbody");
    body.replaceChildren();
    const rows = [];
    for (const id of state.selected) {
      for (const s of state.data.get(id)?.snaps || []) if (s.failure) rows.push({ id, s });
    }
    rows.sort((a, b) => b.s.step - a.s.step);
    for (const { id, s } of rows.slice(0, 50)) {
      const tr = document.createElement("tr");
      cell(tr, "run", id, id);
      cell(tr, "step", s.step, String(s.step));
      cell(tr, "failure", s.failure, s.failure);
      cell(tr, "detail", undefined, s.detail || "").className = "detail";
      body.append(tr);
    }
    document.getElementById("no-failures").hidden = rows.length > 0;
  }

  function draw() {
    if (state.drawn === state.version) return;
    state.drawn = state.version;
    drawLatest();
    drawLambda();
    drawTrace();
    drawESD();
    drawHeatmaps();
    drawBlocks();
    drawLoss();
    drawCost();
    drawFailures();
  }

  window.addEventListener("resize", () => {
    for (const c of state.charts.values()) c.u.setSize({ width: Math.max(240, c.el.clientWidth), height: c.u.height });
  });

  // A read-only window onto what is drawn, for tests and the curious:
  // hessmon.chart("lambda") gives a chart's series labels and data.
  window.hessmon = Object.freeze({
    chart(key) {
      const c = state.charts.get(key);
      return c ? { labels: c.u.series.map((s) => s.label), data: c.u.data, steps: c.u.hessmonSteps || null } : null;
    },
    charts: () => [...state.charts.keys()],
    selected: () => [...state.selected],
  });

  poll();
})();
