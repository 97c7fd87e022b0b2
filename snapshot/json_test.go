package snapshot

import (
	"encoding/json"
	"math"
	"reflect"
	"testing"
	"time"
)

// TestJSONSnapshot checks that JSONSnapshot shadows every float of
// Snapshot (a NaN anywhere encodes) and otherwise produces the same
// JSON as the snapshot's own tags.
func TestJSONSnapshot(t *testing.T) {
	var s Snapshot
	setFloats(reflect.ValueOf(&s).Elem(), math.NaN())
	b, err := json.Marshal(NewJSONSnapshot(s))
	if err != nil {
		t.Fatalf("a NaN float is not shadowed: %v", err)
	}
	var nanOut map[string]any
	if err := json.Unmarshal(b, &nanOut); err != nil || nanOut["loss"] != nil {
		t.Errorf("NaN loss → %v", nanOut["loss"])
	}

	setFloats(reflect.ValueOf(&s).Elem(), 1.25)
	plain, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	shadowed, err := json.Marshal(NewJSONSnapshot(s))
	if err != nil {
		t.Fatal(err)
	}
	var a, c map[string]any
	if err := json.Unmarshal(plain, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(shadowed, &c); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, c) {
		t.Errorf("JSON differs:\n snapshot %s\n api      %s", plain, shadowed)
	}

	var f Float
	if err := json.Unmarshal([]byte("null"), &f); err != nil || !math.IsNaN(float64(f)) {
		t.Errorf("null → %v, %v", f, err)
	}
}

// setFloats sets every float64 reachable in v to x, allocating pointers and
// two-element slices on the way.
func setFloats(v reflect.Value, x float64) {
	switch v.Kind() {
	case reflect.Float64:
		v.SetFloat(x)
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		setFloats(v.Elem(), x)
	case reflect.Slice:
		if v.Len() == 0 {
			v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		}
		for i := range v.Len() {
			setFloats(v.Index(i), x)
		}
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			return
		}
		for i := range v.NumField() {
			setFloats(v.Field(i), x)
		}
	}
}
