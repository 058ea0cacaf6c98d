package esdb

import (
	"encoding/json"
	"math"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// memLog is the transaction log of the in-process test server (see
// testserver_test.go), with the documented semantics of an EventStoreDB
// node that the adapter relies on:
//
//   - positions are offsets in the log, assigned at commit in log order, so
//     $all readers never see a later position appear before an earlier one;
//     an event's commit and prepare positions are equal (appends are
//     implicit transactions), and an append's result is the position of its
//     last event;
//   - the log starts with the server's own system events, and stream
//     metadata lives in the "$$<stream>" stream as "$metadata" events, so
//     $all holds events of system streams and types;
//   - expected revisions and idempotency follow the server's commit check:
//     an append whose events are already in the stream, at the revisions the
//     expectation implies (or, with any expectation, anywhere in the stream),
//     succeeds again with the original outcome; a partial match is a wrong
//     expected version;
//   - a stream's $maxAge hides its older events from stream reads.
type memLog struct {
	mu      sync.Mutex
	records []*logRecord // in position order
	streams map[string][]*logRecord
	ids     map[string]map[uuid.UUID]uint64 // stream → event id → revision
	next    uint64                          // position of the next record
	changed chan struct{}                   // closed (and replaced) by every append
}

type logRecord struct {
	pos         uint64
	stream      string
	revision    uint64
	id          uuid.UUID
	eventType   string
	contentType string
	created     time.Time
	data        []byte
	meta        []byte
}

// proposed is an event of an append request.
type proposed struct {
	id          uuid.UUID
	eventType   string
	contentType string
	data, meta  []byte
}

type expectKind int

const (
	expectAny expectKind = iota
	expectNoStream
	expectStreamExists
	expectRevision
)

type expectation struct {
	kind     expectKind
	revision uint64
}

// appendOutcome is the server's answer to an append.
type appendOutcome struct {
	wrongVersion bool
	current      int64 // the stream's last revision, -1 when it does not exist
	lastRevision uint64
	position     uint64
	idempotent   bool
}

// logHeaderSize stands for the per-record overhead of a real log, so that
// positions grow by record sizes, not by one.
const logHeaderSize = 96

func newMemLog() *memLog {
	l := &memLog{
		streams: map[string][]*logRecord{},
		ids:     map[string]map[uuid.UUID]uint64{},
		next:    128, // the log starts with an epoch record, not an event
		changed: make(chan struct{}),
	}
	// A fresh node writes system events of its own.
	now := time.Now()
	l.write("$settings", []proposed{{id: uuid.New(), eventType: "$settings", contentType: "application/json",
		data: []byte(`{"$userStreamAcl":{"$r":"$all"}}`)}}, now)
	l.write("$users", []proposed{{id: uuid.New(), eventType: "$UserCreated", contentType: "application/json",
		data: []byte(`"admin"`)}}, now)
	return l
}

// append applies the server's commit check, then writes.
func (l *memLog) append(stream string, exp expectation, events []proposed, now time.Time) appendOutcome {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := l.streams[stream]
	current := int64(len(cur)) - 1
	wrong := appendOutcome{wrongVersion: true, current: current}
	if len(events) == 0 {
		return appendOutcome{current: current}
	}
	kind := exp.kind
	if kind == expectStreamExists {
		if current < 0 {
			return wrong
		}
		kind = expectAny
	}
	if kind == expectAny {
		ids := l.ids[stream]
		first, known := ids[events[0].id]
		if known {
			last := first
			for _, e := range events[1:] {
				rev, ok := ids[e.id]
				if !ok {
					return wrong // part of the events are known: corrupted idempotency
				}
				last = rev
			}
			return appendOutcome{current: current, lastRevision: last, position: cur[last].pos, idempotent: true}
		}
	} else {
		expected := int64(-1)
		if kind == expectRevision {
			if exp.revision > math.MaxInt64 {
				return wrong
			}
			expected = int64(exp.revision)
		}
		if expected < current {
			for i, e := range events {
				rev := expected + 1 + int64(i)
				if rev > current || cur[rev].id != e.id {
					return wrong
				}
			}
			last := expected + int64(len(events))
			return appendOutcome{current: current, lastRevision: uint64(last), position: cur[last].pos, idempotent: true}
		}
		if expected > current {
			return wrong
		}
	}
	last := l.write(stream, events, now)
	return appendOutcome{current: current, lastRevision: last.revision, position: last.pos}
}

// write appends events to stream; l.mu must be held (or l not shared yet).
func (l *memLog) write(stream string, events []proposed, now time.Time) *logRecord {
	ids := l.ids[stream]
	if ids == nil {
		ids = map[uuid.UUID]uint64{}
		l.ids[stream] = ids
	}
	var rec *logRecord
	for _, e := range events {
		rec = &logRecord{
			pos:         l.next,
			stream:      stream,
			revision:    uint64(len(l.streams[stream])),
			id:          e.id,
			eventType:   e.eventType,
			contentType: e.contentType,
			created:     now,
			data:        e.data,
			meta:        e.meta,
		}
		l.next += uint64(logHeaderSize + len(stream) + len(e.eventType) + len(e.data) + len(e.meta))
		l.records = append(l.records, rec)
		l.streams[stream] = append(l.streams[stream], rec)
		ids[e.id] = rec.revision
	}
	close(l.changed)
	l.changed = make(chan struct{})
	return rec
}

// readStream returns up to count events of stream from revision from,
// forwards or backwards (from math.MaxUint64 is the end). found is false
// when the stream does not exist. Events older than the stream's $maxAge are
// left out.
func (l *memLog) readStream(stream string, from uint64, count uint64, backwards bool, now time.Time) (recs []*logRecord, found bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	all := l.streams[stream]
	if len(all) == 0 {
		return nil, false
	}
	var oldest time.Time
	if maxAge, ok := l.maxAge(stream); ok {
		oldest = now.Add(-maxAge)
	}
	keep := func(r *logRecord) bool { return oldest.IsZero() || !r.created.Before(oldest) }
	if backwards {
		start := int64(len(all)) - 1
		if from < uint64(len(all)) {
			start = int64(from)
		}
		for i := start; i >= 0 && uint64(len(recs)) < count; i-- {
			if keep(all[i]) {
				recs = append(recs, all[i])
			}
		}
		return recs, true
	}
	for i := from; i < uint64(len(all)) && uint64(len(recs)) < count; i++ {
		if keep(all[i]) {
			recs = append(recs, all[i])
		}
	}
	return recs, true
}

// maxAge reads the $maxAge of stream's metadata; l.mu must be held.
func (l *memLog) maxAge(stream string) (time.Duration, bool) {
	meta := l.streams["$$"+stream]
	if len(meta) == 0 {
		return 0, false
	}
	var props struct {
		MaxAge *int64 `json:"$maxAge"`
	}
	if err := json.Unmarshal(meta[len(meta)-1].data, &props); err != nil || props.MaxAge == nil || *props.MaxAge <= 0 {
		return 0, false
	}
	return time.Duration(*props.MaxAge) * time.Second, true
}

// index returns the index of the first record at or after pos (inclusive)
// or after it (exclusive).
func (l *memLog) index(pos uint64, inclusive bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return sort.Search(len(l.records), func(i int) bool {
		if inclusive {
			return l.records[i].pos >= pos
		}
		return l.records[i].pos > pos
	})
}

// from returns the records from index i on, and a channel closed by the next
// append.
func (l *memLog) from(i int) ([]*logRecord, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if i >= len(l.records) {
		return nil, l.changed
	}
	return l.records[i:len(l.records):len(l.records)], l.changed
}

// length returns the number of records.
func (l *memLog) length() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.records)
}

// eventFilter is a server-side filter of a read or subscription.
type eventFilter struct {
	onStream bool
	prefixes []string
	re       *regexp.Regexp
}

func (f *eventFilter) match(r *logRecord) bool {
	if f == nil {
		return true
	}
	subject := r.eventType
	if f.onStream {
		subject = r.stream
	}
	if f.re != nil {
		return f.re.MatchString(subject)
	}
	for _, p := range f.prefixes {
		if strings.HasPrefix(subject, p) {
			return true
		}
	}
	return false
}

// stream returns a copy of the records of stream.
func (l *memLog) stream(name string) []logRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]logRecord, len(l.streams[name]))
	for i, r := range l.streams[name] {
		out[i] = *r
	}
	return out
}
