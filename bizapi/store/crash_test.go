package store

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// helperEnv names the database the TestHelperWriter child writes to.
const helperEnv = "BIZAPI_STORE_HELPER_DB"

// crashWriters is the number of goroutines the child writes with, so that the kill lands in the
// middle of group commits with many callers waiting.
const crashWriters = 16

// TestHelperWriter is not a test on its own: TestSIGKILLLosesNothing runs the test binary again
// with only this test selected and helperEnv set. The child adds messages from crashWriters
// goroutines and prints each id after AddMessage returned nil, i.e. after the store acknowledged
// it, exactly like POST /v1/messages answers 201.
func TestHelperWriter(t *testing.T) {
	path := os.Getenv(helperEnv)
	if path == "" {
		t.Skip("helper process for TestSIGKILLLosesNothing")
	}
	s, err := Open(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper open:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range crashWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1_000_000; i++ { // bounded in case the parent never kills us
				m := crashMessage(g, i)
				if err := s.AddMessage(bg0, m); err != nil {
					fmt.Fprintln(os.Stderr, "helper add:", err)
					os.Exit(2)
				}
				mu.Lock()
				_, err := fmt.Fprintln(os.Stdout, m.ID)
				mu.Unlock()
				if err != nil {
					os.Exit(0) // parent went away
				}
			}
		}()
	}
	wg.Wait()
	os.Exit(0)
}

func crashMessage(g, i int) Message {
	return Message{ID: fmt.Sprintf("gBEG-%02d-%07d", g, i), To: "15550000002", Body: fmt.Sprintf("payload %d/%d", g, i)}
}

func TestSIGKILLLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	path := filepath.Join(t.TempDir(), "crash.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperWriter$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})

	const want = 3000
	var acked []string
	sc := bufio.NewScanner(out)
	for len(acked) < want && sc.Scan() {
		if id := sc.Text(); strings.HasPrefix(id, "gBEG-") {
			acked = append(acked, id)
		} else {
			t.Logf("child printed %q", id)
		}
	}
	if len(acked) < want {
		t.Fatalf("child printed %d ids before exiting (scan err %v); stderr:\n%s", len(acked), sc.Err(), stderr.String())
	}
	// SIGKILL while the child is still writing: its goroutines never pause.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed = true
	werr := cmd.Wait()
	if cmd.ProcessState.Success() {
		t.Fatalf("child exited normally (%v) before being killed; stderr:\n%s", werr, stderr.String())
	}

	s, _ := openAt(t, path)
	var ok string
	if err := s.r.QueryRow(`PRAGMA integrity_check`).Scan(&ok); err != nil || ok != "ok" {
		t.Fatalf("integrity_check = %q, %v", ok, err)
	}
	unsent := map[string]bool{}
	var after int64
	for {
		ms, err := s.Unsent(bg0, after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) == 0 {
			break
		}
		for _, m := range ms {
			unsent[m.ID] = true
			after = m.Seq
		}
	}
	for i, id := range acked {
		m, err := s.Message(bg0, id)
		if err != nil {
			t.Fatalf("acknowledged message %s (#%d of %d) lost after SIGKILL: %v", id, i, len(acked), err)
		}
		var g, n int
		fmt.Sscanf(id, "gBEG-%d-%d", &g, &n)
		if w := crashMessage(g, n); m.To != w.To || m.Body != w.Body || m.Status != StatusAccepted {
			t.Fatalf("message %s = %+v", id, m)
		}
		if !unsent[id] {
			t.Fatalf("acknowledged message %s is not in Unsent after SIGKILL", id)
		}
	}
	st, _ := s.Stats(bg0)
	t.Logf("child acknowledged %d messages before SIGKILL; %d are in the reopened store", len(acked), st.Messages)
	if st.Messages < int64(len(acked)) {
		t.Fatalf("store has %d messages, fewer than the %d acknowledged", st.Messages, len(acked))
	}
}
