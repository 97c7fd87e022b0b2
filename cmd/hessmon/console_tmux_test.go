package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tmux runs tmux on the test's own server socket.
type tmux struct {
	t      *testing.T
	socket string
}

func (x tmux) run(args ...string) string {
	x.t.Helper()
	cmd := exec.Command("tmux", append([]string{"-L", x.socket, "-f", "/dev/null"}, args...)...)
	cmd.Env = append(os.Environ(), "TERM=xterm-256color")
	out, err := cmd.CombinedOutput()
	if err != nil {
		x.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// pane returns the visible lines of the pane, wrapped lines joined (-J),
// so a log line glued to the bar shows as one line however wide it is.
func (x tmux) pane() []string {
	x.t.Helper()
	var lines []string
	for _, l := range strings.Split(x.run("capture-pane", "-p", "-J", "-t", "hm"), "\n") {
		lines = append(lines, strings.TrimRight(l, " "))
	}
	for len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}

// TestTerminalBarStaysBelowLogLines types `hessmon train` into a shell in a
// real terminal (tmux), lets it probe several times with the progress bar
// running, and reads the screen: the bar must be alone on the last line and
// every probe line above it; Ctrl-C then stops training cleanly.
func TestTerminalBarStaysBelowLogLines(t *testing.T) {
	if testing.Short() {
		t.Skip("terminal test: builds hessmon and trains in tmux (skipped with -short)")
	}
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("tmux not on PATH: apt-get install tmux (the CI script installs it)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "hessmon")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	x := tmux{t: t, socket: fmt.Sprintf("hessmon-test-%d", os.Getpid())}
	x.run("new-session", "-d", "-s", "hm", "-x", "110", "-y", "45", "sh")
	t.Cleanup(func() {
		_ = exec.Command("tmux", "-L", x.socket, "kill-server").Run()
	})
	cmdline := fmt.Sprintf("%s train --data synthetic --steps 1000000 --every 20 --probe-batch 64 --top 2 --esd-steps 8 --db %s --listen off",
		bin, filepath.Join(dir, "t.db"))
	x.run("send-keys", "-t", "hm", cmdline, "Enter")

	var lines []string
	probes := 0
	deadline := time.Now().Add(120 * time.Second)
	for probes < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than 3 probe lines in time; the screen:\n%s", strings.Join(lines, "\n"))
		}
		time.Sleep(300 * time.Millisecond)
		lines = x.pane()
		probes = 0
		for _, l := range lines {
			if strings.Contains(l, "msg=probe") {
				probes++
			}
		}
	}
	// Wait until the bar has been redrawn after the last log line.
	for !reBar.MatchString(lines[len(lines)-1]) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		lines = x.pane()
	}
	screenLines := lines
	var bars int
	for i, l := range lines {
		bar := reBar.MatchString(l)
		if bar {
			bars++
		}
		if bar && strings.Contains(l, "msg=") {
			t.Errorf("line %d glues a log line to the bar: %q", i, l)
		}
		if bar && i != len(lines)-1 {
			t.Errorf("line %d holds the bar but is not the last line: %q", i, l)
		}
	}
	if bars != 1 || !reBar.MatchString(lines[len(lines)-1]) {
		t.Errorf("want the bar once, on the last line; %d bar lines", bars)
	}

	x.run("send-keys", "-t", "hm", "C-c")
	for !strings.Contains(strings.Join(lines, "\n"), "interrupted at step") && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		lines = x.pane()
	}
	for i, l := range lines {
		if reBar.MatchString(l) && i == len(lines)-1 {
			t.Errorf("the bar is still drawn after Ctrl-C: %q", l)
		}
		if strings.Contains(l, "interrupted at step") && reBar.MatchString(l) {
			t.Errorf("the summary is glued to the bar: %q", l)
		}
	}
	if !strings.Contains(strings.Join(lines, "\n"), "interrupted at step") {
		t.Errorf("no clean stop after Ctrl-C; the screen:\n%s", strings.Join(lines, "\n"))
	}
	if t.Failed() {
		t.Logf("the screen while training:\n%s", strings.Join(screenLines, "\n"))
	}
}
