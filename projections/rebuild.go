package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
)

// Rebuild works on these physical tables next to each owned table t.
const (
	shadowSuffix = "__rebuild" // t__rebuild: built while t keeps serving
	oldSuffix    = "__old"     // t__old: t during the swap, dropped before it commits
	maxIdentLen  = 63          // Postgres' NAMEDATALEN - 1
)

// Defaults of RebuildOptions.
const (
	DefaultRebuildBatchSize = 2000
	DefaultSwapLockTimeout  = 5 * time.Second
	DefaultSwapAttempts     = 5
)

// ErrRebuildInProgress is returned (wrapped) by Rebuild when another rebuild
// of the same projection is running, in this or another process.
var ErrRebuildInProgress = errors.New("a rebuild of this projection is already running")

// RebuildOptions configures Rebuild.
type RebuildOptions struct {
	// Logger receives progress logs; nil means slog.Default().
	Logger *slog.Logger
	// BatchSize is the number of events read and applied per transaction
	// while catching up (default 2,000).
	BatchSize int
	// ReadModelChannel is the NOTIFY channel (default
	// DefaultReadModelChannel).
	ReadModelChannel string
	// SwapLockTimeout bounds how long the swap waits for a lock (the
	// checkpoint row, or a live table that a long query is reading); while it
	// waits, new readers of that table queue behind it. On timeout the swap
	// is rolled back, the shadow tables catch up again and the swap is
	// retried, up to SwapAttempts times. Defaults: 5 s, 5 attempts.
	SwapLockTimeout time.Duration
	SwapAttempts    int
	// BeforeSwap, a test hook, is called after the catch-up, before each
	// swap attempt.
	BeforeSwap func(ctx context.Context) error
}

func (o RebuildOptions) withDefaults() RebuildOptions {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultRebuildBatchSize
	}
	if o.ReadModelChannel == "" {
		o.ReadModelChannel = DefaultReadModelChannel
	}
	if o.SwapLockTimeout <= 0 {
		o.SwapLockTimeout = DefaultSwapLockTimeout
	}
	if o.SwapAttempts <= 0 {
		o.SwapAttempts = DefaultSwapAttempts
	}
	return o
}

// RebuildResult describes a completed rebuild.
type RebuildResult struct {
	// Events is the number of events applied to the new tables.
	Events int64
	// Duration is the wall time of the whole rebuild.
	Duration time.Duration
	// EventsPerSecond is Events / Duration.
	EventsPerSecond float64
	// Position is the checkpoint the new tables are up to date with.
	Position eventstore.Position
}

// Rebuild recomputes projection p from the start of the log into fresh
// tables and swaps them for the live ones, which keep serving meanwhile:
//
//  1. For each owned table t it creates t__rebuild (LIKE t INCLUDING ALL),
//     dropping a leftover of an interrupted rebuild first.
//  2. It reads the log with p's filter in batches of BatchSize and applies
//     each batch to the shadow tables in its own transaction, keeping the
//     position in memory (no checkpoint row), then ANALYZEs the shadows.
//  3. One swap transaction locks the live checkpoint row FOR UPDATE, so no
//     runner of p (in any process) can commit a batch; applies the events
//     that arrived since; renames t to t__old and t__rebuild to t and drops
//     t__old; gives the new table's indexes, constraints and identity
//     sequences the names the old ones had (so the next rebuild does not
//     collide) and moves serial sequences over; sets the checkpoint to the
//     rebuilt position; and sends a Notification with Rebuilt set. A live
//     runner's next batch then finds the checkpoint moved (its fencing
//     check), rolls back and resumes from the new checkpoint.
//
// Readers are never interrupted: every rename and the drop happen in that
// single transaction, so a query sees either the old tables or the new ones,
// never a missing or half-built table. ALTER TABLE takes an ACCESS EXCLUSIVE
// lock, so readers that arrive during the swap wait for its commit (the swap
// itself only waits SwapLockTimeout for readers already running) and then
// read the new table. Prepared statements (pgx caches one per query text and
// connection) stay valid: Postgres re-resolves the table name and re-plans a
// cached statement when a relation it uses is renamed or dropped, and the
// new table has the same columns, so the result type does not change.
//
// The owned tables must not have foreign keys, triggers, views depending on
// them or grants that matter: CREATE TABLE ... LIKE does not copy them. A
// rebuild of the same projection running elsewhere makes Rebuild fail with
// ErrRebuildInProgress.
func Rebuild(ctx context.Context, store eventstore.Store, pool *pgxpool.Pool, p Projection, opts RebuildOptions) (RebuildResult, error) {
	opts = opts.withDefaults()
	started := time.Now()
	name := p.Name()
	tables := p.Tables()
	if err := checkTableNames(tables); err != nil {
		return RebuildResult{}, fmt.Errorf("rebuild %s: %w", name, err)
	}

	// One rebuild per projection at a time: a session lock on a connection
	// of our own, released when it closes.
	lockConn, err := pgx.ConnectConfig(ctx, pool.Config().ConnConfig)
	if err != nil {
		return RebuildResult{}, fmt.Errorf("rebuild %s: connect: %w", name, err)
	}
	defer closeConn(lockConn)
	var got bool
	if err := lockConn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, advisoryKey("rebuild", name)).Scan(&got); err != nil {
		return RebuildResult{}, fmt.Errorf("rebuild %s: take the rebuild lock: %w", name, err)
	}
	if !got {
		return RebuildResult{}, fmt.Errorf("rebuild %s: %w", name, ErrRebuildInProgress)
	}

	rb := &rebuilder{
		store:  store,
		pool:   pool,
		p:      p,
		opts:   opts,
		log:    opts.Logger.With(slog.String("projection", name)),
		name:   name,
		filter: p.Filter(),
		tables: tables,
		shadow: Tables{},
	}
	for _, t := range tables {
		rb.shadow[t] = t + shadowSuffix
	}
	rb.log.InfoContext(ctx, "rebuild: starting", slog.Any("tables", tables))
	res, err := rb.run(ctx)
	if err != nil {
		rb.dropShadows(context.WithoutCancel(ctx))
		return RebuildResult{}, fmt.Errorf("rebuild %s: %w", name, err)
	}
	res.Duration = time.Since(started)
	if s := res.Duration.Seconds(); s > 0 {
		res.EventsPerSecond = float64(res.Events) / s
	}
	rb.log.InfoContext(ctx, "rebuild: done", slog.Int64("events", res.Events), slog.Duration("took", res.Duration),
		slog.Float64("events_per_second", res.EventsPerSecond), slog.String("position", res.Position.String()))
	return res, nil
}

func checkTableNames(tables []string) error {
	if len(tables) == 0 {
		return errors.New("the projection owns no tables")
	}
	seen := map[string]bool{}
	for _, t := range tables {
		switch {
		case t == "" || strings.ContainsRune(t, 0):
			return fmt.Errorf("invalid table name %q", t)
		case len(t)+len(shadowSuffix) > maxIdentLen:
			return fmt.Errorf("table name %q is too long for its shadow name (at most %d bytes)", t, maxIdentLen-len(shadowSuffix))
		case seen[t]:
			return fmt.Errorf("table %q listed twice", t)
		}
		seen[t] = true
	}
	return nil
}

type rebuilder struct {
	store  eventstore.Store
	pool   *pgxpool.Pool
	p      Projection
	opts   RebuildOptions
	log    *slog.Logger
	name   string
	filter eventstore.Filter
	tables []string
	shadow Tables

	pos    eventstore.Position // the shadow tables are up to date with it
	events int64               // applied to the shadow tables (committed)
}

func (rb *rebuilder) run(ctx context.Context) (RebuildResult, error) {
	if err := rb.createShadows(ctx); err != nil {
		return RebuildResult{}, err
	}
	for attempt := 1; ; attempt++ {
		if err := rb.catchUp(ctx); err != nil {
			return RebuildResult{}, err
		}
		if attempt == 1 {
			for _, t := range rb.tables {
				if _, err := rb.pool.Exec(ctx, "ANALYZE "+rb.shadow.Ident(t)); err != nil {
					return RebuildResult{}, fmt.Errorf("analyze %s: %w", rb.shadow.Name(t), err)
				}
			}
		}
		if rb.opts.BeforeSwap != nil {
			if err := rb.opts.BeforeSwap(ctx); err != nil {
				return RebuildResult{}, fmt.Errorf("before swap: %w", err)
			}
		}
		err := rb.swap(ctx)
		if err == nil {
			return RebuildResult{Events: rb.events, Position: rb.pos}, nil
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "55P03" || attempt >= rb.opts.SwapAttempts { // lock_not_available
			return RebuildResult{}, err
		}
		rb.log.WarnContext(ctx, "rebuild: swap timed out waiting for a lock; catching up and retrying",
			slog.Int("attempt", attempt), slog.Any("error", err))
	}
}

// createShadows creates the empty shadow tables, dropping leftovers.
func (rb *rebuilder) createShadows(ctx context.Context) error {
	return pgx.BeginFunc(ctx, rb.pool, func(tx pgx.Tx) error {
		for _, t := range rb.tables {
			live, shadow := pgx.Identifier{t}.Sanitize(), rb.shadow.Ident(t)
			if _, err := tx.Exec(ctx, "DROP TABLE IF EXISTS "+shadow); err != nil {
				return fmt.Errorf("drop leftover %s: %w", rb.shadow.Name(t), err)
			}
			if _, err := tx.Exec(ctx, "CREATE TABLE "+shadow+" (LIKE "+live+" INCLUDING ALL)"); err != nil {
				return fmt.Errorf("create %s: %w", rb.shadow.Name(t), err)
			}
		}
		return nil
	})
}

// dropShadows removes the shadow tables of a failed rebuild (best effort).
func (rb *rebuilder) dropShadows(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, t := range rb.tables {
		if _, err := rb.pool.Exec(ctx, "DROP TABLE IF EXISTS "+rb.shadow.Ident(t)); err != nil {
			rb.log.WarnContext(ctx, "rebuild: cannot drop a shadow table", slog.String("table", rb.shadow.Name(t)), slog.Any("error", err))
		}
	}
}

type readBatch struct {
	events []eventstore.RecordedEvent
	pos    eventstore.Position
}

// catchUp applies the log from rb.pos to its current head to the shadow
// tables, one transaction per batch. Reading the next batch overlaps with
// applying the current one.
func (rb *rebuilder) catchUp(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	batches := make(chan readBatch, 2)
	var readErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(batches)
		from := rb.pos
		for {
			events, pos, err := rb.read(ctx, from)
			if err != nil {
				readErr = err
				return
			}
			if len(events) == 0 && !from.Less(pos) {
				return // at the head
			}
			select {
			case batches <- readBatch{events: events, pos: pos}:
			case <-ctx.Done():
				return
			}
			from = pos
		}
	})

	var applyErr error
	progress := time.Now()
	for b := range batches {
		if applyErr != nil {
			continue // drain so the reader can exit
		}
		if len(b.events) > 0 {
			err := pgx.BeginFunc(ctx, rb.pool, func(tx pgx.Tx) error {
				_, err := rb.p.Apply(ctx, tx, rb.shadow, b.events)
				return err
			})
			if err != nil {
				applyErr = fmt.Errorf("apply %d events (%s..%s) to the shadow tables: %w",
					len(b.events), b.events[0].Position, b.events[len(b.events)-1].Position, err)
				cancel()
				continue
			}
			rb.events += int64(len(b.events))
		}
		rb.pos = b.pos
		if time.Since(progress) >= 5*time.Second {
			progress = time.Now()
			rb.log.InfoContext(ctx, "rebuild: catching up", slog.Int64("events", rb.events), slog.String("position", rb.pos.String()))
		}
	}
	wg.Wait()
	if applyErr != nil {
		return applyErr
	}
	return readErr
}

// read returns the next batch after from and the position it covers.
func (rb *rebuilder) read(ctx context.Context, from eventstore.Position) ([]eventstore.RecordedEvent, eventstore.Position, error) {
	events, pos, err := rb.store.ReadAll(ctx, from, rb.opts.BatchSize, rb.filter)
	if err != nil {
		return nil, eventstore.Position{}, fmt.Errorf("read the log after %s: %w", from, err)
	}
	if n := len(events); n > 0 && pos.Less(events[n-1].Position) {
		pos = events[n-1].Position
	}
	if pos.Less(from) {
		pos = from
	}
	return events, pos, nil
}

// swap brings the shadow tables to the head and swaps them for the live ones
// in one transaction (see Rebuild).
func (rb *rebuilder) swap(ctx context.Context) error {
	tx, err := rb.pool.BeginTx(ctx, pgx.TxOptions{})
	if err != nil {
		return fmt.Errorf("begin swap: %w", err)
	}
	defer rollback(ctx, tx)
	timeout := strconv.FormatInt(rb.opts.SwapLockTimeout.Milliseconds(), 10) + "ms"
	if _, err := tx.Exec(ctx, `SELECT set_config('lock_timeout', $1, true)`, timeout); err != nil {
		return fmt.Errorf("set lock timeout: %w", err)
	}
	// From here until COMMIT no runner of this projection can commit a batch.
	if _, err := lockCheckpoint(ctx, tx, rb.name); err != nil {
		return err
	}
	pos, n := rb.pos, int64(0)
	for {
		events, next, err := rb.read(ctx, pos)
		if err != nil {
			return err
		}
		if len(events) == 0 && !pos.Less(next) {
			break
		}
		if len(events) > 0 {
			if _, err := rb.p.Apply(ctx, tx, rb.shadow, events); err != nil {
				return fmt.Errorf("apply %d events (%s..%s) to the shadow tables: %w",
					len(events), events[0].Position, events[len(events)-1].Position, err)
			}
			n += int64(len(events))
		}
		pos = next
	}
	for _, t := range rb.tables {
		if err := swapTable(ctx, tx, t); err != nil {
			return err
		}
	}
	if err := writeCheckpoint(ctx, tx, rb.name, pos); err != nil {
		return err
	}
	payload, err := json.Marshal(Notification{Projection: rb.name, Position: pos.String(), Rebuilt: true})
	if err != nil {
		return fmt.Errorf("encode notification: %w", err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, rb.opts.ReadModelChannel, string(payload)); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit swap: %w", err)
	}
	rb.pos = pos
	rb.events += n
	return nil
}

// relName is a schema-qualified relation name.
type relName struct{ schema, name string }

func (r relName) ident() string { return pgx.Identifier{r.schema, r.name}.Sanitize() }

type indexInfo struct {
	rel relName
	key string // the definition without its name and table
}

type constraintInfo struct {
	name string
	key  string // type and definition
}

type sequenceInfo struct {
	rel     relName
	column  string
	deptype string // "a": serial (owned by the column), "i": identity
}

// swapTable replaces live table t by t__rebuild inside tx and gives the new
// table's dependent objects the names the old table's had.
func swapTable(ctx context.Context, tx pgx.Tx, t string) error {
	live := pgx.Identifier{t}.Sanitize()
	shadow := pgx.Identifier{t + shadowSuffix}.Sanitize()
	old := pgx.Identifier{t + oldSuffix}.Sanitize()

	liveOID, err := relOID(ctx, tx, live)
	if err != nil {
		return err
	}
	shadowOID, err := relOID(ctx, tx, shadow)
	if err != nil {
		return err
	}
	oldIdx, err := indexesOf(ctx, tx, liveOID)
	if err != nil {
		return err
	}
	newIdx, err := indexesOf(ctx, tx, shadowOID)
	if err != nil {
		return err
	}
	oldCons, err := constraintsOf(ctx, tx, liveOID)
	if err != nil {
		return err
	}
	newCons, err := constraintsOf(ctx, tx, shadowOID)
	if err != nil {
		return err
	}
	oldSeqs, err := sequencesOf(ctx, tx, liveOID)
	if err != nil {
		return err
	}
	newSeqs, err := sequencesOf(ctx, tx, shadowOID)
	if err != nil {
		return err
	}

	stmts := []string{
		"DROP TABLE IF EXISTS " + old,
		"ALTER TABLE " + live + " RENAME TO " + old,
		"ALTER TABLE " + shadow + " RENAME TO " + live,
	}
	// A serial column's sequence is owned by the old table, and the new
	// table's default uses it too: hand it over before the drop.
	for _, s := range oldSeqs {
		if s.deptype == "a" {
			stmts = append(stmts, "ALTER SEQUENCE "+s.rel.ident()+" OWNED BY "+pgx.Identifier{t, s.column}.Sanitize())
		}
	}
	stmts = append(stmts, "DROP TABLE "+old)
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			return fmt.Errorf("swap %s: %s: %w", t, s, err)
		}
	}

	// Indexes (renaming an index renames the constraint it backs), in two
	// phases so that no intermediate name collides.
	var idxRenames []rename
	used := map[int]bool{}
	for _, ni := range newIdx {
		for j, oi := range oldIdx {
			if !used[j] && oi.key == ni.key {
				used[j] = true
				if oi.rel.name != ni.rel.name {
					idxRenames = append(idxRenames, rename{schema: ni.rel.schema, from: ni.rel.name, to: oi.rel.name})
				}
				break
			}
		}
	}
	if err := renameTwoPhase(ctx, tx, idxRenames, func(r rename, from, to string) string {
		return "ALTER INDEX " + pgx.Identifier{r.schema, from}.Sanitize() + " RENAME TO " + pgx.Identifier{to}.Sanitize()
	}); err != nil {
		return fmt.Errorf("swap %s: rename indexes: %w", t, err)
	}

	var conRenames []rename
	usedCon := map[int]bool{}
	for _, nc := range newCons {
		for j, oc := range oldCons {
			if !usedCon[j] && oc.key == nc.key {
				usedCon[j] = true
				if oc.name != nc.name {
					conRenames = append(conRenames, rename{from: nc.name, to: oc.name})
				}
				break
			}
		}
	}
	if err := renameTwoPhase(ctx, tx, conRenames, func(_ rename, from, to string) string {
		return "ALTER TABLE " + live + " RENAME CONSTRAINT " + pgx.Identifier{from}.Sanitize() + " TO " + pgx.Identifier{to}.Sanitize()
	}); err != nil {
		return fmt.Errorf("swap %s: rename constraints: %w", t, err)
	}

	var seqRenames []rename
	for _, ns := range newSeqs {
		if ns.deptype != "i" {
			continue
		}
		for _, oseq := range oldSeqs {
			if oseq.deptype == "i" && oseq.column == ns.column && oseq.rel.name != ns.rel.name {
				seqRenames = append(seqRenames, rename{schema: ns.rel.schema, from: ns.rel.name, to: oseq.rel.name})
			}
		}
	}
	if err := renameTwoPhase(ctx, tx, seqRenames, func(r rename, from, to string) string {
		return "ALTER SEQUENCE " + pgx.Identifier{r.schema, from}.Sanitize() + " RENAME TO " + pgx.Identifier{to}.Sanitize()
	}); err != nil {
		return fmt.Errorf("swap %s: rename identity sequences: %w", t, err)
	}
	return nil
}

type rename struct{ schema, from, to string }

// renameTwoPhase renames through temporary names, so that a target name still
// held by another object of the set cannot collide.
func renameTwoPhase(ctx context.Context, tx pgx.Tx, renames []rename, stmt func(r rename, from, to string) string) error {
	for i, r := range renames {
		tmp := "cmlcm_swap_" + strconv.Itoa(i) + "_" + strconv.FormatInt(time.Now().UnixNano(), 36)
		if _, err := tx.Exec(ctx, stmt(r, r.from, tmp)); err != nil {
			return fmt.Errorf("%s: %w", r.from, err)
		}
		renames[i].from = tmp
	}
	for _, r := range renames {
		if _, err := tx.Exec(ctx, stmt(r, r.from, r.to)); err != nil {
			return fmt.Errorf("%s: %w", r.to, err)
		}
	}
	return nil
}

func relOID(ctx context.Context, tx pgx.Tx, ident string) (uint32, error) {
	var oid *uint32
	if err := tx.QueryRow(ctx, `SELECT to_regclass($1)::oid`, ident).Scan(&oid); err != nil {
		return 0, fmt.Errorf("look up table %s: %w", ident, err)
	}
	if oid == nil {
		return 0, fmt.Errorf("table %s does not exist", ident)
	}
	return *oid, nil
}

func indexesOf(ctx context.Context, tx pgx.Tx, table uint32) ([]indexInfo, error) {
	rows, err := tx.Query(ctx, `
		SELECT n.nspname, c.relname, i.indisprimary, i.indisunique, pg_get_indexdef(i.indexrelid)
		FROM pg_index i
		JOIN pg_class c ON c.oid = i.indexrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE i.indrelid = $1
		ORDER BY c.relname`, table)
	if err != nil {
		return nil, fmt.Errorf("list indexes: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (indexInfo, error) {
		var ix indexInfo
		var primary, unique bool
		var def string
		if err := row.Scan(&ix.rel.schema, &ix.rel.name, &primary, &unique, &def); err != nil {
			return ix, err
		}
		// "CREATE [UNIQUE] INDEX name ON [ONLY] table USING method (...) ...":
		// what follows USING does not depend on the index or table name.
		_, body, _ := strings.Cut(def, " USING ")
		ix.key = fmt.Sprintf("%t|%t|%s", primary, unique, body)
		return ix, nil
	})
	if err != nil {
		return nil, fmt.Errorf("list indexes: %w", err)
	}
	return out, nil
}

// constraintsOf lists the constraints not backed by an index of the table
// (check, not-null, ...); index-backed ones follow their index's name.
func constraintsOf(ctx context.Context, tx pgx.Tx, table uint32) ([]constraintInfo, error) {
	rows, err := tx.Query(ctx, `
		SELECT conname, contype::text || '|' || pg_get_constraintdef(oid)
		FROM pg_constraint
		WHERE conrelid = $1 AND contype NOT IN ('p', 'u', 'x')
		ORDER BY conname`, table)
	if err != nil {
		return nil, fmt.Errorf("list constraints: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (constraintInfo, error) {
		var c constraintInfo
		err := row.Scan(&c.name, &c.key)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("list constraints: %w", err)
	}
	return out, nil
}

// sequencesOf lists the sequences owned by columns of the table: serial
// columns' and identity columns'.
func sequencesOf(ctx context.Context, tx pgx.Tx, table uint32) ([]sequenceInfo, error) {
	rows, err := tx.Query(ctx, `
		SELECT n.nspname, s.relname, a.attname, d.deptype::text
		FROM pg_depend d
		JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
		JOIN pg_namespace n ON n.oid = s.relnamespace
		JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
		WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
		  AND d.refobjid = $1 AND d.deptype IN ('a', 'i')
		ORDER BY a.attname`, table)
	if err != nil {
		return nil, fmt.Errorf("list owned sequences: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (sequenceInfo, error) {
		var s sequenceInfo
		err := row.Scan(&s.rel.schema, &s.rel.name, &s.column, &s.deptype)
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("list owned sequences: %w", err)
	}
	return out, nil
}
