#!/usr/bin/env python3
"""PyTorch reference for `hessmon bench hvp --vs-torch`.

Reads the safetensors file that hessmon exports (the model's float64
weights under their PyTorch names, the batch as `input`/`labels`, the
direction `v` and hessmon's own `hv`), rebuilds the MLP, and times torch's
double-backward Hessian-vector product on the same model, batch and
weights, in float64:

  hvp       autograd.grad(g, params, v, retain_graph=True) on a gradient
            graph built once: the analogue of hessmon's hvp_seconds (whose
            forward pass is cached);
  hvp_full  forward, create_graph backward and the double backward each
            time (the usual double-backward recipe): the analogue of
            hvp_with_forward_seconds;
  functional  torch.autograd.functional.hvp, torch's own HVP API (also a
            fresh forward pass each call);
  grad      forward and backward.

It prints one JSON object with medians and the relative difference between
torch's H·v and hessmon's. Needs only torch (Debian: apt-get install
python3-torch); the safetensors header is parsed here, so the safetensors
package is not needed.

  python3 bench/torch_hvp.py --in /tmp/ref.safetensors --reps 15
"""
import argparse
import json
import struct
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def load_safetensors(path):
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8 : 8 + n])
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    out = {}
    for name, t in header.items():
        if t["dtype"] != "F64":
            raise SystemExit(f"{path}: tensor {name} is {t['dtype']}, want F64")
        a, b = t["data_offsets"]
        x = torch.frombuffer(bytearray(buf[base + a : base + b]), dtype=torch.float64)
        out[name] = x.reshape(t["shape"]) if t["shape"] else x
    return out, meta


def parse_mlp(desc):
    # "mlp 784-128-128-10 tanh"
    parts = desc.split()
    if len(parts) < 3 or parts[0] != "mlp" or (len(parts) > 3 and parts[3] == "bn"):
        raise SystemExit(f"torch_hvp.py reproduces plain MLPs only, got {desc!r}")
    sizes = [int(s) for s in parts[1].split("-")]
    act = {"tanh": torch.tanh, "relu": F.relu, "gelu": F.gelu, "identity": lambda x: x}[parts[2]]
    return sizes, act


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--in", dest="path", required=True, help="safetensors file from hessmon bench hvp --vs-torch")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                    help="precision of torch's HVP (the file holds float64; float32 is what PyHessian users run)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    t, meta = load_safetensors(args.path)
    dtype = getattr(torch, args.dtype)
    t = {k: (x if k in ("labels", "hv") else x.to(dtype)) for k, x in t.items()}
    sizes, act = parse_mlp(meta.get("model", ""))
    layers = len(sizes) - 1
    params = []
    for i in range(1, layers + 1):
        params += [t[f"fc{i}.weight"].clone().requires_grad_(True), t[f"fc{i}.bias"].clone().requires_grad_(True)]
    x, labels = t["input"], t["labels"].long()
    v = t["v"]
    vs, off = [], 0
    for p in params:
        vs.append(v[off : off + p.numel()].view_as(p))
        off += p.numel()

    def loss_fn():
        h = x
        for i in range(layers):
            h = F.linear(h, params[2 * i], params[2 * i + 1])
            if i < layers - 1:
                h = act(h)
        return F.cross_entropy(h, labels)

    def grad():
        return torch.autograd.grad(loss_fn(), params)

    def hvp_full():
        g = torch.autograd.grad(loss_fn(), params, create_graph=True)
        return torch.autograd.grad(g, params, vs)

    def loss_of(*ps):
        h = x
        for i in range(layers):
            h = F.linear(h, ps[2 * i], ps[2 * i + 1])
            if i < layers - 1:
                h = act(h)
        return F.cross_entropy(h, labels)

    def functional():
        return torch.autograd.functional.hvp(loss_of, tuple(p.detach() for p in params), tuple(vs))

    g_graph = torch.autograd.grad(loss_fn(), params, create_graph=True)

    def hvp():
        return torch.autograd.grad(g_graph, params, vs, retain_graph=True)

    def timeit(fn):
        for _ in range(2):
            fn()
        ts = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    res = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": meta.get("model", ""),
        "batch": int(x.shape[0]),
        "reps": args.reps,
        "dtype": args.dtype,
        "grad_seconds": timeit(grad),
        "hvp_seconds": timeit(hvp),
        "hvp_full_seconds": timeit(hvp_full),
        "functional_hvp_seconds": timeit(functional),
    }
    hv = torch.cat([h.reshape(-1) for h in hvp()]).to(torch.float64)
    if "hv" in t:
        ref = t["hv"]
        res["hv_rel_diff"] = float(torch.linalg.norm(hv - ref) / torch.linalg.norm(ref))
    json.dump(res, sys.stdout)
    print()


if __name__ == "__main__":
    main()
