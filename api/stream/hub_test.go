package stream

import (
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// testFeed is a Feed whose subscriptions the test drives: it publishes into
// the current subscription, can drop it as a slow source would, and counts
// subscriptions.
type testFeed struct {
	mu      sync.Mutex
	current chan int
	subs    int
	active  int
	// subscribed receives a signal for every subscription.
	subscribed chan struct{}
}

func newTestFeed() *testFeed { return &testFeed{subscribed: make(chan struct{}, 16)} }

func (f *testFeed) feed() (<-chan int, func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan int, 1024)
	f.current = ch
	f.subs++
	f.active++
	f.subscribed <- struct{}{}
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.active--
			if f.current == ch {
				close(ch)
				f.current = nil
			}
		})
	}
}

// publish sends items into the current subscription.
func (f *testFeed) publish(t *testing.T, items ...int) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	require.NotNil(t, f.current, "no subscription to publish to")
	for _, it := range items {
		f.current <- it
	}
}

// drop closes the current subscription, as a source does with a
// subscriber that does not keep up.
func (f *testFeed) drop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.current)
	f.current = nil
	f.active--
}

func (f *testFeed) counts() (subs, active int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.subs, f.active
}

// readUntil reads from r until it has n items (waiting on r.Wait between
// reads) and returns them.
func readUntil(t *testing.T, r *Reader[int], n int) []int {
	t.Helper()
	var got []int
	for len(got) < n {
		<-r.Wait()
		var err error
		got, err = r.Read(got)
		require.NoError(t, err)
	}
	return got
}

func seq(from, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = from + i
	}
	return out
}

func TestHubFansOutInOrder(t *testing.T) {
	t.Parallel()
	f := newTestFeed()
	h := NewHub(f.feed, 64, -1)
	a, b := h.Join(), h.Join()
	require.Equal(t, 2, h.Readers())
	f.publish(t, seq(1, 10)...)
	require.Equal(t, seq(1, 10), readUntil(t, a, 10))
	require.Equal(t, seq(1, 10), readUntil(t, b, 10))

	// A reader joining later starts after what was published.
	c := h.Join()
	f.publish(t, seq(11, 5)...)
	require.Equal(t, seq(11, 5), readUntil(t, c, 5))
	require.Equal(t, seq(11, 5), readUntil(t, a, 5))
	a.Leave()
	b.Leave()
	c.Leave()
	c.Leave() // idempotent
	require.Equal(t, 0, h.Readers())
}

func TestHubStalledReaderDelaysNobodyAndFallsBehind(t *testing.T) {
	t.Parallel()
	f := newTestFeed()
	const size = 8
	h := NewHub(f.feed, size, -1)
	stalled, fast := h.Join(), h.Join()
	defer stalled.Leave()
	defer fast.Leave()

	// The fast reader gets every item while the stalled one reads nothing;
	// publishing never waits for it.
	var got []int
	for i := range 5 {
		f.publish(t, seq(i*size+1, size)...)
		got = append(got, readUntil(t, fast, size)...)
	}
	require.Equal(t, seq(1, 5*size), got)

	// The stalled reader is told it fell behind, and stays so.
	_, err := stalled.Read(nil)
	require.ErrorIs(t, err, ErrBehind)
	_, err = stalled.Read(nil)
	require.True(t, errors.Is(err, ErrBehind))
}

func TestHubReaderExactlyRingSizeBehindReadsAll(t *testing.T) {
	t.Parallel()
	f := newTestFeed()
	h := NewHub(f.feed, 4, -1)
	slow, fast := h.Join(), h.Join()
	defer slow.Leave()
	defer fast.Leave()
	f.publish(t, 1, 2, 3, 4)
	readUntil(t, fast, 4)
	got, err := slow.Read(nil)
	require.NoError(t, err)
	require.Equal(t, []int{1, 2, 3, 4}, got)
}

func TestHubSubscribesWhileItHasReaders(t *testing.T) {
	t.Parallel()
	f := newTestFeed()
	h := NewHub(f.feed, 16, -1)
	subs, _ := f.counts()
	require.Equal(t, 0, subs, "no reader, no subscription")

	a := h.Join()
	<-f.subscribed
	b := h.Join()
	subs, active := f.counts()
	require.Equal(t, 1, subs)
	require.Equal(t, 1, active)
	a.Leave()
	_, active = f.counts()
	require.Equal(t, 1, active, "one reader is left")
	b.Leave()
	_, active = f.counts()
	require.Equal(t, 0, active, "the last reader ended the subscription")

	// Joining again subscribes again; the pump of the old subscription has
	// gone (goleak checks it).
	c := h.Join()
	<-f.subscribed
	f.publish(t, 7)
	require.Equal(t, []int{7}, readUntil(t, c, 1))
	c.Leave()
	subs, active = f.counts()
	require.Equal(t, 2, subs)
	require.Equal(t, 0, active)
}

func TestHubResubscribesAfterADropAndPublishesReset(t *testing.T) {
	t.Parallel()
	f := newTestFeed()
	h := NewHub(f.feed, 16, -1)
	r := h.Join()
	defer r.Leave()
	<-f.subscribed
	f.publish(t, 1, 2)
	require.Equal(t, []int{1, 2}, readUntil(t, r, 2))

	// The source drops the hub: it subscribes again and tells its readers
	// that items may have been lost.
	f.drop()
	<-f.subscribed
	require.Equal(t, []int{-1}, readUntil(t, r, 1))
	f.publish(t, 3)
	require.Equal(t, []int{3}, readUntil(t, r, 1))
	subs, active := f.counts()
	require.Equal(t, 2, subs)
	require.Equal(t, 1, active)
}

func TestHubConcurrentReadersSeeTheSameSequence(t *testing.T) {
	t.Parallel()
	f := newTestFeed()
	h := NewHub(f.feed, 4096, -1)
	const readers, items = 20, 2000
	var wg sync.WaitGroup
	results := make([][]int, readers)
	joined := make(chan *Reader[int], readers)
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := h.Join()
			defer r.Leave()
			joined <- r
			var got []int
			for len(got) < items {
				<-r.Wait()
				var err error
				if got, err = r.Read(got); err != nil {
					t.Error(err)
					return
				}
			}
			results[i] = got
		}()
	}
	for range readers {
		<-joined
	}
	for i := 0; i < items; i += 100 {
		f.publish(t, seq(i, 100)...)
	}
	wg.Wait()
	for i := range readers {
		require.Equal(t, seq(0, items), results[i], "reader %d", i)
	}
}
