package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/chatd-dev/chatd/wire/chatdpb"
)

// Entry kinds in inbox.jsonl.
const (
	kindMessage = "message" // a received message
	kindReceipt = "receipt" // a receipt for a message this account sent
	kindRead    = "read"    // this account sent read receipts for ServerIDs
)

// Receipt types.
const (
	receiptDelivered = "delivered"
	receiptRead      = "read"
)

// Entry is one line of inbox.jsonl.
type Entry struct {
	Kind string `json:"kind"`
	// ServerID is the server's id of the message (of a message received for kindMessage, of a message
	// sent for kindReceipt).
	ServerID  uint64   `json:"server_id,omitempty"`
	ServerIDs []uint64 `json:"server_ids,omitempty"` // kindRead
	// Time is the server's timestamp (kindMessage, kindReceipt) or when the read receipts were sent.
	Time time.Time `json:"time"`

	// Messages.
	From         string `json:"from,omitempty"`
	FromBusiness bool   `json:"from_business,omitempty"`
	Text         string `json:"text,omitempty"`
	// ContentVersion and Content hold a message that is not a version 1 text message, as received.
	ContentVersion uint32 `json:"content_version,omitempty"`
	Content        []byte `json:"content,omitempty"`

	// Receipts.
	Receipt  string `json:"receipt,omitempty"` // receiptDelivered or receiptRead
	By       string `json:"by,omitempty"`
	ClientID string `json:"client_id,omitempty"`
}

// display is what a message says, for people.
func (e Entry) display() string {
	if e.Content == nil && e.ContentVersion == 0 {
		return e.Text
	}
	text, _ := contentText(&chatdpb.Content{Version: e.ContentVersion, Body: e.Content})
	return text
}

// keepSeen is how many server ids the seen file remembers; it is rewritten when it holds twice as many.
const keepSeen = 10000

// Inbox is the profile's record of what arrived: inbox.jsonl (messages, receipts and read marks, each
// appended and synced before the delivery is acknowledged) and the seen file (recent message ids, so
// that a message delivered again after a crash is not shown twice, even when inbox.jsonl was
// removed). It is safe for concurrent use.
type Inbox struct {
	dir string

	mu        sync.Mutex
	log       *os.File            // inbox.jsonl, append only; guarded by mu
	seenF     *os.File            // seen, append only; guarded by mu
	seen      map[uint64]struct{} // ids in seen and inbox.jsonl; guarded by mu
	seenOrder []uint64            // ids as appended to seenF (the file's lines); guarded by mu
	messages  []Entry             // kindMessage entries in arrival order; guarded by mu
	stored    map[uint64]bool     // ids of messages; guarded by mu
	read      map[uint64]bool     // ids marked read; guarded by mu
	receipts  map[uint64]Entry    // the furthest receipt by server id of a sent message; guarded by mu
}

// openInbox opens (creating) the inbox of the profile in dir, for a command that holds the profile's
// lock.
func openInbox(dir string) (*Inbox, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("inbox: %w", err)
	}
	in, err := loadInbox(dir)
	if err != nil {
		return nil, err
	}
	if in.log, err = openAppend(filepath.Join(dir, inboxFile)); err != nil {
		return nil, err
	}
	if in.seenF, err = openAppend(filepath.Join(dir, seenFile)); err != nil {
		in.log.Close()
		return nil, err
	}
	return in, nil
}

// loadInbox reads the inbox without opening it for writing (chat inbox, which may run next to a
// command holding the lock). Only the read methods may be used.
func loadInbox(dir string) (*Inbox, error) {
	in := &Inbox{dir: dir, seen: map[uint64]struct{}{}, read: map[uint64]bool{}, stored: map[uint64]bool{},
		receipts: map[uint64]Entry{}}
	var err error
	if in.seenOrder, err = readSeen(filepath.Join(dir, seenFile)); err != nil {
		return nil, err
	}
	for _, id := range in.seenOrder {
		in.seen[id] = struct{}{}
	}
	entries, err := readEntries(filepath.Join(dir, inboxFile))
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		in.apply(e)
	}
	return in, nil
}

// openAppend opens path for appending and makes sure what is appended starts on a new line (a crash
// may have left half a line).
func openAppend(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("inbox: %w", err)
	}
	if st, err := f.Stat(); err == nil && st.Size() > 0 {
		last := make([]byte, 1)
		if _, err := f.ReadAt(last, st.Size()-1); err == nil && last[0] != '\n' {
			f.Write([]byte{'\n'})
		}
	}
	return f, nil
}

func readSeen(path string) ([]uint64, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("inbox: %w", err)
	}
	var ids []uint64
	for line := range bytes.Lines(data) {
		if id, err := strconv.ParseUint(string(bytes.TrimSpace(line)), 10, 64); err == nil && id != 0 {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// readEntries reads inbox.jsonl, skipping lines it cannot decode (a line cut by a crash).
func readEntries(path string) ([]Entry, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("inbox: %w", err)
	}
	defer f.Close()
	var out []Entry
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			var e Entry
			if json.Unmarshal(line, &e) == nil {
				out = append(out, e)
			}
		}
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("inbox: %w", err)
		}
	}
}

func (in *Inbox) apply(e Entry) {
	switch e.Kind {
	case kindMessage:
		if in.stored[e.ServerID] {
			return
		}
		in.seen[e.ServerID] = struct{}{}
		in.stored[e.ServerID] = true
		in.messages = append(in.messages, e)
	case kindRead:
		for _, id := range e.ServerIDs {
			in.read[id] = true
		}
	case kindReceipt:
		if prev, ok := in.receipts[e.ServerID]; !ok || prev.Receipt != receiptRead {
			in.receipts[e.ServerID] = e
		}
	}
}

// Close closes the files of an opened inbox.
func (in *Inbox) Close() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.log == nil {
		return nil
	}
	return errors.Join(in.log.Close(), in.seenF.Close())
}

// AddMessage stores a received message, unless its server id was seen before (dup). It returns once
// the entry is on disk.
func (in *Inbox) AddMessage(m *chatdpb.Message) (e Entry, dup bool, err error) {
	e = Entry{Kind: kindMessage, ServerID: m.GetServerId(), From: m.GetFrom(), FromBusiness: m.GetFromBusiness(),
		Time: time.UnixMilli(m.GetTimestampMs()).UTC()}
	if text, ok := contentText(m.GetContent()); ok {
		e.Text = text
	} else {
		e.ContentVersion, e.Content = m.GetContent().GetVersion(), m.GetContent().GetBody()
		if e.Content == nil {
			e.Content = []byte{}
		}
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if _, ok := in.seen[e.ServerID]; ok {
		return e, true, nil
	}
	if err := in.appendLine(e); err != nil {
		return e, false, err
	}
	if _, err := fmt.Fprintf(in.seenF, "%d\n", e.ServerID); err != nil {
		return e, false, fmt.Errorf("inbox: %w", err)
	}
	if err := in.seenF.Sync(); err != nil {
		return e, false, fmt.Errorf("inbox: %w", err)
	}
	in.seen[e.ServerID] = struct{}{}
	in.seenOrder = append(in.seenOrder, e.ServerID)
	in.stored[e.ServerID] = true
	in.messages = append(in.messages, e)
	if len(in.seenOrder) > 2*keepSeen {
		in.compactSeen()
	}
	return e, false, nil
}

// compactSeen rewrites the seen file with the most recent keepSeen ids. Older ids stay known while
// their messages are in inbox.jsonl.
func (in *Inbox) compactSeen() {
	keep := in.seenOrder[len(in.seenOrder)-keepSeen:]
	var b bytes.Buffer
	for _, id := range keep {
		fmt.Fprintf(&b, "%d\n", id)
	}
	path := filepath.Join(in.dir, seenFile)
	if err := writeFileAtomic(path, b.Bytes(), 0o600); err != nil {
		return // the longer file stays valid
	}
	f, err := openAppend(path)
	if err != nil {
		return
	}
	in.seenF.Close()
	in.seenF = f
	in.seenOrder = slices.Clone(keep)
}

// AddReceipt stores a receipt for a message this account sent.
func (in *Inbox) AddReceipt(r *chatdpb.Receipt) (Entry, error) {
	e := Entry{Kind: kindReceipt, ServerID: r.GetServerId(), By: r.GetBy(), ClientID: r.GetClientId(),
		Time: time.UnixMilli(r.GetTimestampMs()).UTC(), Receipt: receiptDelivered}
	if r.GetType() == chatdpb.Receipt_READ {
		e.Receipt = receiptRead
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if err := in.appendLine(e); err != nil {
		return e, err
	}
	in.apply(e)
	return e, nil
}

// Receipt returns the furthest receipt stored for the sent message id.
func (in *Inbox) Receipt(id uint64) (Entry, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	e, ok := in.receipts[id]
	return e, ok
}

// MarkedRead records that read receipts were sent for ids.
func (in *Inbox) MarkedRead(ids []uint64, now time.Time) error {
	e := Entry{Kind: kindRead, ServerIDs: ids, Time: now.UTC()}
	in.mu.Lock()
	defer in.mu.Unlock()
	if err := in.appendLine(e); err != nil {
		return err
	}
	in.apply(e)
	return nil
}

func (in *Inbox) appendLine(e Entry) error {
	line, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("inbox: %w", err)
	}
	if _, err := in.log.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("inbox: %w", err)
	}
	if err := in.log.Sync(); err != nil {
		return fmt.Errorf("inbox: %w", err)
	}
	return nil
}

// Messages returns the received messages in arrival order.
func (in *Inbox) Messages() []Entry {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.messages)
}

// Unread returns the messages not marked read.
func (in *Inbox) Unread() []Entry {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []Entry
	for _, e := range in.messages {
		if !in.read[e.ServerID] {
			out = append(out, e)
		}
	}
	return out
}

// IsRead reports whether a read receipt was sent for the message id.
func (in *Inbox) IsRead(id uint64) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.read[id]
}

// Has reports whether the message id is in the inbox.
func (in *Inbox) Has(id uint64) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.stored[id]
}

// archive moves the inbox files of a previous registration aside (server ids of another server or
// account mean nothing to the new one) and returns the new name of inbox.jsonl, "" if there was none.
func archiveInbox(dir, oldPhone string, now time.Time) (string, error) {
	old := filepath.Join(dir, inboxFile)
	if _, err := os.Stat(old); errors.Is(err, fs.ErrNotExist) {
		os.Remove(filepath.Join(dir, seenFile))
		return "", nil
	}
	name := fmt.Sprintf("inbox-%s-%s.jsonl", oldPhone, now.UTC().Format("20060102T150405Z"))
	if err := os.Rename(old, filepath.Join(dir, name)); err != nil {
		return "", fmt.Errorf("inbox: %w", err)
	}
	if err := os.Remove(filepath.Join(dir, seenFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("inbox: %w", err)
	}
	return filepath.Join(dir, name), nil
}
