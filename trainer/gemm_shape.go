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
