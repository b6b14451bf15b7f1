package main

import (
	"math"
	"runtime"
	"strings"
)

// When chatd runs in this process (--spawn), the Go heap and the goroutines hold the clients and the
// server together. memSplit separates them by who allocated or runs: the heap profile's live objects
// (after a GC) by the innermost chatd frame of their allocation stack, and the goroutines by the
// innermost chatd frame of their current stack. Frames of packages both sides use (noisesock,
// transport, wire) are skipped, so an object allocated by noisesock under the server's session is
// the server's. Goroutine stacks are not in the heap profile: they are split in proportion to the
// goroutine counts, which is an estimate (the server's stacks may have grown during the handshake,
// the clients' too).

const memProfileRate = 4096 // sample every 4 KiB of allocation: fine enough for per-connection figures

type memShare struct {
	Heap       map[string]float64 // live heap bytes by side: server, client, other
	Goroutines map[string]int
}

const (
	sideServer = "server"
	sideClient = "client"
	sideOther  = "other"
)

// classify names the side of a stack (PCs innermost first).
func classify(stk []uintptr) string {
	frames := runtime.CallersFrames(stk)
	for {
		f, more := frames.Next()
		fn := f.Function
		if rest, ok := strings.CutPrefix(fn, "github.com/chatd-dev/chatd/"); ok {
			switch {
			case strings.HasPrefix(rest, "server"):
				return sideServer
			case strings.HasPrefix(rest, "client"):
				return sideClient
			case strings.HasPrefix(rest, "cmd/chatbench"):
				// The benchmark's own goroutines (the client launcher) and what it allocates for the
				// clients (client.New's result, the keys) belong to the load generator.
				return sideClient
			case strings.HasPrefix(rest, "internal/groupcommit"), strings.HasPrefix(rest, "internal/sqlitedb"):
				return sideServer
			}
		}
		if !more {
			return sideOther
		}
	}
}

// readShare runs two GCs (which publish the heap profile) and splits the live heap and the
// goroutines by side.
func readShare() memShare {
	runtime.GC()
	runtime.GC()
	s := memShare{Heap: map[string]float64{}, Goroutines: map[string]int{}}
	var recs []runtime.MemProfileRecord
	for {
		n, ok := runtime.MemProfile(recs, false)
		if ok {
			recs = recs[:n]
			break
		}
		recs = make([]runtime.MemProfileRecord, n+100)
	}
	rate := float64(runtime.MemProfileRate)
	for i := range recs {
		r := &recs[i]
		bytes, objs := float64(r.InUseBytes()), float64(r.InUseObjects())
		if objs <= 0 || bytes <= 0 {
			continue
		}
		// Undo the sampling as pprof does: an object of size s was sampled with probability
		// 1 − exp(−s/rate).
		if rate > 1 {
			avg := bytes / objs
			bytes /= 1 - math.Exp(-avg/rate)
		}
		s.Heap[classify(r.Stack())] += bytes
	}
	var grs []runtime.StackRecord
	for {
		n, ok := runtime.GoroutineProfile(grs)
		if ok {
			grs = grs[:n]
			break
		}
		grs = make([]runtime.StackRecord, n+1000)
	}
	for i := range grs {
		s.Goroutines[classify(grs[i].Stack())]++
	}
	return s
}
