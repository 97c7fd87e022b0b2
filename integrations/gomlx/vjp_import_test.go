package gomlx

import (
	"os"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/graph"
)

// atImport holds GoMLX's matmul VJPs as TestMain finds them: after every
// package of the test binary, this one included, has been initialised.
var atImport = map[string]graph.VJP{}

func TestMain(m *testing.M) {
	atImport["Dot"] = graph.VJPRegistration[graph.NodeTypeDot]
	atImport["DotGeneral"] = graph.VJPRegistration[graph.NodeTypeDotGeneral]
	// The tests build HVPs at batch sizes where v0.26.0's own VJPs take
	// seconds and gigabytes: opt in, as a program's main would.
	UseFastVJPs()
	os.Exit(m.Run())
}

// funcName is the name of the function f, e.g.
// "github.com/gomlx/gomlx/pkg/core/graph.vjpForSingleOutput.func1".
func funcName(f graph.VJP) string {
	return runtime.FuncForPC(reflect.ValueOf(f).Pointer()).Name()
}

// TestImportChangesNoGlobal: importing the package leaves GoMLX's global
// VJP registry as GoMLX made it; only UseFastVJPs changes it, and its
// restore function puts GoMLX's own rules back.
func TestImportChangesNoGlobal(t *testing.T) {
	const gomlxGraph = "github.com/gomlx/gomlx/pkg/core/graph."
	for name, f := range atImport {
		if f == nil || !strings.HasPrefix(funcName(f), gomlxGraph) {
			t.Errorf("after import, VJPRegistration[%s] is %q, not GoMLX's own rule", name, funcName(f))
		}
	}
	graph.VJPRegistration[graph.NodeTypeDot] = atImport["Dot"]
	graph.VJPRegistration[graph.NodeTypeDotGeneral] = atImport["DotGeneral"]
	restore := UseFastVJPs()
	if got := funcName(graph.VJPRegistration[graph.NodeTypeDot]); got != funcName(fastDotVJP) {
		t.Errorf("after UseFastVJPs, the Dot VJP is %q, want %q", got, funcName(fastDotVJP))
	}
	if got := funcName(graph.VJPRegistration[graph.NodeTypeDotGeneral]); got != funcName(fastDotGeneralVJP) {
		t.Errorf("after UseFastVJPs, the DotGeneral VJP is %q, want %q", got, funcName(fastDotGeneralVJP))
	}
	restore()
	if got, want := funcName(graph.VJPRegistration[graph.NodeTypeDot]), funcName(atImport["Dot"]); got != want {
		t.Errorf("after restore, the Dot VJP is %q, want GoMLX's %q", got, want)
	}
	UseFastVJPs() // as TestMain left it, for the other tests
}
