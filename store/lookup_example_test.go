package store_test

import (
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/store"
)

// A reader that is not told which run to read takes the only one, and is
// told which ids to choose from when there are several.
func ExampleStore_ResolveRun() {
	dir, err := os.MkdirTemp("", "hessmon")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	st, err := store.Open(filepath.Join(dir, "hessmon.db"), store.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	for _, id := range []string{"adam", "sgd"} {
		if err := st.PutRun(snapshot.Run{ID: id}); err != nil {
			log.Fatal(err)
		}
		if err := st.PutSnapshot(snapshot.Snapshot{Run: id, Step: 10}); err != nil {
			log.Fatal(err)
		}
	}
	var amb *store.AmbiguousRunError
	if _, err := st.ResolveRun(""); errors.As(err, &amb) {
		fmt.Println("pick one of", amb.IDs)
	}
	sum, err := st.ResolveRun("sgd")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(sum.ID, "steps:", st.KnownSteps(sum.ID))
	_, err = st.ResolveRun("rmsprop")
	fmt.Println(errors.Is(err, store.ErrUnknownRun))
	// Output:
	// pick one of [adam sgd]
	// sgd steps: 10
	// true
}
