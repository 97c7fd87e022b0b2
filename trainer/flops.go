package trainer

// gemmLayer is implemented by the layers whose work is GEMMs.
type gemmLayer interface {
	// gemmShape returns rows per sample and the GEMM's inner and outer sizes.
	gemmShape() (pix, in, out int)
}

func (l *Linear) gemmShape() (int, int, int) { return l.pix, l.In, l.Out }
func (l *Conv2D) gemmShape() (int, int, int) { return l.outS.H * l.outS.W, l.kk, l.Out }

func walk(layers []Named, fn func(Layer)) {
	for _, nl := range layers {
		fn(nl.Layer)
		switch l := nl.Layer.(type) {
		case *Sequential:
			walk(l.Layers, fn)
		case *Residual:
			walk(l.Body.Layers, fn)
			if l.Shortcut != nil && !l.NoSkip {
				walk(l.Shortcut.Layers, fn)
			}
		}
	}
}

// GEMMFlops models the floating-point work of the matrix products for a
// batch of n samples: one gradient (forward + backward) and one HVP with a
// cached forward pass (R-forward + R-backward). The first layer needs no
// input gradient and has R{x} = 0, which saves three of its products. It is
// a model, used to report GFLOP/s; elementwise work is not counted.
func (net *Network) GEMMFlops(n int) (grad, hvp float64) {
	first := true
	walk(net.root.Layers, func(l Layer) {
		g, ok := l.(gemmLayer)
		if !ok {
			return
		}
		pix, in, out := g.gemmShape()
		unit := 2 * float64(n*pix) * float64(in) * float64(out)
		if first {
			grad += 2 * unit // forward, weight gradient
			hvp += 2 * unit  // x·Vᵀ, R{gy}ᵀ·x
			first = false
			return
		}
		grad += 3 * unit // forward, weight gradient, input gradient
		hvp += 7 * unit  // 2 R-forward, 2 R{gW}, 3 for gx and R{gx}
	})
	return grad, hvp
}
