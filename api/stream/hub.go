// Package stream is the plumbing of the server-sent event routes: a Hub that
// fans one feed out to any number of readers without ever waiting for one
// of them, and a Writer that writes events to one response under a write
// deadline.
package stream

import (
	"errors"
	"sync"
)

// ErrBehind is returned by Reader.Read when the reader fell so far behind
// that the hub has overwritten items it had not read yet. The reader must
// leave and its client catch up by other means (resume by id).
var ErrBehind = errors.New("stream reader fell behind")

// Feed subscribes to the source of a Hub's items. It returns the channel of
// items and a function that ends the subscription. The channel closes after
// stop, or when the source drops the subscription (because the hub did not
// keep up); the hub then subscribes again and publishes its reset item.
type Feed[T any] func() (items <-chan T, stop func())

// Hub fans the items of one feed out to readers through a ring of fixed
// size shared by all of them: publishing an item costs the same whatever the
// number of readers, a reader that stalls delays nobody, and a reader that
// falls further behind than the ring holds is told so (ErrBehind) instead
// of holding memory. The feed is subscribed while the hub has readers, and
// the subscription ends with the last one.
type Hub[T any] struct {
	feed  Feed[T]
	reset T
	size  uint64

	// mu guards the ring: publishing and joining write, readers read (all
	// readers wake at once when items are published; they must not queue
	// on one lock).
	mu      sync.RWMutex
	ring    []T
	next    uint64        // sequence number of the next item; the ring holds [next-size, next)
	signal  chan struct{} // closed when items are published, then replaced
	readers int
	gen     uint64 // identifies the current feed subscription
	stop    func() // ends it; nil while the hub has no reader
}

// NewHub returns a hub of the given ring size (at least 1) over feed.
// reset is published when the feed had to be subscribed again: items may
// have been lost, and readers must catch up by other means.
func NewHub[T any](feed Feed[T], size int, reset T) *Hub[T] {
	size = max(size, 1)
	return &Hub[T]{feed: feed, reset: reset, size: uint64(size), ring: make([]T, size), signal: make(chan struct{})}
}

// Reader reads a hub's items in order from the point where it joined. A
// reader is used by one goroutine.
type Reader[T any] struct {
	hub    *Hub[T]
	next   uint64
	signal chan struct{}
	left   bool
}

// Join returns a reader positioned after the last published item. The feed
// is subscribed before Join returns, so every item it yields from then on
// reaches the reader.
func (h *Hub[T]) Join() *Reader[T] {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stop == nil {
		h.gen++
		items, stop := h.feed()
		h.stop = stop
		go h.pump(items, h.gen)
	}
	h.readers++
	return &Reader[T]{hub: h, next: h.next, signal: h.signal}
}

// Readers returns the number of readers.
func (h *Hub[T]) Readers() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.readers
}

// pump publishes the feed's items until the subscription of generation gen
// is ended by the hub. When the feed drops the subscription, it subscribes
// again and publishes the reset item.
func (h *Hub[T]) pump(items <-chan T, gen uint64) {
	batch := make([]T, 0, 64)
	for {
		it, ok := <-items
		if !ok {
			h.mu.Lock()
			if h.gen != gen {
				h.mu.Unlock()
				return
			}
			items, h.stop = h.feed()
			h.publishLocked(h.reset)
			h.signalLocked()
			h.mu.Unlock()
			continue
		}
		// Take whatever else is waiting, so that a burst is published (and
		// readers woken) once.
		batch = append(batch[:0], it)
	drain:
		for len(batch) < cap(batch) {
			select {
			case it, ok := <-items:
				if !ok {
					break drain // handled by the next receive
				}
				batch = append(batch, it)
			default:
				break drain
			}
		}
		h.mu.Lock()
		if h.gen != gen {
			h.mu.Unlock()
			return
		}
		for _, it := range batch {
			h.publishLocked(it)
		}
		h.signalLocked()
		h.mu.Unlock()
		clear(batch)
	}
}

func (h *Hub[T]) publishLocked(it T) {
	h.ring[h.next%h.size] = it
	h.next++
}

func (h *Hub[T]) signalLocked() {
	close(h.signal)
	h.signal = make(chan struct{})
}

// Wait returns a channel that is closed when items the reader has not read
// may be waiting.
func (r *Reader[T]) Wait() <-chan struct{} { return r.signal }

// Read appends the items published since the last Read (or Join) to dst
// and returns it. ErrBehind means the hub overwrote some of them.
func (r *Reader[T]) Read(dst []T) ([]T, error) {
	h := r.hub
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.next-r.next > h.size {
		return dst, ErrBehind
	}
	for ; r.next < h.next; r.next++ {
		dst = append(dst, h.ring[r.next%h.size])
	}
	r.signal = h.signal
	return dst, nil
}

// Leave ends the reader. The last reader to leave ends the feed
// subscription. Leave may be called more than once.
func (r *Reader[T]) Leave() {
	h := r.hub
	h.mu.Lock()
	if r.left {
		h.mu.Unlock()
		return
	}
	r.left = true
	h.readers--
	var stop func()
	if h.readers == 0 {
		h.gen++
		stop, h.stop = h.stop, nil
		clear(h.ring) // release what the items refer to
	}
	h.mu.Unlock()
	if stop != nil {
		stop()
	}
}
