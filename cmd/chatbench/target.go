package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server/node"
	"github.com/chatd-dev/chatd/server/store"
)

// targetFlags choose the chatd a benchmark runs against.
type targetFlags struct {
	spawn        bool
	spawnProcess bool
	server       string
	key          string
	chatdData    string
	chatdPID     int
	metricsURL   string
	data         string
}

func (t *targetFlags) register(fs *flag.FlagSet, withProcess bool) {
	fs.BoolVar(&t.spawn, "spawn", false, "start chatd (dev mode, loopback, data in a temporary folder) in this process; the default when --server is not given")
	if withProcess {
		fs.BoolVar(&t.spawnProcess, "spawn-process", false,
			"start chatd (dev mode, loopback) as a child process (this binary's hidden serve-node subcommand: node.Start as chatd serve --dev does), so that its RSS, heap, goroutines and CPU are the server's alone")
		fs.IntVar(&t.chatdPID, "chatd-pid", 0, "with --server: the chatd process, to read its RSS (/proc/PID/status) and CPU (/proc/PID/stat)")
		fs.StringVar(&t.metricsURL, "metrics", "", "with --server: chatd's metrics URL (e.g. http://127.0.0.1:9480/metrics) for its Go heap, stacks and goroutines")
	}
	fs.StringVar(&t.server, "server", "", "a running chatd's raw chat listener, HOST:PORT (instead of --spawn)")
	fs.StringVar(&t.key, "key", "", "with --server: the server's static public key, base64 (chatd keys prints it)")
	fs.StringVar(&t.chatdData, "chatd-data", "", "with --server: chatd's data folder; the benchmark's device keys are registered directly in its database (DATA/chatd.db, SQLite in WAL mode, safe next to the running server)")
	fs.StringVar(&t.data, "data", "", "data folder of a spawned chatd (default: a temporary folder, removed afterwards)")
}

func (t *targetFlags) describe(r *report) {
	switch {
	case t.server != "":
		r.param("server", t.server+" (external chatd)", "")
	case t.spawnProcess:
		r.param("server", "spawned chatd child process (dev mode, loopback)", "")
	default:
		r.param("server", "spawned chatd in this process (dev mode, loopback)", "")
	}
}

// target is a chatd under test.
type target struct {
	addr      string // raw chat listener
	serverKey [32]byte
	node      *node.Node // in-process chatd, or nil
	pid       int        // chatd's process when it is another one, else 0
	metrics   string     // chatd's /metrics URL, or ""
	control   string     // the child's memstats URL (spawn-process), or ""
	dataDir   string     // chatd's data folder (for registration), "" when registering through node
	cleanup   []func()
}

func (t *target) close() {
	for i := len(t.cleanup) - 1; i >= 0; i-- {
		t.cleanup[i]()
	}
}

// startTarget starts or connects to chatd as tf says.
func startTarget(ctx context.Context, tf *targetFlags, c *common) (*target, error) {
	if tf.server != "" {
		if tf.key == "" {
			return nil, errors.New("--server needs --key (the server's static public key, base64)")
		}
		k, err := base64.StdEncoding.DecodeString(tf.key)
		if err != nil || len(k) != 32 {
			return nil, fmt.Errorf("--key: want 32 bytes in base64, got %q", tf.key)
		}
		if tf.chatdData == "" {
			return nil, errors.New("--server needs --chatd-data (the server's data folder, where the benchmark registers its device keys)")
		}
		t := &target{addr: tf.server, pid: tf.chatdPID, metrics: tf.metricsURL, dataDir: tf.chatdData}
		copy(t.serverKey[:], k)
		return t, nil
	}
	t := &target{}
	dir := tf.data
	if dir == "" {
		tmp, err := os.MkdirTemp("", "chatbench-chatd-")
		if err != nil {
			return nil, err
		}
		dir = tmp
		t.cleanup = append(t.cleanup, func() { os.RemoveAll(tmp) })
	}
	if tf.spawnProcess {
		if err := t.startChild(ctx, dir, c); err != nil {
			t.close()
			return nil, err
		}
		return t, nil
	}
	n, err := node.Start(node.Config{DataDir: dir, Dev: true, ChatListen: "127.0.0.1:0", HTTPSListen: "127.0.0.1:0",
		AdminListen: "off", Logger: c.logger()})
	if err != nil {
		t.close()
		return nil, err
	}
	t.node, t.addr, t.serverKey = n, n.ChatAddr.String(), n.ServerKey
	t.cleanup = append(t.cleanup, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		n.Shutdown(sctx)
	})
	return t, nil
}

// childInfo is the first line the serve-node child prints.
type childInfo struct {
	Chat, Admin, Control string
	ServerKey            []byte
}

// startChild runs "chatbench serve-node" on dir and waits for its addresses.
func (t *target) startChild(ctx context.Context, dir string, c *common) error {
	var ci childInfo
	pid, stop, err := startChild(ctx, c, &ci, "serve-node", "--data", dir)
	if err != nil {
		return err
	}
	t.cleanup = append(t.cleanup, stop)
	if len(ci.ServerKey) != 32 {
		return fmt.Errorf("the serve-node child process: %w", errNoServerKey)
	}
	t.addr, t.pid, t.metrics, t.control, t.dataDir = ci.Chat, pid, "http://"+ci.Admin+"/metrics", "http://"+ci.Control+"/memstats", dir
	copy(t.serverKey[:], ci.ServerKey)
	return nil
}

// cmdServeNode is the child of --spawn-process: chatd in dev mode on loopback (node.Start, as
// "chatd serve --dev"), its metrics on an admin port, and a control port whose /memstats runs two
// GCs and answers with runtime.MemStats and the goroutine count. It prints one JSON line with the
// addresses and runs until SIGTERM.
func cmdServeNode(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, fs := newFlagSet("serve-node", "Usage: chatbench serve-node --data DIR (internal: the child of conns --spawn-process)\n", stderr)
	dir := fs.String("data", "", "data folder")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	raiseNoFile(1 << 20)
	n, err := node.Start(node.Config{DataDir: *dir, Dev: true, ChatListen: "127.0.0.1:0", HTTPSListen: "127.0.0.1:0",
		AdminListen: "127.0.0.1:0", Logger: c.logger()})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	var prof childProfiler
	mux.HandleFunc("/memstats", func(w http.ResponseWriter, r *http.Request) {
		// ?cpuprofile=FILE starts a CPU profile into FILE, ?cpuprofile=stop ends it.
		if f := r.URL.Query().Get("cpuprofile"); f != "" {
			prof.serveSet(w, f)
			return
		}
		json.NewEncoder(w).Encode(readMem())
	})
	err = runChild(ctx, stdout, n, mux, &prof, func(control string) any {
		return childInfo{Chat: n.ChatAddr.String(), Admin: n.AdminAddr.String(), Control: control, ServerKey: n.ServerKey[:]}
	})
	sctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	return errors.Join(err, n.Shutdown(sctx))
}

// memReading is a process's Go memory after two GCs.
type memReading struct {
	HeapInuse, StackInuse, Sys, HeapObjects uint64
	Goroutines                              int
	RSS                                     int64
	OK                                      bool
	AfterGC                                 bool
}

// readMem reads this process's Go memory after two full GCs.
func readMem() memReading {
	runtime.GC()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memReading{HeapInuse: ms.HeapInuse, StackInuse: ms.StackInuse, Sys: ms.Sys, HeapObjects: ms.HeapObjects,
		Goroutines: runtime.NumGoroutine(), RSS: procRSS(0), OK: true, AfterGC: true}
}

// serverMem reads the server's memory: its memstats endpoint (spawn-process), or its /metrics (not
// after a GC) and /proc/PID/status. OK is false when nothing could be read.
func (t *target) serverMem() memReading {
	if t.control != "" {
		var m memReading
		if err := getJSON(t.control, &m); err == nil {
			return m
		}
	}
	var m memReading
	if t.metrics != "" {
		if vals, err := scrape(t.metrics); err == nil {
			m.HeapInuse = uint64(vals["go_memstats_heap_inuse_bytes"])
			m.StackInuse = uint64(vals["go_memstats_stack_inuse_bytes"])
			m.Sys = uint64(vals["go_memstats_sys_bytes"])
			m.Goroutines = int(vals["go_goroutines"])
			m.RSS = int64(vals["process_resident_memory_bytes"])
			m.OK = true
		}
	}
	if t.pid > 0 {
		if rss := procRSS(t.pid); rss > 0 {
			m.RSS, m.OK = rss, true
		}
	}
	return m
}

// serverConnections is chatd_connections summed over its labels, from /metrics; -1 if unknown.
func (t *target) serverConnections() int {
	if t.metrics == "" {
		if t.node != nil {
			return t.node.Server.Sessions()
		}
		return -1
	}
	vals, err := scrape(t.metrics)
	if err != nil {
		return -1
	}
	return int(vals["chatd_connections"])
}

func getJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// scrape reads a Prometheus text exposition; values of one name with several label sets are summed.
func scrape(url string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	vals := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		name := line[:i]
		if j := strings.IndexByte(name, '{'); j >= 0 {
			name = name[:j]
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		vals[name] += v
	}
	return vals, sc.Err()
}

// registerDevices generates n device keys and registers them as accounts phonePrefix+index (index
// zero-padded to fill 12 digits): through the in-process node's store, or by opening chatd's
// database in its data folder. Keys are generated on every core; registrations run concurrently so
// that the store's group commit batches them.
func (t *target) registerDevices(ctx context.Context, n int, phonePrefix string) ([]noisesock.Keypair, []string, error) {
	keys := make([]noisesock.Keypair, n)
	phones := make([]string, n)
	width := 12 - len(phonePrefix)
	var st *store.Store
	if t.node != nil {
		st = t.node.Store
	} else {
		var err error
		if st, err = store.Open(filepath.Join(t.dataDir, node.DBFile)); err != nil {
			return nil, nil, fmt.Errorf("opening chatd's database to register devices: %w", err)
		}
		defer st.Close()
	}
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range max(64, runtime.NumCPU()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				k, err := pki.GenerateStaticKey()
				if err == nil {
					phones[i] = phonePrefix + fmt.Sprintf("%0*d", width, i)
					keys[i] = k
					_, err = st.RegisterDevice(ctx, store.Account{Phone: phones[i], DevicePub: k.Public[:]})
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("registering device %d: %w", i, err)
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return keys, phones, firstErr
}
