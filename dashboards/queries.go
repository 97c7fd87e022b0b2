package dashboards

import (
	"encoding/json"
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
)

// Query is one target of one panel of a dashboard, as Grafana reads it from
// the JSON. Tests use it to run every panel's PromQL against a real
// Prometheus and to check names, legends and refIds.
type Query struct {
	Dashboard  string // dashboard uid
	PanelID    uint32
	Panel      string // panel title
	PanelType  string // "timeseries", "stat", "heatmap", …
	RefID      string
	Expr       string
	Legend     string
	Format     string // "time_series" unless set (e.g. "heatmap")
	Instant    bool
	Datasource common.DataSourceRef // the query's own, else the panel's
}

// Variable is one templating variable of a dashboard.
type Variable struct {
	Name       string
	Type       string // "query", "datasource", "interval", …
	Query      string // label_values(...) for query variables, plugin id for datasource ones
	Datasource common.DataSourceRef
	Multi      bool
	IncludeAll bool
	Current    string // the saved current value, if any
}

// decode reads dashboard JSON with the SDK's (lenient) decoder. The strict
// decoder, UnmarshalJSONStrict, rejects valid dashboards in SDK v0.0.22.
func decode(dashJSON []byte) (*dashboard.Dashboard, error) {
	// Registers the panel and query types so that targets decode into their
	// concrete types; idempotent and safe for concurrent use.
	plugins.RegisterDefaultPlugins()
	var d dashboard.Dashboard
	if err := json.Unmarshal(dashJSON, &d); err != nil {
		return nil, fmt.Errorf("dashboards: decode: %w", err)
	}
	return &d, nil
}

// Queries lists every target of every panel (rows' nested panels included)
// of the dashboard JSON, in panel order. Only Prometheus targets are
// expected: any other kind is an error.
func Queries(dashJSON []byte) ([]Query, error) {
	d, err := decode(dashJSON)
	if err != nil {
		return nil, err
	}
	uid := ""
	if d.Uid != nil {
		uid = *d.Uid
	}
	var panels []dashboard.Panel
	for _, p := range d.Panels {
		switch {
		case p.Panel != nil:
			panels = append(panels, *p.Panel)
		case p.RowPanel != nil:
			panels = append(panels, p.RowPanel.Panels...)
		}
	}
	var out []Query
	for _, p := range panels {
		for i, t := range p.Targets {
			pq, ok := t.(*prometheus.Dataquery)
			if !ok {
				return nil, fmt.Errorf("dashboards: %s panel %q target %d: not a Prometheus query (%T)", uid, deref(p.Title), i, t)
			}
			q := Query{
				Dashboard: uid,
				Panel:     deref(p.Title),
				PanelType: p.Type,
				RefID:     deref(pq.RefId),
				Expr:      pq.Expr,
				Legend:    deref(pq.LegendFormat),
				Format:    string(prometheus.PromQueryFormatTimeSeries),
				Instant:   pq.Instant != nil && *pq.Instant,
			}
			if p.Id != nil {
				q.PanelID = *p.Id
			}
			if pq.Format != nil {
				q.Format = string(*pq.Format)
			}
			switch {
			case pq.Datasource != nil:
				q.Datasource = *pq.Datasource
			case p.Datasource != nil:
				q.Datasource = *p.Datasource
			}
			out = append(out, q)
		}
	}
	return out, nil
}

// Variables lists the dashboard's templating variables in order.
func Variables(dashJSON []byte) ([]Variable, error) {
	d, err := decode(dashJSON)
	if err != nil {
		return nil, err
	}
	out := make([]Variable, 0, len(d.Templating.List))
	for _, v := range d.Templating.List {
		vv := Variable{
			Name:       v.Name,
			Type:       string(v.Type),
			Multi:      v.Multi != nil && *v.Multi,
			IncludeAll: v.IncludeAll != nil && *v.IncludeAll,
		}
		if v.Query != nil {
			switch {
			case v.Query.String != nil:
				vv.Query = *v.Query.String
			case v.Query.Map != nil:
				// Newer Prometheus variable editors save {"query": "...", ...}.
				if s, ok := v.Query.Map["query"].(string); ok {
					vv.Query = s
				}
			}
		}
		if v.Datasource != nil {
			vv.Datasource = *v.Datasource
		}
		if v.Current != nil && v.Current.Value.String != nil {
			vv.Current = *v.Current.Value.String
		}
		out = append(out, vv)
	}
	return out, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
