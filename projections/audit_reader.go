package projections

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cmlcloud/cml-cloud-manager/application"
)

// AuditReader answers queries from audit_log. It implements
// application.AuditReadModel.
type AuditReader struct {
	pool *pgxpool.Pool
}

var _ application.AuditReadModel = (*AuditReader)(nil)

// NewAuditReader returns a reader of audit_log.
func NewAuditReader(pool *pgxpool.Pool) *AuditReader { return &AuditReader{pool: pool} }

const auditColumns = `position_commit, position_prepare, event_id::text, event_type, stream, revision,
	aggregate_type, aggregate_id, COALESCE(worker_id::text, ''), occurred_at, recorded_at,
	actor_type, actor_subject, actor_username, correlation_id, causation_id, command, summary, data::text`

// ListAudit implements application.AuditReadModel: newest first by log
// position, keyset-paged with f.Before. Every filter is a bound parameter.
func (r *AuditReader) ListAudit(ctx context.Context, f application.AuditFilter) ([]application.AuditEntry, error) {
	if f.Limit <= 0 {
		return nil, fmt.Errorf("list audit log: limit %d must be positive", f.Limit)
	}
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.WorkerID != "" {
		where = append(where, "worker_id = "+arg(f.WorkerID)+"::uuid")
	}
	if f.Actor != "" {
		a := arg(f.Actor)
		where = append(where, "(actor_subject = "+a+" OR actor_username = "+a+")")
	}
	if f.TypePrefix != "" {
		where = append(where, "starts_with(event_type, "+arg(f.TypePrefix)+")")
	}
	if !f.From.IsZero() {
		where = append(where, "occurred_at >= "+arg(f.From))
	}
	if !f.To.IsZero() {
		where = append(where, "occurred_at < "+arg(f.To))
	}
	if !f.Before.IsZero() {
		c, p, err := toColumns(f.Before)
		if err != nil {
			return nil, fmt.Errorf("list audit log: cursor: %w", err)
		}
		where = append(where, "(position_commit, position_prepare) < ("+arg(c)+", "+arg(p)+")")
	}
	sql := `SELECT ` + auditColumns + ` FROM audit_log`
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	sql += " ORDER BY position_commit DESC, position_prepare DESC LIMIT " + arg(f.Limit)
	rows, err := r.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit log: %w", err)
	}
	defer rows.Close()
	out := make([]application.AuditEntry, 0, min(f.Limit, 1000))
	for rows.Next() {
		var (
			e               application.AuditEntry
			commit, prepare int64
			occurred, rec   time.Time
			data            string
		)
		if err := rows.Scan(&commit, &prepare, &e.EventID, &e.EventType, &e.Stream, &e.Revision,
			&e.AggregateType, &e.AggregateID, &e.WorkerID, &occurred, &rec,
			&e.Actor.Type, &e.Actor.Subject, &e.Actor.Username, &e.CorrelationID, &e.CausationID, &e.Command,
			&e.Summary, &data); err != nil {
			return nil, fmt.Errorf("list audit log: %w", err)
		}
		pos, err := fromColumns(commit, prepare)
		if err != nil {
			return nil, fmt.Errorf("list audit log: %w", err)
		}
		e.Position = pos.String()
		e.OccurredAt, e.RecordedAt = occurred.UTC(), rec.UTC()
		e.Data = []byte(data)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit log: %w", err)
	}
	return out, nil
}
