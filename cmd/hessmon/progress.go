package main

import (
	"bytes"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// console shares a terminal between the log lines and the progress bar. The
// bar redraws its line with a carriage return and no newline; a log line
// written in the middle of that would be glued to the bar. Through a
// console, every log line clears the bar's line, is written there, and the
// bar is drawn again below it: the bar stays on the last line, the probe
// lines scroll above it.
type console struct {
	mu    sync.Mutex
	out   io.Writer
	tty   bool
	cols  int    // terminal width, 0 if unknown
	frame []byte // the bar's line as last drawn, after its last \r
}

func newConsole(w io.Writer) *console {
	c := &console{out: w, tty: isTerminal(w)}
	if f, ok := w.(*os.File); ok && c.tty {
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil {
			c.cols = cols
		}
	}
	return c
}

// logs is the writer for the log handler: one Write per record, as
// log/slog's handlers do.
func (c *console) logs() io.Writer { return consoleLogs{c} }

// progressBar returns the training progress bar that --progress asks for
// (auto: on a terminal), drawing through c, or nil.
func (c *console) progressBar(mode string, steps int64) *progressbar.ProgressBar {
	if mode != "on" && (mode != "auto" || !c.tty) {
		return nil
	}
	// "training 100% |…| (3000/3000) [12s:0s]" must fit on one line, or the
	// terminal wraps it and a clear-line no longer clears all of it.
	width := 40
	if c.cols > 0 {
		width = max(10, min(width, c.cols-45))
	}
	return progressbar.NewOptions64(steps, progressbar.OptionSetWriter(consoleBar{c}), progressbar.OptionSetDescription("training"),
		progressbar.OptionSetWidth(width), progressbar.OptionShowCount(), progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionClearOnFinish())
}

// consoleBar is the writer the progress bar draws with.
type consoleBar struct{ c *console }

func (b consoleBar) Write(p []byte) (int, error) {
	c := b.c
	c.mu.Lock()
	defer c.mu.Unlock()
	// Track what is on the bar's line: everything after the last \r or \n.
	rest := p
	if i := bytes.LastIndexAny(rest, "\r\n"); i >= 0 {
		c.frame = c.frame[:0]
		rest = rest[i+1:]
	}
	c.frame = append(c.frame, rest...)
	return c.out.Write(p)
}

// consoleLogs is the writer the log lines go through.
type consoleLogs struct{ c *console }

func (l consoleLogs) Write(p []byte) (int, error) {
	c := l.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(bytes.TrimSpace(c.frame)) == 0 {
		return c.out.Write(p)
	}
	var buf bytes.Buffer
	if c.tty {
		buf.WriteString("\r\x1b[2K") // back to the line's start, erase it
	} else {
		buf.WriteString("\r" + strings.Repeat(" ", len(c.frame)) + "\r")
	}
	buf.Write(p)
	if !bytes.HasSuffix(p, []byte("\n")) {
		buf.WriteByte('\n')
	}
	buf.WriteByte('\r')
	buf.Write(c.frame)
	if _, err := c.out.Write(buf.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}
