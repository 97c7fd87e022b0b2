package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/trainer"
)

// ScaleResult is the JSON of `hessmon bench scale`.
type ScaleResult struct {
	Rows []ScaleRow `json:"rows"`
}

// ScaleInTemp measures one row as Scale does, with its store in a
// temporary directory removed afterwards.
func ScaleInTemp(ctx context.Context, net *trainer.Network, train *data.Dataset, opt ScaleOptions) (ScaleRow, error) {
	dir, err := os.MkdirTemp("", "hessmon-scale")
	if err != nil {
		return ScaleRow{}, err
	}
	defer os.RemoveAll(dir)
	opt.Dir = dir
	return Scale(ctx, net, train, opt)
}

// ScaleChild re-executes this binary for one size and precision, with the
// parent's flags, and reads the row it prints.
func ScaleChild(ctx context.Context, hidden, precision string, args []string) (ScaleRow, error) {
	exe, err := os.Executable()
	if err != nil {
		return ScaleRow{}, err
	}
	cargs := append([]string{"bench", "scale"}, WithoutFlag(args, "json")...)
	cargs = append(cargs, "--hidden", hidden, "--child-precision", precision)
	cmd := exec.CommandContext(ctx, exe, cargs...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return ScaleRow{}, fmt.Errorf("bench scale --hidden %s --precision %s: %w: %s", hidden, precision, err, strings.TrimSpace(stderr.String()))
	}
	var row ScaleRow
	if err := json.Unmarshal(out.Bytes(), &row); err != nil {
		return row, fmt.Errorf("bench scale --hidden %s: reading the row: %w", hidden, err)
	}
	return row, nil
}

// WithoutFlag drops --name and -name (a bool flag) from args.
func WithoutFlag(args []string, name string) []string {
	var out []string
	for _, a := range args {
		if a == "--"+name || a == "-"+name || strings.HasPrefix(a, "--"+name+"=") {
			continue
		}
		out = append(out, a)
	}
	return out
}

// WriteText prints r as one line of `hessmon bench scale` without --json.
func (r ScaleRow) WriteText(w io.Writer) error {
	if r.Error != "" {
		_, err := fmt.Fprintf(w, "%9d %-8s %s\n", r.Params, r.Precision, r.Error)
		return err
	}
	_, err := fmt.Fprintf(w, "%9d %-8s HVP %8.2f ms (%.2f× grad)  full %7.3f s (HVP share %.2f)  light %7.3f s  peak RSS %6.0f MB (%.0f B/param)  store %.2f MB/probe\n",
		r.Params, r.Precision, r.HVPms, r.HVPOverGrad, r.FullProbeSeconds, r.HVPShare, r.LightProbeSeconds,
		float64(r.PeakRSSBytes)/1e6, float64(r.PeakRSSBytes)/float64(r.Params), float64(r.StoreBytesPerProbe)/1e6)
	return err
}
