package webhook

import (
	"container/heap"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/chatd-dev/chatd/bizapi/store"
)

// DefaultMemQueueMax is the bound of a MemQueue, the size of the On-Premises callback queue.
const DefaultMemQueueMax = 100_000

// ErrQueueFull is returned by MemQueue.EnqueueCallback when the queue holds its maximum.
var ErrQueueFull = errors.New("webhook: callback queue full")

// MemQueue is the callback queue for callback_persist = false: in memory, lost on restart, bounded.
// It is safe for concurrent use.
//
// Order: DueCallbacks returns the callbacks due longest (earliest NextAt) first, ties in enqueue
// order (ID), like the SQLite store; for callbacks never retried that is enqueue order. Every
// operation costs O(log n), and DueCallbacks O((k + limit) · log n) where k is the number of due
// callbacks at or before its after key (the dispatcher's in flight), so a full queue behind a dead
// receiver stays cheap.
type MemQueue struct {
	mu       sync.Mutex
	max      int
	lastID   int64
	lastNext time.Time // the last NextAt filled in for a zero one
	h        memHeap
	byID     map[int64]*memEntry
}

type memEntry struct {
	cb  store.Callback
	idx int
}

// NewMemQueue returns an empty queue holding at most max callbacks (≤ 0 → DefaultMemQueueMax).
func NewMemQueue(max int) *MemQueue {
	if max <= 0 {
		max = DefaultMemQueueMax
	}
	return &MemQueue{max: max, byID: make(map[int64]*memEntry)}
}

// EnqueueCallback queues cb with a new ID (cb.ID is ignored). A zero CreatedAt becomes now and a
// zero NextAt becomes CreatedAt (due at once), or the NextAt given to the previous such callback if
// that is later: as in the store, callbacks queued with a zero NextAt have non-decreasing NextAt in
// ID order. ErrQueueFull when the queue is full.
func (q *MemQueue) EnqueueCallback(_ context.Context, cb store.Callback) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.h) >= q.max {
		return ErrQueueFull
	}
	q.lastID++
	cb.ID = q.lastID
	if cb.CreatedAt.IsZero() {
		cb.CreatedAt = time.Now()
	}
	if cb.NextAt.IsZero() {
		cb.NextAt = cb.CreatedAt
		if cb.NextAt.Before(q.lastNext) {
			cb.NextAt = q.lastNext
		}
		q.lastNext = cb.NextAt
	}
	e := &memEntry{cb: cb}
	heap.Push(&q.h, e)
	q.byID[cb.ID] = e
	return nil
}

// DueCallbacks returns at most limit callbacks with NextAt ≤ now and a key after after, due
// longest first.
func (q *MemQueue) DueCallbacks(_ context.Context, now time.Time, limit int, after store.CallbackKey) ([]store.Callback, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []store.Callback
	var popped []*memEntry
	for len(out) < limit && len(q.h) > 0 && !q.h[0].cb.NextAt.After(now) {
		e := heap.Pop(&q.h).(*memEntry)
		popped = append(popped, e)
		if after.Less(e.cb.Key()) {
			out = append(out, e.cb)
		}
	}
	for _, e := range popped {
		heap.Push(&q.h, e)
	}
	return out, nil
}

// DeleteCallbacks removes several callbacks at once; unknown ids are no error.
func (q *MemQueue) DeleteCallbacks(_ context.Context, ids []int64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, id := range ids {
		q.deleteLocked(id)
	}
	return nil
}

// RetryCallbacks records the same failed attempt for several callbacks at once; unknown ids are
// skipped.
func (q *MemQueue) RetryCallbacks(_ context.Context, ids []int64, attempts int, next time.Time, lastErr string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, id := range ids {
		q.retryLocked(id, attempts, next, lastErr)
	}
	return nil
}

// NextCallbackAt returns the earliest NextAt (zero when the queue is empty).
func (q *MemQueue) NextCallbackAt(context.Context) (time.Time, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.h) == 0 {
		return time.Time{}, nil
	}
	return q.h[0].cb.NextAt, nil
}

// DeleteCallback removes a callback; an unknown id is not an error.
func (q *MemQueue) DeleteCallback(_ context.Context, id int64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.deleteLocked(id)
	return nil
}

func (q *MemQueue) deleteLocked(id int64) {
	if e, ok := q.byID[id]; ok {
		heap.Remove(&q.h, e.idx)
		delete(q.byID, id)
	}
}

// RetryCallback records a failed attempt: Attempts, NextAt and LastError are set. store.ErrNotFound
// if there is no such callback (it was deleted), as with the SQLite store.
func (q *MemQueue) RetryCallback(_ context.Context, id int64, attempts int, next time.Time, lastErr string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.retryLocked(id, attempts, next, lastErr) {
		return store.ErrNotFound
	}
	return nil
}

func (q *MemQueue) retryLocked(id int64, attempts int, next time.Time, lastErr string) bool {
	e, ok := q.byID[id]
	if !ok {
		return false
	}
	e.cb.Attempts, e.cb.NextAt, e.cb.LastError = attempts, next, lastErr
	heap.Fix(&q.h, e.idx)
	return true
}

// Len returns the number of queued callbacks.
func (q *MemQueue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.h)
}

// memHeap orders entries by (NextAt, ID).
type memHeap []*memEntry

func (h memHeap) Len() int { return len(h) }
func (h memHeap) Less(i, j int) bool {
	a, b := &h[i].cb, &h[j].cb
	if !a.NextAt.Equal(b.NextAt) {
		return a.NextAt.Before(b.NextAt)
	}
	return a.ID < b.ID
}
func (h memHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *memHeap) Push(x any) {
	e := x.(*memEntry)
	e.idx = len(*h)
	*h = append(*h, e)
}
func (h *memHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.idx = -1
	return e
}
