package run

import (
	"errors"
	"testing"
	"time"
)

func TestFirstFailureWins(t *testing.T) {
	g := Group{Prefix: "daemon"}
	boom := errors.New("boom")
	second := make(chan struct{})
	g.Go("quiet", func() error { return nil })
	g.Go("listener", func() error { return boom })
	select {
	case <-g.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed after a failure")
	}
	g.Go("late", func() error { defer close(second); return errors.New("later") })
	<-second
	g.Wait()
	err := g.Err()
	if !errors.Is(err, boom) || err.Error() != "daemon: listener: boom" {
		t.Fatalf("Err = %v, want daemon: listener: boom", err)
	}
}

func TestNoFailure(t *testing.T) {
	var g Group // the zero Group works, without a prefix
	stop := make(chan struct{})
	g.Go("loop", func() error { <-stop; return nil })
	select {
	case <-g.Done():
		t.Fatal("Done closed without a failure")
	default:
	}
	if g.Err() != nil {
		t.Fatalf("Err = %v before any failure", g.Err())
	}
	close(stop)
	g.Wait()
	if g.Err() != nil {
		t.Fatalf("Err = %v after a clean return", g.Err())
	}
	g.Go("x", func() error { return errors.New("bad") })
	g.Wait()
	if err := g.Err(); err == nil || err.Error() != "x: bad" {
		t.Fatalf("Err = %v, want x: bad", err)
	}
}
