package store

import (
	"regexp"
	"testing"
)

func TestNewRunID(t *testing.T) {
	form := regexp.MustCompile(`^\d{8}-\d{6}-[0-9a-f]{6}$`)
	a, b := NewRunID(), NewRunID()
	if !form.MatchString(a) || !form.MatchString(b) {
		t.Errorf("ids %q, %q: want YYYYMMDD-HHMMSS-xxxxxx", a, b)
	}
	if a == b {
		t.Errorf("two ids are both %q", a)
	}
	if err := validRunID(a); err != nil {
		t.Errorf("the store refuses its own id %q: %v", a, err)
	}
}
