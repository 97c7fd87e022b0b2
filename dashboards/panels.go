package dashboards

import (
	"fmt"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/heatmap"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"

	"github.com/hessmon/hessmon/monitor/metrics"
)

// Variable names shared by both dashboards.
const (
	varDatasource = "datasource"
	varRun        = "run"
)

// panelIDs hands out panel ids in build order, so ids are explicit and
// stable (Grafana would otherwise assign them at load time).
type panelIDs struct{ last uint32 }

func (p *panelIDs) next() uint32 {
	p.last++
	return p.last
}

// datasource is the reference every panel and query uses: the Prometheus
// datasource chosen by the $datasource variable.
func datasource() common.DataSourceRef {
	return common.DataSourceRef{
		Type: cog.ToPtr("prometheus"),
		Uid:  cog.ToPtr("${" + varDatasource + "}"),
	}
}

// sel renders a selector of metric for the run variable: `m{run="$run"}`, or
// `m{run=~"$run"}` when multi is set (Grafana expands a multi-value variable
// into a regex alternation). Extra matchers are appended verbatim.
func sel(metric string, multi bool, extra ...string) string {
	op := "="
	if multi {
		op = "=~"
	}
	m := append([]string{fmt.Sprintf(`%s%s"$%s"`, metrics.LabelRun, op, varRun)}, extra...)
	return metric + "{" + strings.Join(m, ", ") + "}"
}

// query builds one Prometheus target with an explicit refId and legend.
func query(refID, expr, legend string) *prometheus.DataqueryBuilder {
	return prometheus.NewDataqueryBuilder().
		Datasource(datasource()).
		EditorMode(prometheus.QueryEditorModeCode).
		RefId(refID).
		Expr(expr).
		LegendFormat(legend).
		Range()
}

// refID returns the conventional Grafana refId for the i-th query: A, B, …
func refID(i int) string { return string(rune('A' + i)) }

// target is an expression with its legend, before it gets a refId.
type target struct{ expr, legend string }

func legendList() *common.VizLegendOptionsBuilder {
	return common.NewVizLegendOptionsBuilder().
		ShowLegend(true).
		DisplayMode(common.LegendDisplayModeList).
		Placement(common.LegendPlacementBottom).
		Calcs([]string{})
}

func legendTable(calcs ...string) *common.VizLegendOptionsBuilder {
	return common.NewVizLegendOptionsBuilder().
		ShowLegend(true).
		DisplayMode(common.LegendDisplayModeTable).
		Placement(common.LegendPlacementBottom).
		Calcs(calcs)
}

func tooltipMulti() *common.VizTooltipOptionsBuilder {
	return common.NewVizTooltipOptionsBuilder().
		Mode(common.TooltipDisplayModeMulti).
		Sort(common.SortOrderDescending)
}

// timeSeries is a line panel with explicit id, legend and tooltip.
func timeSeries(ids *panelIDs, title, desc, unit string, w, h uint32, targets ...target) *timeseries.PanelBuilder {
	p := timeseries.NewPanelBuilder().
		Id(ids.next()).
		Title(title).
		Description(desc).
		Datasource(datasource()).
		Unit(unit).
		Span(w).
		Height(h).
		LineWidth(1).
		FillOpacity(0).
		ShowPoints(common.VisibilityModeAuto).
		SpanNulls(common.BoolOrFloat64{Bool: cog.ToPtr(true)}).
		Legend(legendTable("lastNotNull", "max")).
		Tooltip(tooltipMulti())
	for i, t := range targets {
		p.WithTarget(query(refID(i), t.expr, t.legend))
	}
	return p
}

// statPanel shows the last value of one expression, coloured by thresholds.
func statPanel(ids *panelIDs, title, desc, unit string, w, h uint32, expr, legend string, thresholds []dashboard.Threshold) *stat.PanelBuilder {
	return stat.NewPanelBuilder().
		Id(ids.next()).
		Title(title).
		Description(desc).
		Datasource(datasource()).
		Unit(unit).
		Span(w).
		Height(h).
		Decimals(3).
		ColorMode(common.BigValueColorModeBackground).
		GraphMode(common.BigValueGraphModeArea).
		ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}).Values(false)).
		Thresholds(dashboard.NewThresholdsConfigBuilder().Mode(dashboard.ThresholdsModeAbsolute).Steps(thresholds)).
		ColorScheme(dashboard.NewFieldColorBuilder().Mode(dashboard.FieldColorModeIdThresholds)).
		WithTarget(query(refID(0), expr, legend))
}

// threshold is a colour step starting at value; nil means "from -∞".
func threshold(value *float64, color string) dashboard.Threshold {
	return dashboard.Threshold{Value: value, Color: color}
}

// cumulativeHeatmap draws a Prometheus `le` bucket family without
// re-bucketing: the query returns cumulative series per `le`, Grafana's
// "heatmap" format de-accumulates them, and calculate=false keeps the bins.
func cumulativeHeatmap(ids *panelIDs, title, desc string, w, h uint32, expr string) *heatmap.PanelBuilder {
	return heatmap.NewPanelBuilder().
		Id(ids.next()).
		Title(title).
		Description(desc).
		Datasource(datasource()).
		Span(w).
		Height(h).
		Calculate(false).
		RowsFrame(heatmap.NewRowsHeatmapOptionsBuilder().Layout(common.HeatmapCellLayoutLe).Value("density")).
		Color(heatmap.NewHeatmapColorOptionsBuilder().
			Mode(heatmap.HeatmapColorModeScheme).
			Scheme("Spectral").
			Scale(heatmap.HeatmapColorScaleExponential).
			Exponent(0.5).
			Steps(64).
			Fill("dark-orange")).
		YAxis(heatmap.NewYAxisConfigBuilder().AxisLabel("eigenvalue (bin upper edge)").Decimals(4)).
		CellValues(heatmap.NewCellValuesBuilder().Unit("percentunit").Decimals(3)).
		ShowValue(common.VisibilityModeNever).
		ShowLegend().
		Tooltip(heatmap.NewHeatmapTooltipBuilder().Mode(common.TooltipDisplayModeSingle).YHistogram(true).ShowColorScale(true)).
		WithTarget(query(refID(0), expr, "{{"+metrics.LabelLE+"}}").
			Format(prometheus.PromQueryFormatHeatmap))
}

// Field-override helpers (Grafana "custom.*" property ids).

func prop(id string, value any) dashboard.DynamicConfigValue {
	return dashboard.DynamicConfigValue{Id: id, Value: value}
}

func fixedColor(c string) dashboard.DynamicConfigValue {
	return prop("color", map[string]any{"mode": "fixed", "fixedColor": c})
}

func dashed() dashboard.DynamicConfigValue {
	return prop("custom.lineStyle", map[string]any{"fill": "dash", "dash": []int{10, 10}})
}

func dotted() dashboard.DynamicConfigValue {
	return prop("custom.lineStyle", map[string]any{"fill": "dot", "dash": []int{0, 10}})
}

func hiddenFromLegend() dashboard.DynamicConfigValue {
	return prop("custom.hideFrom", map[string]any{"legend": true, "tooltip": false, "viz": false})
}

// runVariable lists the runs seen by Prometheus (label values of hessian_step).
func runVariable(multi bool) *dashboard.QueryVariableBuilder {
	q := fmt.Sprintf("label_values(%s, %s)", metrics.Step, metrics.LabelRun)
	v := dashboard.NewQueryVariableBuilder(varRun).
		Label("Run").
		Datasource(datasource()).
		Query(dashboard.StringOrMap{String: cog.ToPtr(q)}).
		Definition(q).
		Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
		Sort(dashboard.VariableSortAlphabeticalAsc).
		Multi(multi).
		IncludeAll(multi)
	if multi {
		v.AllValue(".*")
	}
	return v
}

// datasourceVariable picks a Prometheus datasource, defaulting to the one
// that deploy/grafana/provisioning creates.
func datasourceVariable() *dashboard.DatasourceVariableBuilder {
	return dashboard.NewDatasourceVariableBuilder(varDatasource).
		Label("Prometheus").
		Type("prometheus").
		Current(dashboard.VariableOption{
			Selected: cog.ToPtr(true),
			Text:     dashboard.StringOrArrayOfString{String: cog.ToPtr("Prometheus")},
			Value:    dashboard.StringOrArrayOfString{String: cog.ToPtr(DatasourceUID)},
		})
}

// newDashboard sets the fields both dashboards share.
func newDashboard(uid, title, desc string) *dashboard.DashboardBuilder {
	return dashboard.NewDashboardBuilder(title).
		Uid(uid).
		Description(desc).
		Tags([]string{"hessmon", "hessian"}).
		Editable().
		Refresh("10s").
		Time("now-30m", "now").
		Timezone(common.TimeZoneBrowser).
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		WithVariable(datasourceVariable())
}
