// Package esdb is the EventStoreDB adapter of the event store port
// (application/eventstore), built on github.com/EventStore/EventStore-Client-Go/v4.
// KurrentDB servers speak the same protocol.
//
// Streams map one to one. Positions are the server's commit and prepare
// positions, unchanged. Events of system streams and system event types
// (names starting with "$") never reach the port's callers, and callers may
// not write them. Every read has a deadline (Options.ReadTimeout); streaming
// calls end with their context. Subscriptions read $all with a server-side
// filter, turn the server's checkpoints into checkpoint-only messages and
// resubscribe from the last delivered position when the connection drops.
// Telemetry streams get $maxAge stream metadata (Options.TelemetryMaxAge).
// docs/decisions/0008-eventstoredb-positions-and-retention.md explains the
// mapping between the two stores.
package esdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
)

// DefaultReadTimeout bounds every read when Options.ReadTimeout is zero.
const DefaultReadTimeout = 10 * time.Second

// closeWait is how long Close waits for calls still inside the client before
// it closes the client.
const closeWait = 10 * time.Second

// ErrClosed is returned by operations on a closed Store and ends its
// subscriptions.
var ErrClosed = errors.New("event store closed")

// Options configure a Store.
type Options struct {
	// URL is the connection string, for example
	// esdb://host:2113?tls=false or esdb+discover://user:pass@host:2113;
	// the kurrentdb:// and kurrentdb+discover:// schemes are accepted too.
	// Required. Credentials in it are never logged.
	URL string
	// Logger receives the adapter's and the client's logs. nil means
	// slog.Default().
	Logger *slog.Logger
	// ReadTimeout is the deadline of every read: ReadStream, ReadAll, stream
	// metadata, and a subscription's wait for the server's confirmation.
	// Default DefaultReadTimeout.
	ReadTimeout time.Duration
	// TelemetryMaxAge is the $maxAge stream metadata of telemetry streams
	// (worker_telemetry-*), set before their first write from this process;
	// the server hides older events and scavenging deletes them. It is
	// rounded up to whole seconds. Zero keeps telemetry forever.
	TelemetryMaxAge time.Duration
}

// clientGen is one esdb.Client and the calls in flight on it.
type clientGen struct {
	client *esdb.Client
	calls  sync.WaitGroup
	n      int
}

// Store is the EventStoreDB event store. It is safe for concurrent use.
type Store struct {
	conf          *esdb.Configuration
	log           *slog.Logger
	readTimeout   time.Duration
	readWindow    int // events one ReadAll considers at most: readAllWindow
	maxAgeSeconds int64

	// ctx ends operations and subscriptions; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc
	subs   sync.WaitGroup // subscriptions
	bg     sync.WaitGroup // closings of retired clients

	mu     sync.Mutex // guards closed, gen, the counts and subs.Add against Close
	closed bool
	gen    *clientGen
	// created and closedClients count the clients made and closed.
	created, closedClients int

	// retained holds the telemetry streams whose $maxAge is known to be set.
	retained sync.Map
}

var _ eventstore.Store = (*Store)(nil)

// Open connects to the server named by opts.URL and checks that it answers
// a read. Close the store when done.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ReadTimeout == 0 {
		opts.ReadTimeout = DefaultReadTimeout
	}
	if opts.ReadTimeout < 0 {
		return nil, fmt.Errorf("open eventstoredb store: negative read timeout %s", opts.ReadTimeout)
	}
	if opts.TelemetryMaxAge < 0 {
		return nil, fmt.Errorf("open eventstoredb store: negative telemetry max age %s", opts.TelemetryMaxAge)
	}
	url, ok := clientURL(opts.URL)
	if !ok {
		return nil, errors.New("open eventstoredb store: the URL must start with esdb://, esdb+discover://, kurrentdb:// or kurrentdb+discover://")
	}
	conf, err := esdb.ParseConnectionString(url)
	if err != nil {
		// The parser's message may quote the URL, credentials included.
		return nil, errors.New("open eventstoredb store: the URL is not a valid connection string")
	}
	log := opts.Logger.With(slog.String("component", "eventstore.esdb"))
	conf.Logger = clientLogger(log)
	s := &Store{
		conf:          conf,
		log:           log,
		readTimeout:   opts.ReadTimeout,
		readWindow:    readAllWindow,
		maxAgeSeconds: int64((opts.TelemetryMaxAge + time.Second - 1) / time.Second),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	// The first read goes through a client with the URL's limit of
	// discovery attempts (10 by default), so that Open fails within seconds
	// when nothing answers.
	probe, err := esdb.NewClient(conf)
	if err != nil {
		s.cancel()
		return nil, fmt.Errorf("open eventstoredb store: %w", err)
	}
	s.gen = &clientGen{client: probe}
	s.created = 1
	if err := s.Ping(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("open eventstoredb store at %s: %w", s.address(), err)
	}
	if !strings.Contains(strings.ToLower(opts.URL), "maxdiscoverattempts=") {
		// After that the client keeps discovering the node while it is
		// down: calls wait for it (each within its context). By default the
		// client stops after 10 failed attempts (about a second when nothing
		// listens), then fails every call and strands for good the calls
		// queued during the last attempts.
		long := *conf
		long.MaxDiscoverAttempts = math.MaxInt32
		conf = &long
	}
	client, err := esdb.NewClient(conf)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("open eventstoredb store: %w", err)
	}
	s.mu.Lock()
	first := s.gen
	s.conf, s.gen = conf, &clientGen{client: client, n: first.n + 1}
	s.created++
	s.bg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.bg.Done()
		s.closeClient(first)
	}()
	log.InfoContext(ctx, "eventstoredb store open", slog.String("address", s.address()))
	return s, nil
}

// clientURL returns the connection string in the form the client parses:
// KurrentDB's schemes name the same protocol as EventStoreDB's.
func clientURL(url string) (string, bool) {
	for _, scheme := range []struct{ from, to string }{
		{"esdb://", "esdb://"},
		{"esdb+discover://", "esdb+discover://"},
		{"kurrentdb://", "esdb://"},
		{"kurrentdb+discover://", "esdb+discover://"},
	} {
		if rest, ok := strings.CutPrefix(url, scheme.from); ok {
			return scheme.to + rest, true
		}
	}
	return "", false
}

// address names the server without credentials, for logs and errors.
func (s *Store) address() string {
	if s.conf.Address != "" {
		return s.conf.Address
	}
	seeds := make([]string, len(s.conf.GossipSeeds))
	for i, seed := range s.conf.GossipSeeds {
		seeds[i] = seed.String()
	}
	return strings.Join(seeds, ",")
}

// pingStream is read by Ping: any user may read it, and it normally does not
// exist, which the server reports like any answer.
const pingStream = "cmlcm-connection-check"

// Ping checks that the server answers a read within the read timeout, for
// readiness checks.
func (s *Store) Ping(ctx context.Context) error {
	_, err := s.ReadStream(ctx, pingStream, 0, 1)
	return err
}

// Close ends the subscriptions, waits for the calls in flight (up to 10 s)
// and closes the client. It is idempotent.
func (s *Store) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	g := s.gen
	s.mu.Unlock()

	s.cancel()
	s.subs.Wait()
	s.closeClient(g)
	s.bg.Wait()
}

// acquire returns the current client and counts a call on it.
func (s *Store) acquire() (*clientGen, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	s.gen.calls.Add(1)
	return s.gen, nil
}

// retire replaces g by a new client, once, and closes g when the calls in
// flight on it are over. A client is retired when a call on it failed with
// Unavailable or when it gave up reconnecting. Its own recovery is not used:
// after an Unavailable call it discovers the node again and replaces its
// connection without closing the old one (a leak of a gRPC connection per
// failure), and after a failed discovery it fails every later call.
func (s *Store) retire(g *clientGen, cause error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.gen != g {
		return
	}
	client, err := esdb.NewClient(s.conf)
	if err != nil { // the configuration was accepted once; this cannot happen
		s.log.Error("eventstoredb: cannot create a new client", slog.Any("error", err))
		return
	}
	s.gen = &clientGen{client: client, n: g.n + 1}
	s.created++
	s.log.Warn("eventstoredb: connection failed; continuing with a new client",
		slog.String("address", s.address()), slog.Int("client", s.gen.n), slog.Any("error", cause))
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		s.closeClient(g)
	}()
}

// closeClient closes g's client once no call is in flight on it: closing it
// under a call blocked inside would make that call panic (it would send on
// the channel Close closes). Once the store is closing it waits closeWait
// more at most, then leaves the client open.
func (s *Store) closeClient(g *clientGen) {
	done := make(chan struct{})
	go func() {
		g.calls.Wait()
		close(done)
	}()
	closeIt := func() {
		_ = g.client.Close()
		s.mu.Lock()
		s.closedClients++
		s.mu.Unlock()
	}
	select {
	case <-done:
		closeIt()
		return
	case <-s.ctx.Done():
	}
	timer := time.NewTimer(closeWait)
	defer timer.Stop()
	select {
	case <-done:
		closeIt()
	case <-timer.C:
		s.log.Warn("eventstoredb: calls still blocked in a client; leaving it open",
			slog.Int("client", g.n), slog.Duration("waited", closeWait))
	}
}

// opContext derives the context of one operation: it ends with ctx or when
// the store closes (its cause is then ErrClosed).
func (s *Store) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(s.ctx, func() { cancel(ErrClosed) })
	return ctx, func() {
		stop()
		cancel(nil)
	}
}

// call runs fn on the current client in a goroutine of its own and returns
// when fn does or when ctx ends, whichever comes first. The client can block
// a call regardless of its context (its connection loop serialises node
// discovery and reconnect requests), and callers must not block with it.
// A client whose connection failed is retired (see retire). When it had
// given up reconnecting, fn is tried once more on the new client: the old one
// failed the call before sending anything.
func (s *Store) call(ctx context.Context, fn func(ctx context.Context, c *esdb.Client) error) error {
	_, err := s.callOn(ctx, fn)
	return err
}

// callOn is call, also returning the client fn ran on last (nil when none).
func (s *Store) callOn(ctx context.Context, fn func(ctx context.Context, c *esdb.Client) error) (*clientGen, error) {
	for attempt := 0; ; attempt++ {
		g, err := s.acquire()
		if err != nil {
			return nil, err
		}
		done := make(chan error, 1)
		go func() {
			defer g.calls.Done()
			done <- fn(ctx, g.client)
		}()
		select {
		case err = <-done:
		case <-ctx.Done():
			select {
			case err = <-done: // finished meanwhile: report its outcome
			default:
				return g, context.Cause(ctx)
			}
		}
		if err != nil && ctx.Err() == nil && deadlineExceeded(err) {
			// gRPC may report ctx's deadline a moment before ctx does.
			waitDone(ctx, 100*time.Millisecond)
		}
		if err != nil && ctx.Err() != nil {
			// The call failed because ctx ended: report that, not the
			// client's rendering of it.
			return g, context.Cause(ctx)
		}
		switch {
		case clientGaveUp(err):
			s.retire(g, err)
			if attempt == 0 {
				continue
			}
		case unavailable(err):
			// The request may have reached the server: no retry here (the
			// caller's retry of an append is idempotent by its event ids).
			s.retire(g, err)
		}
		return g, err
	}
}

// clientGaveUp reports whether err says that the client stopped
// reconnecting: it then fails every later call with ErrorCodeConnectionClosed.
func clientGaveUp(err error) bool {
	if err == nil {
		return false
	}
	return isConnectionClosed(err) || strings.Contains(err.Error(), "maximum discovery attempt count reached")
}

// deadlineExceeded reports whether err is a gRPC deadline.
func deadlineExceeded(err error) bool {
	var e *esdb.Error
	return status.Code(err) == codes.DeadlineExceeded || errors.As(err, &e) && e.Code() == esdb.ErrorCodeDeadlineExceeded
}

// waitDone waits until ctx ends, for at most d, when ctx has a deadline.
func waitDone(ctx context.Context, d time.Duration) {
	if _, ok := ctx.Deadline(); !ok {
		return
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
	case <-timer.C:
	}
}

// unavailable reports whether err is the server or connection being
// unavailable.
func unavailable(err error) bool {
	var e *esdb.Error
	return status.Code(err) == codes.Unavailable || errors.As(err, &e) && e.Code() == esdb.ErrorUnavailable
}

func isConnectionClosed(err error) bool {
	var e *esdb.Error
	return errors.As(err, &e) && e.Code() == esdb.ErrorCodeConnectionClosed
}

// hidden reports whether an event belongs to the server (a system stream or
// a system event type): such events never reach the port's callers.
func hidden(stream, eventType string) bool {
	return strings.HasPrefix(stream, "$") || strings.HasPrefix(eventType, "$")
}

// toPosition converts a server position.
func toPosition(p esdb.Position) eventstore.Position {
	return eventstore.Position{Commit: p.Commit, Prepare: p.Prepare}
}

// allPosition converts a port position to a $all position: the zero value is
// the start of the log.
func allPosition(p eventstore.Position) esdb.AllPosition {
	if p.IsZero() {
		return esdb.Start{}
	}
	return esdb.Position{Commit: p.Commit, Prepare: p.Prepare}
}

// toRecorded converts an event read from the server.
func toRecorded(e *esdb.RecordedEvent) eventstore.RecordedEvent {
	return eventstore.RecordedEvent{
		ID:         e.EventID.String(),
		Stream:     e.StreamID,
		Revision:   e.EventNumber,
		Position:   toPosition(e.Position),
		Type:       e.EventType,
		Data:       e.Data,
		Metadata:   e.UserMetadata,
		RecordedAt: e.CreatedDate,
	}
}
