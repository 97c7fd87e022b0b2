package trainer

import (
	"testing"
)

func TestStandardChecks(t *testing.T) {
	cases, err := StandardChecks(1)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			r, err := CheckDerivatives(c.Net, c.Batch, CrossEntropy{}, c.Mode, 3, 7)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s params=%d hvp=%.2e grad=%.2e sym=%.2e", c.Name, r.Params, r.HVPRelErr, r.GradRelErr, r.SymmetryRelErr)
			if r.HVPRelErr > 1e-6 || r.GradRelErr > 1e-6 || r.SymmetryRelErr > 1e-10 {
				t.Errorf("derivative check failed: %+v", r)
			}
		})
	}
}
