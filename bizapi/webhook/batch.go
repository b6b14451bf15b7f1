package webhook

import (
	"bytes"
	"encoding/json"

	"github.com/chatd-dev/chatd/bizapi/store"
)

// batch is the callbacks of one request: payloads of the same shape (the same top-level keys, each
// an array) and the same number of failed attempts, in queue order.
type batch struct {
	cbs      []store.Callback
	kind     shape    // the first callback's shape: the keys (unless the batch is one unmergeable callback)
	items    [][]byte // for each callback, its shape's items, kind.n of them
	attempts int
	size     int  // payload bytes
	full     bool // MaxBatch callbacks, or the next one did not fit in MaxBatchBytes
}

// assemble groups the due callbacks that are not in flight into batches of at most maxBatch
// callbacks and MaxBatchBytes payload bytes. A callback joins the open batch of its kind and
// attempts, so each batch keeps queue order; batches are returned in the order of their first
// callback.
func assemble(due []store.Callback, inflight map[int64]struct{}, maxBatch int) []*batch {
	var out []*batch
	var open []*batch // at most one per kind and attempts
	for _, cb := range due {
		if _, busy := inflight[cb.ID]; busy {
			continue
		}
		var sh shape
		if maxBatch > 1 && len(cb.Payload) <= MaxBatchBytes {
			sh = shapeOf(cb.Payload)
		}
		if sh.n == 0 {
			out = append(out, &batch{cbs: []store.Callback{cb}, attempts: cb.Attempts, size: len(cb.Payload), full: true})
			continue
		}
		var b *batch
		for i, o := range open {
			if o.attempts == cb.Attempts && o.kind.sameKind(&sh) {
				if o.size+len(cb.Payload) > MaxBatchBytes {
					o.full = true
					open = append(open[:i], open[i+1:]...)
				} else {
					b = o
				}
				break
			}
		}
		if b == nil {
			n := min(maxBatch, len(due))
			b = &batch{cbs: make([]store.Callback, 0, n), kind: sh, items: make([][]byte, 0, n*sh.n), attempts: cb.Attempts}
			out = append(out, b)
			open = append(open, b)
		}
		b.cbs = append(b.cbs, cb)
		b.items = append(b.items, sh.items[:sh.n]...)
		b.size += len(cb.Payload)
		if len(b.cbs) == maxBatch {
			b.full = true
			for i, o := range open {
				if o == b {
					open = append(open[:i], open[i+1:]...)
					break
				}
			}
		}
	}
	return out
}

// body is the request body: the payload itself for a single callback (byte for byte as queued),
// else one object with each key's arrays concatenated in queue order, e.g.
// {"statuses":[s1,s2,s3]} or {"contacts":[c1,c2],"messages":[m1,m2]}.
func (b *batch) body() []byte {
	if len(b.cbs) == 1 {
		return b.cbs[0].Payload
	}
	out := make([]byte, 0, b.size+16)
	out = append(out, '{')
	n := b.kind.n
	for k, key := range b.kind.keys[:n] {
		if k > 0 {
			out = append(out, ',')
		}
		out = append(out, key...)
		out = append(out, ':', '[')
		first := true
		for i := k; i < len(b.items); i += n {
			if len(b.items[i]) == 0 {
				continue
			}
			if !first {
				out = append(out, ',')
			}
			first = false
			out = append(out, b.items[i]...)
		}
		out = append(out, ']')
	}
	return append(out, '}')
}

// maxShapeKeys bounds the members of a payload that can be merged (ours have one or two).
const maxShapeKeys = 4

// shape is a payload that can be merged with others: a JSON object whose members are all arrays.
// Its slices point into the payload.
type shape struct {
	n     int                  // members; 0: not mergeable
	keys  [maxShapeKeys][]byte // each key, quoted as written
	items [maxShapeKeys][]byte // each member's array without its brackets (the elements and the commas)
}

// sameKind reports whether two shapes have the same keys in the same order.
func (sh *shape) sameKind(o *shape) bool {
	if sh.n != o.n {
		return false
	}
	for i := range sh.n {
		if !bytes.Equal(sh.keys[i], o.keys[i]) {
			return false
		}
	}
	return true
}

// shapeOf parses a payload into its shape; the zero shape when it is not valid JSON, not an
// object, has a member that is not an array, repeats a key or has more than maxShapeKeys members —
// such a payload is sent alone.
func shapeOf(p []byte) shape {
	if !json.Valid(p) {
		return shape{}
	}
	var sh shape
	i := skipSpace(p, 0)
	if i >= len(p) || p[i] != '{' {
		return shape{}
	}
	i = skipSpace(p, i+1)
	if i < len(p) && p[i] == '}' {
		return shape{}
	}
	for i < len(p) {
		// "key"
		if p[i] != '"' || sh.n == maxShapeKeys {
			return shape{}
		}
		end := endString(p, i)
		key := p[i:end]
		for _, k := range sh.keys[:sh.n] {
			if bytes.Equal(k, key) {
				return shape{}
			}
		}
		i = skipSpace(p, end)
		if i >= len(p) || p[i] != ':' {
			return shape{}
		}
		// [ … ]
		i = skipSpace(p, i+1)
		if i >= len(p) || p[i] != '[' {
			return shape{}
		}
		close := endValue(p, i) // just past the matching ']'
		sh.keys[sh.n] = key
		sh.items[sh.n] = bytes.TrimSpace(p[i+1 : close-1])
		sh.n++
		i = skipSpace(p, close)
		if i >= len(p) {
			return shape{}
		}
		switch p[i] {
		case ',':
			i = skipSpace(p, i+1)
		case '}':
			if skipSpace(p, i+1) != len(p) {
				return shape{}
			}
			return sh
		default:
			return shape{}
		}
	}
	return shape{}
}

func skipSpace(p []byte, i int) int {
	for i < len(p) && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r') {
		i++
	}
	return i
}

// endString returns the index just past the string starting at p[i] == '"' (p is valid JSON).
func endString(p []byte, i int) int {
	for i++; i < len(p); i++ {
		switch p[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(p)
}

// endValue returns the index just past the array or object starting at p[i] (p is valid JSON).
func endValue(p []byte, i int) int {
	depth := 0
	for ; i < len(p); i++ {
		switch p[i] {
		case '"':
			i = endString(p, i) - 1
		case '[', '{':
			depth++
		case ']', '}':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return len(p)
}
