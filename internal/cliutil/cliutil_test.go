package cliutil

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testProgram(got *[]string) Program {
	return Program{
		Name: "prog", Version: "1.2", Usage: "Usage: prog COMMAND\n",
		Commands: map[string]Command{
			"ok": func(args []string, stdout, _ io.Writer) error {
				*got = args
				return nil
			},
			"fail": func([]string, io.Writer, io.Writer) error { return errors.New("it broke") },
			"flags": func(args []string, _, stderr io.Writer) error {
				fs := flag.NewFlagSet("flags", flag.ContinueOnError)
				fs.SetOutput(stderr)
				return fs.Parse(args)
			},
		},
	}
}

func TestProgramRun(t *testing.T) {
	tests := []struct {
		args         []string
		code         int
		stdout, errs string // substrings; "" means empty
	}{
		{nil, 2, "", "Usage: prog"},
		{[]string{"ok", "a", "b"}, 0, "", ""},
		{[]string{"fail"}, 1, "", "prog: it broke\n"},
		{[]string{"flags", "-h"}, 0, "", "Usage of flags"},
		{[]string{"flags", "--nope"}, 1, "", "prog: flag provided but not defined"},
		{[]string{"version"}, 0, "prog 1.2\n", ""},
		{[]string{"--version"}, 0, "prog 1.2\n", ""},
		{[]string{"help"}, 0, "Usage: prog", ""},
		{[]string{"-h"}, 0, "Usage: prog", ""},
		{[]string{"--help"}, 0, "Usage: prog", ""},
		{[]string{"help", "flags"}, 0, "", "Usage of flags"},
		{[]string{"help", "help"}, 0, "Usage: prog", ""},
		{[]string{"-h", "--help"}, 0, "Usage: prog", ""},
		{[]string{"help", "frobnicate"}, 2, "", `prog: unknown command "frobnicate"`},
		{[]string{"frobnicate"}, 2, "", "prog: unknown command \"frobnicate\"\n\nUsage: prog"},
	}
	for _, tt := range tests {
		var got []string
		var stdout, stderr bytes.Buffer
		code := testProgram(&got).Run(tt.args, &stdout, &stderr)
		if code != tt.code || !contains(stdout.String(), tt.stdout) || !contains(stderr.String(), tt.errs) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want %d, %q, %q", tt.args, code, stdout.String(), stderr.String(), tt.code, tt.stdout, tt.errs)
		}
		if tt.args != nil && tt.args[0] == "ok" && strings.Join(got, " ") != "a b" {
			t.Errorf("ok got args %q", got)
		}
	}
}

func contains(s, sub string) bool {
	if sub == "" {
		return s == ""
	}
	return strings.Contains(s, sub)
}

type testConfig struct {
	Name string `toml:"name"`
	Port int    `toml:"port"`
}

func TestParseWithConfig(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.toml")
	if err := os.WriteFile(file, []byte("name = \"file\"\nport = 7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	newFlags := func(c *testConfig) *flag.FlagSet {
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.String("config", "", "")
		fs.StringVar(&c.Name, "name", "default", "")
		fs.IntVar(&c.Port, "port", 1, "")
		return fs
	}

	var c testConfig
	if err := ParseWithConfig(newFlags(&c), []string{"--config", file, "--name", "flag"}, &c); err != nil {
		t.Fatal(err)
	}
	if c != (testConfig{Name: "flag", Port: 7}) {
		t.Fatalf("got %+v; want the file's port and the flag's name", c)
	}

	c = testConfig{}
	if err := ParseWithConfig(newFlags(&c), nil, &c); err != nil || c != (testConfig{Name: "default", Port: 1}) {
		t.Fatalf("no config file: %+v, %v", c, err)
	}
	if err := ParseWithConfig(newFlags(&c), []string{"--port", "2", "extra"}, &c); err == nil || err.Error() != `serve: unexpected argument "extra"` {
		t.Fatalf("extra argument: %v", err)
	}
	if err := ParseWithConfig(newFlags(&c), []string{"-h"}, &c); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v, want flag.ErrHelp", err)
	}
	os.WriteFile(file, []byte("nmae = \"typo\"\n"), 0o600)
	if err := ParseWithConfig(newFlags(&c), []string{"--config", file}, &c); err == nil || !strings.Contains(err.Error(), "nmae") {
		t.Fatalf("unknown setting: %v", err)
	}
}

type fakeDaemon struct {
	done        chan struct{}
	err         error
	shutdownErr error
	stopped     bool
}

func (d *fakeDaemon) Done() <-chan struct{} { return d.done }
func (d *fakeDaemon) Err() error {
	select {
	case <-d.done:
		return d.err
	default:
		return nil
	}
}
func (d *fakeDaemon) Shutdown(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		return errors.New("no deadline")
	}
	d.stopped = true
	return d.shutdownErr
}

func TestWaitAndShutdown(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	// A signal: a clean stop.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d := &fakeDaemon{done: make(chan struct{})}
	if err := WaitAndShutdown(ctx, d, log, "a part failed"); err != nil || !d.stopped {
		t.Fatalf("after a signal: %v, stopped %v", err, d.stopped)
	}
	if !strings.Contains(logs.String(), "shutting down") {
		t.Fatalf("logs %q", logs.String())
	}

	// A failure: it is logged and returned.
	boom := errors.New("boom")
	d = &fakeDaemon{done: make(chan struct{}), err: boom}
	close(d.done)
	if err := WaitAndShutdown(context.Background(), d, log, "a part failed"); err != boom || !d.stopped {
		t.Fatalf("after a failure: %v, stopped %v", err, d.stopped)
	}
	if !strings.Contains(logs.String(), `msg="a part failed" err=boom`) {
		t.Fatalf("logs %q", logs.String())
	}

	// A failed shutdown.
	d = &fakeDaemon{done: make(chan struct{}), shutdownErr: errors.New("stuck")}
	if err := WaitAndShutdown(ctx, d, log, ""); err == nil || err.Error() != "shutdown: stuck" {
		t.Fatalf("failed shutdown: %v", err)
	}
}
