package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/task"
)

// TaskView builds task_view: one row per task, folded with the aggregate's
// own Apply.
type TaskView struct {
	registry *domain.Registry
}

var _ = registerProjection(func(r *domain.Registry) Projection { return NewTaskView(r) })

// NewTaskView returns the task_view projection.
func NewTaskView(registry *domain.Registry) *TaskView { return &TaskView{registry: registry} }

// Name implements Projection.
func (*TaskView) Name() string { return "task_view" }

// Filter implements Projection.
func (*TaskView) Filter() eventstore.Filter {
	return eventstore.Filter{StreamPrefixes: []string{task.StreamPrefix}}
}

// Tables implements Projection.
func (*TaskView) Tables() []string { return []string{"task_view"} }

const taskColumns = `id::text, title, description, status, priority, assignee_id, department, deleted, revision, created_by, created_at, updated_at`

func scanTask(row pgx.Row, extra ...any) (application.TaskView, error) {
	var (
		v  application.TaskView
		by []byte
	)
	s := &v.State
	err := row.Scan(append([]any{&s.ID, &s.Title, &s.Description, &s.Status, &s.Priority, &s.AssigneeID,
		&s.Department, &s.Deleted, &v.Revision, &by, &s.CreatedAt, &s.UpdatedAt}, extra...)...)
	if err != nil {
		return v, err
	}
	_ = json.Unmarshal(by, &v.CreatedBy)
	return v, nil
}

// Apply implements Projection.
func (p *TaskView) Apply(ctx context.Context, tx pgx.Tx, t Tables, batch []eventstore.RecordedEvent) ([]string, error) {
	type row struct {
		t         *task.Task
		createdBy application.Actor
		changed   bool
	}
	rows := map[string]*row{}
	var ids []string
	for _, rec := range batch {
		id, ok := strings.CutPrefix(rec.Stream, task.StreamPrefix)
		if !ok || !application.ValidID(id) {
			continue
		}
		if _, seen := rows[id]; !seen {
			rows[id] = &row{t: task.New()}
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	res, err := tx.Query(ctx, `SELECT `+taskColumns+` FROM `+t.Ident("task_view")+` WHERE id = ANY($1::uuid[])`, ids)
	if err != nil {
		return nil, fmt.Errorf("task_view: load: %w", err)
	}
	for res.Next() {
		v, err := scanTask(res)
		if err != nil {
			res.Close()
			return nil, fmt.Errorf("task_view: scan: %w", err)
		}
		rows[v.ID] = &row{t: task.FromState(v.State, v.Revision), createdBy: v.CreatedBy}
	}
	res.Close()
	if err := res.Err(); err != nil {
		return nil, fmt.Errorf("task_view: load: %w", err)
	}
	for _, rec := range batch {
		id, ok := strings.CutPrefix(rec.Stream, task.StreamPrefix)
		if !ok || !application.ValidID(id) {
			continue
		}
		r := rows[id]
		rev := int64(rec.Revision)
		if rev <= r.t.Version() {
			continue
		}
		if rev != r.t.Version()+1 {
			return nil, fmt.Errorf("task_view: %s jumps from revision %d to %d", rec.Stream, r.t.Version(), rev)
		}
		e, at, err := application.Decode(p.registry, rec)
		if err != nil {
			return nil, fmt.Errorf("task_view: %w", err)
		}
		if err := r.t.Apply(e, at); err != nil {
			return nil, fmt.Errorf("task_view: %s@%d: %w", rec.Stream, rec.Revision, err)
		}
		if rev == 0 {
			if m, err := application.ParseMetadata(rec.Metadata); err == nil {
				r.createdBy = m.Actor
			}
		}
		r.changed = true
	}
	var changed []string
	batchSQL := &pgx.Batch{}
	for _, id := range ids {
		r := rows[id]
		if !r.changed {
			continue
		}
		s := r.t.State()
		by, err := json.Marshal(r.createdBy)
		if err != nil {
			return nil, fmt.Errorf("task_view: encode creator: %w", err)
		}
		batchSQL.Queue(`INSERT INTO `+t.Ident("task_view")+` (id, title, description, status, priority, assignee_id,
				department, deleted, revision, created_by, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
			ON CONFLICT (id) DO UPDATE SET title = excluded.title, description = excluded.description,
				status = excluded.status, priority = excluded.priority, assignee_id = excluded.assignee_id,
				department = excluded.department, deleted = excluded.deleted, revision = excluded.revision,
				updated_at = excluded.updated_at`,
			id, s.Title, s.Description, string(s.Status), string(s.Priority), s.AssigneeID, s.Department,
			s.Deleted, r.t.Version(), string(by), s.CreatedAt, s.UpdatedAt)
		changed = append(changed, id)
	}
	if len(changed) == 0 {
		return nil, nil
	}
	if err := tx.SendBatch(ctx, batchSQL).Close(); err != nil {
		return nil, fmt.Errorf("task_view: write: %w", err)
	}
	return changed, nil
}

// TaskReader answers queries from task_view. It implements
// application.TaskReadModel.
type TaskReader struct {
	pool *pgxpool.Pool
}

var _ application.TaskReadModel = (*TaskReader)(nil)

// NewTaskReader returns a reader of task_view.
func NewTaskReader(pool *pgxpool.Pool) *TaskReader { return &TaskReader{pool: pool} }

// GetTask implements application.TaskReadModel; deleted tasks are not found.
func (r *TaskReader) GetTask(ctx context.Context, id string) (application.TaskView, error) {
	v, err := scanTask(r.pool.QueryRow(ctx, `SELECT `+taskColumns+` FROM task_view WHERE id = $1 AND NOT deleted`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return v, fmt.Errorf("task %s: %w", id, domain.ErrNotFound)
	}
	if err != nil {
		return v, fmt.Errorf("read task %s: %w", id, err)
	}
	return v, nil
}

// ListTasks implements application.TaskReadModel: newest first, with the
// total number of matching tasks.
func (r *TaskReader) ListTasks(ctx context.Context, f application.TaskFilter) ([]application.TaskView, int, error) {
	where := []string{"NOT deleted"}
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.Department != "" {
		where = append(where, "department = "+arg(f.Department))
	}
	if f.AssigneeID != "" {
		where = append(where, "assignee_id = "+arg(f.AssigneeID))
	}
	q := `SELECT ` + taskColumns + `, count(*) OVER () FROM task_view WHERE ` + strings.Join(where, " AND ") +
		` ORDER BY created_at DESC, id LIMIT ` + arg(f.Limit) + ` OFFSET ` + arg(f.Offset)
	rows, err := r.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("list tasks: %w", err)
	}
	defer rows.Close()
	out := []application.TaskView{}
	total := 0
	for rows.Next() {
		v, err := scanTask(rows, &total)
		if err != nil {
			return nil, 0, fmt.Errorf("list tasks: %w", err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("list tasks: %w", err)
	}
	return out, total, nil
}
