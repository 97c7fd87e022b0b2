package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// screen is a minimal terminal: it applies \r, \n (as CR LF, as a tty's
// output processing does), ESC[2K and ESC[K, and overwrites characters in
// place, which is all the progress bar and the console send.
type screen struct {
	mu       sync.Mutex
	lines    [][]rune
	row, col int
}

func (s *screen) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := []rune(string(p))
	for i := 0; i < len(rs); i++ {
		for len(s.lines) <= s.row {
			s.lines = append(s.lines, nil)
		}
		line := &s.lines[s.row]
		switch r := rs[i]; {
		case r == '\r':
			s.col = 0
		case r == '\n':
			s.row++
			s.col = 0
		case r == 0x1b && i+2 < len(rs) && rs[i+1] == '[':
			j := i + 2
			for j < len(rs) && (rs[j] >= '0' && rs[j] <= '9') {
				j++
			}
			if j < len(rs) && rs[j] == 'K' {
				if string(rs[i+2:j]) == "2" {
					*line = nil
				} else if s.col < len(*line) {
					*line = (*line)[:s.col]
				}
			}
			i = j
		default:
			for len(*line) <= s.col {
				*line = append(*line, ' ')
			}
			(*line)[s.col] = r
			s.col++
		}
	}
	return len(p), nil
}

func (s *screen) text() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, l := range s.lines {
		out = append(out, strings.TrimRight(string(l), " "))
	}
	for len(out) > 0 && out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	return out
}

var reBar = regexp.MustCompile(`training\s+\d+% \|`)

// checkScreen fails if a log line shares a line with the bar, or if the bar
// is anywhere but on the last line.
func checkScreen(t *testing.T, lines []string, logs int, barShown bool) {
	t.Helper()
	var got int
	for i, l := range lines {
		bar := reBar.MatchString(l)
		if strings.Contains(l, "msg=probe") {
			got++
			if bar {
				t.Errorf("line %d glues a log line to the bar: %q", i, l)
			}
		}
		if bar && i != len(lines)-1 {
			t.Errorf("line %d holds the bar but is not the last: %q", i, l)
		}
		if !bar && !strings.Contains(l, "msg=probe") && l != "" {
			t.Errorf("line %d is neither a log line nor the bar: %q", i, l)
		}
	}
	if got != logs {
		t.Errorf("%d log lines on the screen, want %d:\n%s", got, logs, strings.Join(lines, "\n"))
	}
	if barShown && (len(lines) == 0 || !reBar.MatchString(lines[len(lines)-1])) {
		t.Errorf("the bar is not on the last line:\n%s", strings.Join(lines, "\n"))
	}
}

// TestConsoleKeepsBarBelowLogs logs from another goroutine while the bar
// advances, as the async probe does, on a terminal (ESC[2K) and on a plain
// writer (spaces), and checks what a terminal would show.
func TestConsoleKeepsBarBelowLogs(t *testing.T) {
	for _, tty := range []bool{true, false} {
		t.Run(fmt.Sprintf("tty=%v", tty), func(t *testing.T) {
			var scr screen
			c := &console{out: &scr, tty: tty, cols: 120}
			bar := c.progressBar("on", 1000)
			log := slog.New(slog.NewTextHandler(c.logs(), nil))
			const logs = 40
			var wg sync.WaitGroup
			wg.Go(func() {
				for i := range logs {
					log.Info("probe", "step", i, "lambda1", 1.5*float64(i))
				}
			})
			for i := range int64(999) {
				_ = bar.Set64(i + 1)
			}
			wg.Wait()
			_ = bar.Add(0)
			checkScreen(t, scr.text(), logs, true)
			_ = bar.Finish() // clears the bar
			checkScreen(t, scr.text(), logs, false)
		})
	}
}

// TestConsoleWithoutBar passes log lines through untouched.
func TestConsoleWithoutBar(t *testing.T) {
	var buf bytes.Buffer
	c := newConsole(&buf)
	if bar := c.progressBar("auto", 10); bar != nil {
		t.Fatal("a bar on a writer that is no terminal")
	}
	if bar := c.progressBar("off", 10); bar != nil {
		t.Fatal("a bar with --progress off")
	}
	_, _ = c.logs().Write([]byte("level=INFO msg=probe\n"))
	if buf.String() != "level=INFO msg=probe\n" {
		t.Errorf("got %q", buf.String())
	}
}
