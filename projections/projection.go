// Package projections builds the read models of CML Cloud Manager from the
// global event log.
//
// A read model is one file: a type implementing Projection (its name, the
// events it needs, the tables it owns and how a batch of events changes them)
// plus the migration that creates its tables. The caller hands the list of
// projections to a Manager, which runs one Runner per projection.
//
// A Runner subscribes to the log from the projection's checkpoint and, for
// each batch, applies the events, advances the checkpoint and sends NOTIFY
// with the changed ids, all in one Postgres transaction. Any number of
// processes may run the same projections: a session advisory lock per
// projection name elects one active runner, and the checkpoint row, locked at
// the start of each batch and compared with the runner's own position, fences
// off any second applier (a former leader, or a Rebuild that swapped the
// tables), so an event is never applied twice.
//
// Rebuild recomputes a projection into shadow tables while the live ones keep
// serving and swaps them in one transaction.
package projections

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
)

// DefaultReadModelChannel is the Postgres NOTIFY channel on which runners
// announce read-model changes (see Notification).
const DefaultReadModelChannel = "cmlcm_readmodel"

// Projection builds read-model tables from the event log.
//
// A Rebuild may call Apply while a Runner of the same projection does (each
// writing to its own physical tables), so Apply must keep no mutable state
// outside the database, must reach its tables only through the names in t,
// and must not retain the batch after it returns.
type Projection interface {
	// Name is stable: it names the checkpoint row and the leadership lock.
	Name() string
	// Filter selects the events the projection needs (applied server-side).
	Filter() eventstore.Filter
	// Tables lists the tables the projection owns, by their live names. A
	// Rebuild recreates exactly these tables.
	Tables() []string
	// Apply applies a batch (in log order) inside tx, writing to the
	// physical tables named by t (the live tables, or shadow tables during a
	// rebuild). It must be idempotent per event. It returns the ids of the
	// read-model rows it changed, for NOTIFY.
	Apply(ctx context.Context, tx pgx.Tx, t Tables, batch []eventstore.RecordedEvent) (changed []string, err error)
}

// Tables maps a logical table name (as returned by Projection.Tables) to the
// physical table Apply must write to.
type Tables map[string]string

// Name returns the physical name of a logical table, or logical itself when
// it is not mapped.
func (t Tables) Name(logical string) string {
	if n, ok := t[logical]; ok {
		return n
	}
	return logical
}

// Ident returns Name(logical) quoted as an SQL identifier, ready to be
// spliced into a statement.
func (t Tables) Ident(logical string) string {
	return pgx.Identifier{t.Name(logical)}.Sanitize()
}

// liveTables maps every table of p to itself.
func liveTables(p Projection) Tables {
	t := Tables{}
	for _, n := range p.Tables() {
		t[n] = n
	}
	return t
}

// Notification is the JSON payload sent on the read-model channel.
//
// After a batch commits: Projection, Position (of the batch's last event, in
// eventstore.Position.String form) and IDs (the changed rows; a large set is
// split over several notifications with the same Position). After a Rebuild
// swapped the tables: Projection, Position and Rebuilt (every row may have
// changed).
type Notification struct {
	Projection string   `json:"projection"`
	Position   string   `json:"position"`
	IDs        []string `json:"ids,omitempty"`
	Rebuilt    bool     `json:"rebuilt,omitempty"`
}

// ParseNotification decodes a payload received on the read-model channel.
func ParseNotification(payload string) (Notification, error) {
	var n Notification
	if err := json.Unmarshal([]byte(payload), &n); err != nil {
		return Notification{}, fmt.Errorf("read-model notification: %w", err)
	}
	return n, nil
}
