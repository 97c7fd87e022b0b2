package gomlx

import (
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/ml/layers/activations"

	"github.com/hessmon/hessmon/trainer"
)

// heapSampler records the peak of the Go heap's object bytes while it runs.
// simplego keeps every buffer in the Go heap, so this sees GoMLX's memory.
type heapSampler struct {
	stop chan struct{}
	done sync.WaitGroup
	peak uint64
}

func heapObjects() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// measure runs fn after a GC and returns its wall time and the peak heap
// growth over the post-GC baseline (live data plus garbage not yet
// collected, so an upper bound of the live peak).
func measure(fn func()) (time.Duration, uint64) {
	// Two collections empty sync.Pool (and its victim cache), where simplego
	// recycles buffers, so that the operation allocates what it needs.
	runtime.GC()
	runtime.GC()
	base := heapObjects()
	h := &heapSampler{stop: make(chan struct{}), peak: base}
	h.done.Add(1)
	go func() {
		defer h.done.Done()
		tick := time.NewTicker(200 * time.Microsecond)
		defer tick.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-tick.C:
				h.peak = max(h.peak, heapObjects())
			}
		}
	}()
	start := time.Now()
	fn()
	el := time.Since(start)
	h.peak = max(h.peak, heapObjects())
	close(h.stop)
	h.done.Wait()
	return el, h.peak - base
}

// BenchmarkCost measures, in one run, the adapter's gradient and HVP and
// hessmon's own R-op gradient and HVP on the same MLP 784-128-128-10 tanh
// at batch 1000, and reports HVP ÷ gradient and peak heap per operation:
//
//	go test -run '^$' -bench Cost -benchtime 5x
//
// HESSMON_GOMLX_STOCK=1 adds one HVP with GoMLX v0.26.0's own matmul VJPs
// (seconds and gigabytes).
func BenchmarkCost(b *testing.B) {
	tw := newTwin(b, []int{784, 128, 128, 10}, trainer.Tanh, activations.TypeTanh, 1000)
	n := tw.op.Dim()
	v := randFloats(rand.New(rand.NewPCG(1, 1)), n)
	dst := make([]float64, n)
	// Warm up: compile the graphs, fill simplego's buffer pools.
	_, _ = tw.op.Gradient(dst)
	must(b, tw.op.Apply(dst, v))
	var tG, tH, tRG, tRH time.Duration
	var mG, mH, mRG, mRH uint64
	b.ResetTimer()
	for range b.N {
		el, m := measure(func() { _, _ = tw.op.Gradient(dst) })
		tG, mG = tG+el, max(mG, m)
		el, m = measure(func() { must(b, tw.op.Apply(dst, v)) })
		tH, mH = tH+el, max(mH, m)
		el, m = measure(func() { must(b, tw.exact.Gradient(dst)) })
		tRG, mRG = tRG+el, max(mRG, m)
		el, m = measure(func() { must(b, tw.exact.Apply(dst, v)) })
		tRH, mRH = tRH+el, max(mRH, m)
	}
	b.StopTimer()
	per := func(d time.Duration) float64 { return float64(d.Milliseconds()) / float64(b.N) }
	const mb = 1 << 20
	b.ReportMetric(per(tG), "gomlx-grad-ms")
	b.ReportMetric(per(tH), "gomlx-hvp-ms")
	b.ReportMetric(float64(tH)/float64(tG), "gomlx-hvp/grad")
	b.ReportMetric(float64(mG)/mb, "gomlx-grad-peakMB")
	b.ReportMetric(float64(mH)/mb, "gomlx-hvp-peakMB")
	b.ReportMetric(float64(mH)/float64(mG), "gomlx-hvp/grad-mem")
	b.ReportMetric(per(tRG), "rop-grad-ms")
	b.ReportMetric(per(tRH), "rop-hvp-ms")
	b.ReportMetric(float64(tRH)/float64(tRG), "rop-hvp/grad")
	b.ReportMetric(float64(mRH)/mb, "rop-hvp-peakMB")
	b.ReportMetric(float64(tH)/float64(tRH), "gomlx-hvp/rop-hvp")
	b.ReportMetric(0, "ns/op")

	if os.Getenv("HESSMON_GOMLX_STOCK") == "1" {
		graph.VJPRegistration[graph.NodeTypeDot] = stockDotVJP
		graph.VJPRegistration[graph.NodeTypeDotGeneral] = stockDotGeneralVJP
		defer UseFastVJPs()
		stock := newTwin(b, []int{784, 128, 128, 10}, trainer.Tanh, activations.TypeTanh, 1000)
		must(b, stock.op.Apply(dst, v)) // compile
		el, m := measure(func() { must(b, stock.op.Apply(dst, v)) })
		elG, mG2 := measure(func() { _, _ = stock.op.Gradient(dst) })
		b.ReportMetric(float64(el.Milliseconds()), "stock-hvp-ms")
		b.ReportMetric(float64(m)/mb, "stock-hvp-peakMB")
		b.ReportMetric(float64(elG.Milliseconds()), "stock-grad-ms")
		b.ReportMetric(float64(mG2)/mb, "stock-grad-peakMB")
	}
}
