package store

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// helperEnv names the database the TestHelperWriter child writes to;
// helperModeEnv=pipeline makes it pipeline its saves (SaveMessageAsync, many
// in flight) instead of calling SaveMessage one at a time.
const (
	helperEnv     = "CHATD_STORE_HELPER_DB"
	helperModeEnv = "CHATD_STORE_HELPER_MODE"
)

// TestHelperWriter is not a test on its own: TestSIGKILLLosesNothing runs the
// test binary again with only this test selected and helperEnv set. The child
// saves messages in a loop and prints each ID after SaveMessage returned, i.e.
// after the store acknowledged it.
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
	ctx := context.Background()
	if os.Getenv(helperModeEnv) == "pipeline" {
		helperPipeline(s)
	}
	for i := 0; i < 1_000_000; i++ { // bounded in case the parent never kills us
		m, _, err := s.SaveMessage(ctx, Message{
			From: "15550000001", To: "15550000002", ClientID: "crash-" + strconv.Itoa(i),
			ContentVersion: 1, Content: []byte("payload " + strconv.Itoa(i)),
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper save:", err)
			os.Exit(2)
		}
		if _, err := fmt.Fprintln(os.Stdout, m.ID); err != nil {
			os.Exit(0) // parent went away
		}
	}
	os.Exit(0)
}

// helperPipeline saves through a Pipeline with up to 256 saves in flight and
// prints each ID once its callback has run (after its commit), in order.
func helperPipeline(s *Store) {
	p := s.NewPipeline()
	acked := make(chan int64, 256) // the slots: one per save in flight
	slots := make(chan struct{}, 256)
	go func() {
		for i := 0; i < 1_000_000; i++ {
			slots <- struct{}{}
			err := p.SaveMessageAsync(context.Background(), Message{
				From: "15550000001", To: "15550000002", ClientID: "crash-" + strconv.Itoa(i),
				ContentVersion: 1, Content: []byte("payload " + strconv.Itoa(i)),
			}, TrustRecipient, func(m Message, _ bool, err error) {
				if err != nil {
					fmt.Fprintln(os.Stderr, "helper save:", err)
					os.Exit(2)
				}
				acked <- m.ID // never blocks: at most 256 in flight
			})
			if err != nil {
				fmt.Fprintln(os.Stderr, "helper submit:", err)
				os.Exit(2)
			}
		}
	}()
	for id := range acked {
		<-slots
		if _, err := fmt.Fprintln(os.Stdout, id); err != nil {
			os.Exit(0) // parent went away
		}
	}
}

func TestSIGKILLLosesNothing(t *testing.T) {
	testSIGKILL(t, "")
}

// TestSIGKILLLosesNothingPipelined: the same with pipelined saves, whose
// callbacks run after their batch's commit.
func TestSIGKILLLosesNothingPipelined(t *testing.T) {
	testSIGKILL(t, "pipeline")
}

func testSIGKILL(t *testing.T, mode string) {
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	path := filepath.Join(t.TempDir(), "crash.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperWriter$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+path, helperModeEnv+"="+mode)
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

	want := 300
	if mode == "pipeline" {
		want = 3000 // several batches' worth
	}
	var acked []int64
	sc := bufio.NewScanner(out)
	for len(acked) < want && sc.Scan() {
		id, err := strconv.ParseInt(sc.Text(), 10, 64)
		if err != nil {
			t.Logf("child printed %q", sc.Text())
			continue
		}
		acked = append(acked, id)
	}
	if len(acked) < want {
		t.Fatalf("child printed %d ids before exiting (scan err %v); stderr:\n%s", len(acked), sc.Err(), stderr.String())
	}
	// Kill while the child is still writing: it does not stop between saves.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed = true
	werr := cmd.Wait()
	if cmd.ProcessState.Success() {
		t.Fatalf("child exited normally (%v) before being killed; stderr:\n%s", werr, stderr.String())
	}

	s, _ := openAt(t, path)
	ctx := context.Background()
	var ok string
	if err := s.r.QueryRow(`PRAGMA integrity_check`).Scan(&ok); err != nil || ok != "ok" {
		t.Fatalf("integrity_check = %q, %v", ok, err)
	}
	queued := map[int64]bool{}
	var after int64
	for {
		items, err := s.Pending(ctx, "15550000002", after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(items) == 0 {
			break
		}
		for _, it := range items {
			queued[it.Message.ID] = true
			after = it.Seq
		}
	}
	for i, id := range acked {
		m, err := s.Message(ctx, id)
		if err != nil {
			t.Fatalf("acknowledged message %d (#%d of %d) lost after SIGKILL: %v", id, i, len(acked), err)
		}
		if m.ClientID != "crash-"+strconv.Itoa(i) || string(m.Content) != "payload "+strconv.Itoa(i) {
			t.Fatalf("message %d = %+v, want client id crash-%d", id, m, i)
		}
		if !queued[id] {
			t.Fatalf("acknowledged message %d has no delivery item after SIGKILL", id)
		}
	}
	_, msgs, _, _ := s.Stats(ctx)
	t.Logf("child acknowledged %d messages before SIGKILL; %d are in the reopened store", len(acked), msgs)
	if msgs < int64(len(acked)) {
		t.Fatalf("store has %d messages, fewer than the %d acknowledged", msgs, len(acked))
	}
}
