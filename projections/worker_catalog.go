package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// WorkerCatalog is an in-memory replica of the worker read models
// (worker_view joined with the newest metrics sample and the labs count),
// kept current by the read-model notifications that every projection runner
// sends after its commits, from any instance. It answers the API's worker
// queries without a database round trip, gives worker commands the current
// state of the aggregate as a snapshot (the append's expected revision
// catches a stale one), and tells subscribers (the dashboard stream) what
// changed.
//
// A fleet has at most thousands of workers; the catalog keeps all of them.
type WorkerCatalog struct {
	pool    *pgxpool.Pool
	channel string
	log     *slog.Logger
	retry   time.Duration

	mu     sync.RWMutex
	byID   map[string]*CatalogEntry
	sorted []*CatalogEntry // by name, then id; nil when it must be rebuilt
	heads  map[ChangeKind]eventstore.Position
	gen    uint64                                        // counts the changes of byID; pages cached for an older one are stale
	told   map[ChangeKind]map[string]eventstore.Position // what subscribers were told, per kind and worker
	loaded bool
	subs   map[chan<- CatalogChange]struct{}

	ready atomic.Bool
	wake  chan struct{}
}

// CatalogEntry is one worker as the catalog holds it. Entries are
// immutable: a change replaces the entry.
type CatalogEntry struct {
	View application.WorkerView
	// Positions of the last lifecycle event, metrics sample and lab list
	// folded into the entry (zero when none).
	Lifecycle, Metrics, Labs eventstore.Position
	// encoded is the view's JSON, computed once per entry.
	encoded []byte
}

// JSON returns the entry's view encoded as JSON (computed once).
func (e *CatalogEntry) JSON() []byte { return e.encoded }

// ChangeKind says what changed about a worker.
type ChangeKind string

// Kinds of catalog changes.
const (
	ChangeSnapshot ChangeKind = "snapshot" // the worker's lifecycle state changed
	ChangeMetrics  ChangeKind = "metrics"  // a new metrics sample
	ChangeLabs     ChangeKind = "labs"     // a new lab list
	ChangeRemoved  ChangeKind = "removed"  // the worker is no longer managed
	ChangeReset    ChangeKind = "reset"    // everything may have changed (rebuild, reconnect)
)

// CatalogChange is one change. Per kind, positions only grow.
type CatalogChange struct {
	Kind     ChangeKind
	WorkerID string
	Position eventstore.Position
	Entry    *CatalogEntry
}

// CatalogOptions configure a WorkerCatalog.
type CatalogOptions struct {
	// Channel is the read-model NOTIFY channel (default
	// DefaultReadModelChannel).
	Channel string
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Retry is the pause before listening again after a lost connection
	// (default 1 s).
	Retry time.Duration
}

// NewWorkerCatalog returns a catalog reading from pool. Run fills it and
// keeps it current.
func NewWorkerCatalog(pool *pgxpool.Pool, opts CatalogOptions) *WorkerCatalog {
	if opts.Channel == "" {
		opts.Channel = DefaultReadModelChannel
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Retry <= 0 {
		opts.Retry = time.Second
	}
	return &WorkerCatalog{
		pool: pool, channel: opts.Channel, log: opts.Logger.With(slog.String("component", "worker_catalog")),
		retry: opts.Retry, byID: map[string]*CatalogEntry{}, subs: map[chan<- CatalogChange]struct{}{},
		heads: map[ChangeKind]eventstore.Position{},
		told: map[ChangeKind]map[string]eventstore.Position{
			ChangeSnapshot: {}, ChangeMetrics: {}, ChangeLabs: {},
		},
		wake: make(chan struct{}),
	}
}

// Ready reports whether the catalog has loaded the read models once.
func (c *WorkerCatalog) Ready() bool { return c.ready.Load() }

// WaitReady blocks until the catalog is ready or ctx ends.
func (c *WorkerCatalog) WaitReady(ctx context.Context) error {
	if c.Ready() {
		return nil
	}
	select {
	case <-c.wake:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run loads the read models and follows their notifications until ctx
// ends. A lost connection is retried; after it the catalog reloads what
// changed, since notifications may have been missed.
func (c *WorkerCatalog) Run(ctx context.Context) error {
	for {
		err := c.follow(ctx)
		if ctx.Err() != nil {
			return nil
		}
		c.log.WarnContext(ctx, "worker catalog lost its notifications; reloading", slog.Any("error", err))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(c.retry):
		}
	}
}

// follow listens, then (re)loads everything, then applies notifications.
// Listening before loading makes sure no change falls between the two.
func (c *WorkerCatalog) follow(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, c.pool.Config().ConnConfig)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{c.channel}.Sanitize()); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if err := c.reload(ctx, nil, "", eventstore.Position{}); err != nil {
		return err
	}
	if c.ready.CompareAndSwap(false, true) {
		close(c.wake)
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		note, err := ParseNotification(n.Payload)
		if err != nil {
			c.log.WarnContext(ctx, "ignoring a malformed read-model notification", slog.Any("error", err))
			continue
		}
		kind, ok := catalogProjections[note.Projection]
		switch {
		case !ok:
		case note.Rebuilt:
			err = c.reload(ctx, nil, "", eventstore.Position{})
		case len(note.IDs) > 0:
			var upto eventstore.Position
			if upto, err = eventstore.ParsePosition(note.Position); err != nil {
				c.log.WarnContext(ctx, "ignoring a read-model notification without a position", slog.Any("error", err))
				err = nil
				continue
			}
			err = c.reload(ctx, validIDs(note.IDs), kind, upto)
		}
		if err != nil {
			return err
		}
	}
}

// catalogProjections are the read models the catalog is made of, and the
// kind of change each one announces.
var catalogProjections = map[string]ChangeKind{
	"worker_view": ChangeSnapshot, "worker_metrics": ChangeMetrics, "worker_labs": ChangeLabs,
}

func validIDs(ids []string) []string {
	out := ids[:0:0]
	for _, id := range ids {
		if application.ValidID(id) {
			out = append(out, id)
		}
	}
	return out
}

// catalogSQL selects a worker row with its telemetry and their positions.
const catalogSQL = `SELECT w.id::text, w.revision, w.position_commit, w.position_prepare, w.created_by, w.state,
       m.sampled_at, m.ec2_system_status, m.ec2_instance_status, m.cloudwatch_cpu, m.cloudwatch_memory,
       m.cml_cpu, m.cml_memory, m.cml_disk, m.nodes_running::float8, m.nodes_total::float8,
       m.position_commit, m.position_prepare, l.labs_count, l.position_commit, l.position_prepare
  FROM worker_view w
  LEFT JOIN LATERAL (SELECT * FROM worker_metrics WHERE worker_id = w.id ORDER BY sampled_at DESC LIMIT 1) m ON true
  LEFT JOIN worker_labs l ON l.worker_id = w.id`

// reload reads the given workers (every worker when ids is nil) and
// publishes the changes of one kind, those up to the position of the
// notification that announced them (see apply).
func (c *WorkerCatalog) reload(ctx context.Context, ids []string, kind ChangeKind, upto eventstore.Position) error {
	sql, args := catalogSQL, []any{}
	if ids != nil {
		if len(ids) == 0 {
			return nil
		}
		sql += ` WHERE w.id = ANY($1::uuid[])`
		args = append(args, ids)
	}
	rows, err := c.pool.Query(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("load workers: %w", err)
	}
	fresh := map[string]*CatalogEntry{}
	for rows.Next() {
		e, err := scanCatalogEntry(rows)
		if err != nil {
			rows.Close()
			return err
		}
		fresh[e.View.ID] = e
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load workers: %w", err)
	}
	c.apply(ids == nil, fresh, kind, upto)
	return nil
}

func scanCatalogEntry(rows pgx.Rows) (*CatalogEntry, error) {
	var (
		e                 CatalogEntry
		id                string
		commit, prepare   int64
		createdBy, state  []byte
		mAt               *time.Time
		mSys, mInst       *string
		m                 application.MetricsSample
		mCommit, mPrepare *int64
		labs              *int32
		lCommit, lPrepare *int64
	)
	v := &e.View
	if err := rows.Scan(&id, &v.Revision, &commit, &prepare, &createdBy, &state,
		&mAt, &mSys, &mInst, &m.CloudWatchCPU, &m.CloudWatchMemory, &m.CMLCPU, &m.CMLMemory, &m.CMLDisk,
		&m.NodesRunning, &m.NodesTotal, &mCommit, &mPrepare, &labs, &lCommit, &lPrepare); err != nil {
		return nil, fmt.Errorf("load workers: %w", err)
	}
	if err := json.Unmarshal(state, &v.State); err != nil {
		return nil, fmt.Errorf("decode worker %s: %w", id, err)
	}
	_ = json.Unmarshal(createdBy, &v.CreatedBy)
	e.Lifecycle = eventstore.Position{Commit: uint64(commit), Prepare: uint64(prepare)}
	v.Position = e.Lifecycle.String()
	if mAt != nil {
		m.At, m.Samples = mAt.UTC(), 1
		if mSys != nil {
			m.EC2SystemStatus = *mSys
		}
		if mInst != nil {
			m.EC2InstanceStatus = *mInst
		}
		v.LatestMetrics = &m
		e.Metrics = eventstore.Position{Commit: uint64(*mCommit), Prepare: uint64(*mPrepare)}
	}
	if labs != nil {
		n := int(*labs)
		v.LabsCount = &n
		e.Labs = eventstore.Position{Commit: uint64(*lCommit), Prepare: uint64(*lPrepare)}
	}
	encoded, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode worker %s: %w", id, err)
	}
	e.encoded = encoded
	return &e, nil
}

// apply swaps in fresh entries and tells subscribers what changed.
//
// Each kind of change comes from one projection, whose runner commits its
// batches in log order and announces each with the batch's position. A
// change is announced when the notification of its own projection is
// handled, and only if its position is not past that notification's: a
// reload triggered by one projection can show another's newer data, and
// announcing it early could put it before a change of the same kind that is
// still to come at a lower position. So, per kind, subscribers see
// positions that only grow, and a subscriber that resumes from the last
// position of each kind it handled (ChangedSince) misses nothing.
//
// With all (a full load, a rebuild, a reconnection), workers absent from
// fresh are dropped and subscribers get one ChangeReset: they catch up with
// ChangedSince.
func (c *WorkerCatalog) apply(all bool, fresh map[string]*CatalogEntry, kind ChangeKind, upto eventstore.Position) {
	var changes []CatalogChange
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, e := range fresh {
		c.byID[id] = e
		for k, p := range map[ChangeKind]eventstore.Position{ChangeSnapshot: e.Lifecycle, ChangeMetrics: e.Metrics, ChangeLabs: e.Labs} {
			if c.head(k).Less(p) {
				c.heads[k] = p
			}
		}
		if all {
			continue
		}
		p := e.position(kind)
		told := c.told[kind][id]
		if !told.Less(p) || upto.Less(p) {
			continue
		}
		c.told[kind][id] = p
		k := kind
		if k == ChangeSnapshot && e.View.Status == worker.StatusRemoved {
			k = ChangeRemoved
		}
		changes = append(changes, CatalogChange{Kind: k, WorkerID: id, Position: p, Entry: e})
	}
	if all {
		for id := range c.byID {
			if _, ok := fresh[id]; !ok {
				delete(c.byID, id)
			}
		}
		// A full load reads every read model in one snapshot: per kind,
		// whatever commits later has a higher position, so what it shows
		// counts as told.
		for k := range c.told {
			clear(c.told[k])
			for id, e := range c.byID {
				if p := e.position(k); !p.IsZero() {
					c.told[k][id] = p
				}
			}
		}
		if c.loaded {
			changes = append(changes, CatalogChange{Kind: ChangeReset})
		}
		c.loaded = true
	}
	c.sorted = nil
	if len(fresh) > 0 || all {
		c.gen++
	}
	sortChanges(changes)
	for ch := range c.subs {
		for _, change := range changes {
			select {
			case ch <- change:
				continue
			default:
			}
			// A subscriber that falls behind is dropped; it resumes from
			// its last positions (see Subscribe).
			delete(c.subs, ch)
			close(ch)
			break
		}
	}
}

func (c *WorkerCatalog) head(k ChangeKind) eventstore.Position { return c.heads[k] }

// position returns the entry's position for a kind of change.
func (e *CatalogEntry) position(k ChangeKind) eventstore.Position {
	if e == nil {
		return eventstore.Position{}
	}
	switch k {
	case ChangeMetrics:
		return e.Metrics
	case ChangeLabs:
		return e.Labs
	}
	return e.Lifecycle
}

func sortChanges(changes []CatalogChange) {
	slices.SortFunc(changes, func(a, b CatalogChange) int {
		switch {
		case a.Position.Less(b.Position):
			return -1
		case b.Position.Less(a.Position):
			return 1
		}
		return strings.Compare(a.WorkerID, b.WorkerID)
	})
}

// Subscribe returns a channel of changes with room for buffer changes, and
// a function that ends the subscription. A subscriber that does not keep up
// has its channel closed: it must then resubscribe and catch up with
// ChangedSince from the last position it handled.
func (c *WorkerCatalog) Subscribe(buffer int) (<-chan CatalogChange, func()) {
	ch := make(chan CatalogChange, buffer)
	c.mu.Lock()
	c.subs[ch] = struct{}{}
	c.mu.Unlock()
	return ch, func() {
		c.mu.Lock()
		if _, ok := c.subs[ch]; ok {
			delete(c.subs, ch)
			close(ch)
		}
		c.mu.Unlock()
	}
}

// Marks are the positions up to which a subscriber has handled each kind
// of change. It is what the dashboard stream uses as its event id.
type Marks struct {
	Lifecycle, Metrics, Labs eventstore.Position
}

// Advance records a handled change.
func (m *Marks) Advance(c CatalogChange) {
	switch c.Kind {
	case ChangeMetrics:
		if m.Metrics.Less(c.Position) {
			m.Metrics = c.Position
		}
	case ChangeLabs:
		if m.Labs.Less(c.Position) {
			m.Labs = c.Position
		}
	case ChangeSnapshot, ChangeRemoved:
		if m.Lifecycle.Less(c.Position) {
			m.Lifecycle = c.Position
		}
	}
}

// Handled reports whether a change is at or before the marks of its kind.
func (m Marks) Handled(c CatalogChange) bool {
	switch c.Kind {
	case ChangeMetrics:
		return !m.Metrics.Less(c.Position)
	case ChangeLabs:
		return !m.Labs.Less(c.Position)
	case ChangeSnapshot, ChangeRemoved:
		return !m.Lifecycle.Less(c.Position)
	}
	return false
}

// String formats the marks as "lifecycle.metrics.labs" positions;
// ParseMarks reads them back.
func (m Marks) String() string {
	return m.Lifecycle.String() + "." + m.Metrics.String() + "." + m.Labs.String()
}

// ParseMarks reads marks formatted by Marks.String.
func ParseMarks(s string) (Marks, error) {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return Marks{}, fmt.Errorf("marks %q: want three positions separated by dots", s)
	}
	var m Marks
	for i, dst := range []*eventstore.Position{&m.Lifecycle, &m.Metrics, &m.Labs} {
		p, err := eventstore.ParsePosition(parts[i])
		if err != nil {
			return Marks{}, fmt.Errorf("marks %q: %w", s, err)
		}
		*dst = p
	}
	return m, nil
}

// Head returns the highest position of each kind folded into the catalog.
func (c *WorkerCatalog) Head() Marks {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return Marks{Lifecycle: c.heads[ChangeSnapshot], Metrics: c.heads[ChangeMetrics], Labs: c.heads[ChangeLabs]}
}

// ChangedSince returns, in position order, the latest announced change of
// each kind of each worker that is past the given marks, with the worker's
// current entry.
//
// Positions are those announced to subscribers, not those of the entries:
// a reload for one kind of change can show another kind's newer data
// before that change is announced (see apply), and a subscriber whose
// marks jumped to such a position would then skip changes of other
// workers announced later at lower positions. An entry may therefore be
// newer than its change's position; the change announced later is sent
// again, with the same or newer data.
func (c *WorkerCatalog) ChangedSince(m Marks) []CatalogChange {
	c.mu.RLock()
	var out []CatalogChange
	for id, e := range c.byID {
		kind := ChangeSnapshot
		if e.View.Status == worker.StatusRemoved {
			kind = ChangeRemoved
		}
		for _, ch := range []CatalogChange{
			{Kind: kind, WorkerID: id, Position: c.told[ChangeSnapshot][id], Entry: e},
			{Kind: ChangeMetrics, WorkerID: id, Position: c.told[ChangeMetrics][id], Entry: e},
			{Kind: ChangeLabs, WorkerID: id, Position: c.told[ChangeLabs][id], Entry: e},
		} {
			if !ch.Position.IsZero() && !m.Handled(ch) {
				out = append(out, ch)
			}
		}
	}
	c.mu.RUnlock()
	sortChanges(out)
	return out
}

// Entry returns one worker.
func (c *WorkerCatalog) Entry(id string) (*CatalogEntry, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.byID[id]
	return e, ok
}

// Entries returns every worker, ordered by name then id.
func (c *WorkerCatalog) Entries() []*CatalogEntry {
	c.mu.RLock()
	sorted := c.sorted
	c.mu.RUnlock()
	if sorted != nil {
		return sorted
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sorted == nil {
		c.sorted = make([]*CatalogEntry, 0, len(c.byID))
		for _, e := range c.byID {
			c.sorted = append(c.sorted, e)
		}
		slices.SortFunc(c.sorted, func(a, b *CatalogEntry) int {
			if n := strings.Compare(a.View.Name, b.View.Name); n != 0 {
				return n
			}
			return strings.Compare(a.View.ID, b.View.ID)
		})
	}
	return c.sorted
}

// CatalogReader answers application.WorkerReadModel from a catalog once it
// is ready, and from the database before (start-up). It also encodes pages
// of workers for the API and keeps the most recent ones until a worker
// changes.
type CatalogReader struct {
	catalog *WorkerCatalog
	db      *WorkerReader

	mu    sync.Mutex
	pages map[application.WorkerFilter]cachedPage
}

type cachedPage struct {
	gen  uint64
	json []byte
}

// maxCachedPages bounds the encoded pages kept (a page of the whole fleet
// is about 1 MB per 1,000 workers).
const maxCachedPages = 16

var (
	_ application.WorkerReadModel   = (*CatalogReader)(nil)
	_ application.WorkerPageEncoder = (*CatalogReader)(nil)
)

// EncodedWorkerPage implements application.WorkerPageEncoder: the page of
// ListWorkers as JSON, served from a cache while no worker changed.
func (r *CatalogReader) EncodedWorkerPage(ctx context.Context, f application.WorkerFilter) ([]byte, error) {
	gen := r.catalog.generation()
	r.mu.Lock()
	p, ok := r.pages[f]
	r.mu.Unlock()
	if ok && p.gen == gen {
		return p.json, nil
	}
	items, total, err := r.ListWorkers(ctx, f)
	if err != nil {
		return nil, err
	}
	size := 64
	for _, v := range items {
		b, _ := v.EncodedJSON()
		size += len(b) + 1
	}
	buf := make([]byte, 0, size)
	buf = append(buf, `{"items":[`...)
	for i, v := range items {
		if i > 0 {
			buf = append(buf, ',')
		}
		b, err := v.MarshalJSON()
		if err != nil {
			return nil, err
		}
		buf = append(buf, b...)
	}
	buf = fmt.Appendf(buf, `],"total":%d,"limit":%d,"offset":%d}`, total, f.Limit, f.Offset)
	if r.catalog.Ready() {
		r.mu.Lock()
		if r.pages == nil || len(r.pages) >= maxCachedPages {
			r.pages = map[application.WorkerFilter]cachedPage{}
		}
		r.pages[f] = cachedPage{gen: gen, json: buf}
		r.mu.Unlock()
	}
	return buf, nil
}

// generation counts the catalog's changes.
func (c *WorkerCatalog) generation() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

// NewCatalogReader returns a reader over the catalog, falling back to db.
func NewCatalogReader(c *WorkerCatalog, db *WorkerReader) *CatalogReader {
	return &CatalogReader{catalog: c, db: db}
}

// GetWorker implements application.WorkerReadModel.
func (r *CatalogReader) GetWorker(ctx context.Context, id string) (application.WorkerView, error) {
	if !r.catalog.Ready() {
		return r.db.GetWorker(ctx, id)
	}
	e, ok := r.catalog.Entry(id)
	if !ok {
		return application.WorkerView{}, fmt.Errorf("worker %s: %w", id, domain.ErrNotFound)
	}
	return e.View.WithJSON(e.encoded), nil
}

// FindByInstance implements application.WorkerReadModel.
func (r *CatalogReader) FindByInstance(ctx context.Context, region, instanceID string) (application.WorkerView, bool, error) {
	if !r.catalog.Ready() {
		return r.db.FindByInstance(ctx, region, instanceID)
	}
	var found *CatalogEntry
	for _, e := range r.catalog.Entries() {
		v := e.View
		if v.Region == region && v.InstanceID == instanceID && v.Status != worker.StatusTerminated && v.Status != worker.StatusRemoved &&
			(found == nil || found.View.CreatedAt.Before(v.CreatedAt)) {
			found = e
		}
	}
	if found == nil {
		return application.WorkerView{}, false, nil
	}
	return found.View.WithJSON(found.encoded), true, nil
}

// ListWorkers implements application.WorkerReadModel with the same rules as
// WorkerReader.ListWorkers: filters, name order, paging and the total.
func (r *CatalogReader) ListWorkers(ctx context.Context, f application.WorkerFilter) ([]application.WorkerView, int, error) {
	if !r.catalog.Ready() {
		return r.db.ListWorkers(ctx, f)
	}
	q := strings.ToLower(strings.TrimSpace(f.Query))
	out := []application.WorkerView{}
	total := 0
	for _, e := range r.catalog.Entries() {
		v := &e.View
		switch {
		case f.Region != "" && v.Region != f.Region:
			continue
		case f.Status != "" && v.Status != f.Status:
			continue
		case f.Status == "" && !f.IncludeTerminated && (v.Status == worker.StatusTerminated || v.Status == worker.StatusRemoved):
			continue
		case q != "" && !strings.Contains(strings.ToLower(v.Name), q) && !strings.Contains(strings.ToLower(v.InstanceID), q) &&
			!strings.Contains(strings.ToLower(v.Region), q) && v.ID != q:
			continue
		}
		if total >= f.Offset && len(out) < f.Limit {
			out = append(out, v.WithJSON(e.encoded))
		}
		total++
	}
	return out, total, nil
}

// Snapshot returns the worker aggregate as the catalog last saw it, for a
// command to decide on (the repository appends with its revision, so a
// stale snapshot costs one retry, never a wrong decision).
func (c *WorkerCatalog) Snapshot(id string) (*worker.Worker, bool) {
	if !c.Ready() {
		return nil, false
	}
	e, ok := c.Entry(id)
	if !ok {
		return nil, false
	}
	return worker.FromState(e.View.State, e.View.Revision), true
}
