package store

import (
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/internal/testutil"
)

type clock = testutil.Clock

func newClock() *clock {
	return testutil.NewClock(time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC))
}

// openTest opens a fresh store in t.TempDir() with a manual clock.
func openTest(t testing.TB) (*Store, *clock) {
	t.Helper()
	return openAt(t, filepath.Join(t.TempDir(), "chatd.db"))
}

func openAt(t testing.TB, path string) (*Store, *clock) {
	t.Helper()
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open(%q): %v", path, err)
	}
	c := newClock()
	s.Now = c.Now
	t.Cleanup(func() { s.Close() })
	return s, c
}

// key returns a distinct 32-byte device key for i.
func key(i int) []byte {
	k := make([]byte, DevicePubSize)
	binary.BigEndian.PutUint64(k, uint64(i))
	k[31] = 0xAA
	return k
}

func phone(i int) string { return fmt.Sprintf("1555%07d", i) }

func register(t testing.TB, s *Store, p string, k []byte) Account {
	t.Helper()
	a, err := s.RegisterDevice(context.Background(), Account{Phone: p, DevicePub: k})
	if err != nil {
		t.Fatalf("RegisterDevice(%s): %v", p, err)
	}
	return a
}

func save(t testing.TB, s *Store, from, to, clientID string) Message {
	t.Helper()
	m, dup, err := s.SaveMessage(context.Background(), Message{
		From: from, To: to, ClientID: clientID, ContentVersion: 1, Content: []byte("hello " + clientID),
	})
	if err != nil {
		t.Fatalf("SaveMessage(%s→%s %s): %v", from, to, clientID, err)
	}
	if dup {
		t.Fatalf("SaveMessage(%s→%s %s): unexpected dup", from, to, clientID)
	}
	return m
}

func pending(t testing.TB, s *Store, recipient string) []Item {
	t.Helper()
	items, err := s.Pending(context.Background(), recipient, 0, 1000)
	if err != nil {
		t.Fatalf("Pending(%s): %v", recipient, err)
	}
	return items
}

func mustMessage(t testing.TB, s *Store, id int64) Message {
	t.Helper()
	m, err := s.Message(context.Background(), id)
	if err != nil {
		t.Fatalf("Message(%d): %v", id, err)
	}
	return m
}

// describe renders items compactly for comparisons: "m:<id>" or
// "r:<type>:<id>".
func describe(items []Item) []string {
	out := make([]string, len(items))
	for i, it := range items {
		switch it.Kind {
		case ItemMessage:
			out[i] = fmt.Sprintf("m:%d", it.Message.ID)
		case ItemReceipt:
			out[i] = fmt.Sprintf("r:%s:%d", it.Receipt.Type, it.Receipt.MessageID)
		default:
			out[i] = fmt.Sprintf("?:%d", it.Kind)
		}
	}
	return out
}

func seqs(items []Item) []int64 {
	out := make([]int64, len(items))
	for i, it := range items {
		out[i] = it.Seq
	}
	return out
}

// withWriter parks the group-commit writer between two transactions and runs
// fn on this goroutine with the writer's connection (the store's only write
// connection, which the writer owns: s.w itself would wait forever). fn may
// call t.Fatal; it must leave no transaction open.
func withWriter(t testing.TB, s *Store, fn func(c *sql.Conn)) {
	t.Helper()
	parked, resume := make(chan struct{}), make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- s.gc.Do(context.Background(), func(*writeStmts) error {
			close(parked)
			<-resume
			return nil
		})
	}()
	select {
	case <-parked:
	case err := <-errc:
		t.Fatalf("parking the writer: %v", err)
	}
	defer func() {
		close(resume)
		if err := <-errc; err != nil {
			t.Errorf("writer: %v", err)
		}
	}()
	fn(s.wc)
}
