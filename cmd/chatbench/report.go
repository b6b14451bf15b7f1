package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"
)

// common are the flags every subcommand has.
type common struct {
	jsonFile   string
	cpuProfile string
	verbose    bool
	stderr     io.Writer
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.jsonFile, "json", "", "also write the report to this file as JSON")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the measured phase to this file (go tool pprof)")
	fs.BoolVar(&c.verbose, "v", false, "log progress to stderr")
}

// logf logs progress when -v is set.
func (c *common) logf(format string, args ...any) {
	if c.verbose {
		fmt.Fprintf(c.stderr, "chatbench: "+format+"\n", args...)
	}
}

// logger is the logger handed to chatd and bizapi: warnings and errors to stderr with -v, else nothing.
func (c *common) logger() *slog.Logger {
	if c.verbose {
		return slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.DiscardHandler)
}

// startProfile starts the CPU profile if one was asked for; the returned function stops it.
func (c *common) startProfile() (func(), error) {
	if c.cpuProfile == "" {
		return func() {}, nil
	}
	f, err := os.Create(c.cpuProfile)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// newFlagSet returns a flag set whose -h prints text (the subcommand's explanation) and the flags.
// newFlagSet returns a subcommand's flag set, with text as its -h and the flags every subcommand
// takes (common) registered.
func newFlagSet(name, text string, stderr io.Writer) (*common, *flag.FlagSet) {
	c := &common{stderr: stderr}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, text)
		fmt.Fprintln(stderr, "\nFlags:")
		fs.PrintDefaults()
	}
	c.register(fs)
	return c, fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// kv is one named value of a report.
type kv struct {
	Name  string `json:"name"`
	Value any    `json:"value"`
	Unit  string `json:"unit,omitempty"`
}

// machine describes where a run ran.
type machine struct {
	Cores     int    `json:"cores"`
	CPU       string `json:"cpu,omitempty"`
	MemoryGiB string `json:"memory_gib"`
	Kernel    string `json:"kernel"`
	NoFile    string `json:"nofile_limit,omitempty"`
}

// report is what a run prints and writes as JSON.
type report struct {
	Command string    `json:"command"`
	Args    []string  `json:"args"`
	Date    time.Time `json:"date"`
	Machine machine   `json:"machine"`
	Go      string    `json:"go"`
	Version string    `json:"version,omitempty"` // git describe of the source tree, when known
	Params  []kv      `json:"params"`
	Results []kv      `json:"results"`
	Series  any       `json:"series,omitempty"` // per-second samples (conns ramp)
	Notes   []string  `json:"notes,omitempty"`
}

func newReport(command string, args []string) *report {
	return &report{Command: command, Args: args, Date: time.Now().UTC(), Machine: machineInfo(),
		Go: runtime.Version(), Version: gitDescribe()}
}

func (r *report) param(name string, v any, unit string) {
	r.Params = append(r.Params, kv{name, v, unit})
}
func (r *report) result(name string, v any, unit string) {
	r.Results = append(r.Results, kv{name, v, unit})
}
func (r *report) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// get returns the value of the result named name, or nil.
func (r *report) get(name string) any {
	for _, x := range r.Results {
		if x.Name == name {
			return x.Value
		}
	}
	return nil
}

// print writes the report for people.
func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "chatbench %s — %s\n", r.Command, r.Date.Format("2006-01-02 15:04:05 UTC"))
	m := r.Machine
	fmt.Fprintf(w, "machine: %d cores (%s), %s GiB memory, Linux %s, open files limit %s\n", m.Cores, m.CPU, m.MemoryGiB, m.Kernel, m.NoFile)
	v := r.Version
	if v == "" {
		v = "unknown"
	}
	fmt.Fprintf(w, "software: %s, source %s\n", r.Go, v)
	fmt.Fprintf(w, "command: chatbench %s %s\n", r.Command, strings.Join(r.Args, " "))
	fmt.Fprintln(w, "parameters:")
	for _, p := range r.Params {
		fmt.Fprintf(w, "  %-34s %s\n", p.Name, fmtValue(p.Value, p.Unit))
	}
	fmt.Fprintln(w, "results:")
	for _, p := range r.Results {
		fmt.Fprintf(w, "  %-34s %s\n", p.Name, fmtValue(p.Value, p.Unit))
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

func fmtValue(v any, unit string) string {
	var s string
	switch x := v.(type) {
	case float64:
		switch {
		case x == float64(int64(x)) && x < 1e15 && x > -1e15:
			s = strconv.FormatInt(int64(x), 10)
		case x >= 100 || x <= -100:
			s = strconv.FormatFloat(x, 'f', 0, 64)
		case x >= 10 || x <= -10:
			s = strconv.FormatFloat(x, 'f', 1, 64)
		default:
			s = strconv.FormatFloat(x, 'f', 3, 64)
		}
	default:
		s = fmt.Sprint(v)
	}
	if unit != "" {
		s += " " + unit
	}
	return s
}

// finish prints r and writes it as JSON when asked.
func (r *report) finish(c *common, stdout io.Writer) error {
	r.print(stdout)
	if c.jsonFile == "" {
		return nil
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(c.jsonFile, append(b, '\n'), 0o644)
}

func machineInfo() machine {
	m := machine{Cores: runtime.NumCPU(), Kernel: "unknown", MemoryGiB: "unknown"}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if kb := procKB("/proc/meminfo", "MemTotal:"); kb > 0 {
		m.MemoryGiB = strconv.FormatFloat(float64(kb)/(1<<20), 'f', 1, 64)
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if soft, hard, err := nofile(); err == nil {
		m.NoFile = fmt.Sprintf("%d (hard %d)", soft, hard)
	}
	return m
}

// gitDescribe returns "git describe --always --dirty" of the working directory's repository, or the
// VCS revision the binary was built from, or "".
func gitDescribe() string {
	out, err := exec.Command("git", "describe", "--always", "--dirty", "--tags").Output()
	if err == nil {
		return strings.TrimSpace(string(out))
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if len(rev) > 7 {
		rev = rev[:7]
	}
	if rev == "" {
		return ""
	}
	return rev + dirty + " (build info)"
}

// procKB reads a "Name: N kB" line of a /proc file; 0 if missing.
func procKB(path, field string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, field) {
			fields := strings.Fields(line[len(field):])
			if len(fields) > 0 {
				n, _ := strconv.ParseInt(fields[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// round rounds x to d decimals (for reports).
func round(x float64, d int) float64 {
	p := 1.0
	for range d {
		p *= 10
	}
	if x < 0 {
		return -float64(int64(-x*p+0.5)) / p
	}
	return float64(int64(x*p+0.5)) / p
}
