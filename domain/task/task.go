// Package task is the seed's sample aggregate, kept as the RBAC example:
// tasks with a title, description, status, priority, assignee and department.
package task

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cmlcloud/cml-cloud-manager/domain"
)

// StreamPrefix starts every task stream name.
const StreamPrefix = "task-"

// Stream returns the stream of a task.
func Stream(id string) string { return StreamPrefix + id }

// Status of a task.
type Status string

// Task statuses.
const (
	StatusPending    Status = "pending"
	StatusInProgress Status = "in_progress"
	StatusCompleted  Status = "completed"
)

// Priority of a task.
type Priority string

// Task priorities.
const (
	PriorityLow    Priority = "low"
	PriorityMedium Priority = "medium"
	PriorityHigh   Priority = "high"
)

// Input limits.
const (
	MaxTitleLength       = 200
	MaxDescriptionLength = 10000
	MaxRefLength         = 200
)

// Spec is a new task.
type Spec struct {
	Title       string
	Description string
	Status      Status
	Priority    Priority
	AssigneeID  string
	Department  string
}

// Patch changes some fields of a task; nil fields stay as they are.
type Patch struct {
	Title       *string   `json:"title,omitempty"`
	Description *string   `json:"description,omitempty"`
	Status      *Status   `json:"status,omitempty"`
	Priority    *Priority `json:"priority,omitempty"`
	AssigneeID  *string   `json:"assignee_id,omitempty"`
	Department  *string   `json:"department,omitempty"`
}

// Created records a new task.
type Created struct {
	TaskID      string   `json:"task_id"`
	Title       string   `json:"title"`
	Description string   `json:"description,omitempty"`
	Status      Status   `json:"status"`
	Priority    Priority `json:"priority"`
	AssigneeID  string   `json:"assignee_id,omitempty"`
	Department  string   `json:"department,omitempty"`
}

// Updated records the fields that changed.
type Updated struct {
	Changes Patch `json:"changes"`
}

// Deleted records that the task was deleted.
type Deleted struct{}

// EventType names.
func (Created) EventType() string { return "task.created.v1" }
func (Updated) EventType() string { return "task.updated.v1" }
func (Deleted) EventType() string { return "task.deleted.v1" }

// Events returns the task event prototypes for the registry.
func Events() []domain.Event { return []domain.Event{Created{}, Updated{}, Deleted{}} }

// State is a task as the read model stores it.
type State struct {
	ID          string    `json:"id"`
	Title       string    `json:"title"`
	Description string    `json:"description"`
	Status      Status    `json:"status"`
	Priority    Priority  `json:"priority"`
	AssigneeID  string    `json:"assignee_id"`
	Department  string    `json:"department"`
	Deleted     bool      `json:"deleted"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// Task is the aggregate.
type Task struct {
	s       State
	version int64
	exists  bool
}

// New returns a task that does not exist yet.
func New() *Task { return &Task{version: -1} }

// FromState rebuilds a task from a stored state and the revision of the last
// event folded into it (as kept by a read model).
func FromState(s State, version int64) *Task {
	return &Task{s: s, version: version, exists: s.ID != ""}
}

// Version is the revision of the last applied event, -1 when new.
func (t *Task) Version() int64 { return t.version }

// State returns the task's state.
func (t *Task) State() State { return t.s }

// Exists reports whether the task was created and not deleted.
func (t *Task) Exists() bool { return t.exists && !t.s.Deleted }

func checkTitle(p *domain.Problems, title string) {
	switch {
	case strings.TrimSpace(title) == "":
		p.Add("title", "is required")
	case utf8.RuneCountInString(title) > MaxTitleLength:
		p.Add("title", "is longer than %d characters", MaxTitleLength)
	}
}

func checkStatus(p *domain.Problems, s Status) {
	switch s {
	case StatusPending, StatusInProgress, StatusCompleted:
	default:
		p.Add("status", "must be pending, in_progress or completed, not %q", s)
	}
}

func checkPriority(p *domain.Problems, pr Priority) {
	switch pr {
	case PriorityLow, PriorityMedium, PriorityHigh:
	default:
		p.Add("priority", "must be low, medium or high, not %q", pr)
	}
}

func checkText(p *domain.Problems, field, s string, max int) {
	if utf8.RuneCountInString(s) > max {
		p.Add(field, "is longer than %d characters", max)
	}
}

// Create creates the task. An empty status is pending, an empty priority
// medium.
func (t *Task) Create(id string, spec Spec) ([]domain.Event, error) {
	if t.exists {
		return nil, fmt.Errorf("task %s: %w", id, domain.ErrAlreadyExists)
	}
	if spec.Status == "" {
		spec.Status = StatusPending
	}
	if spec.Priority == "" {
		spec.Priority = PriorityMedium
	}
	var p domain.Problems
	if id == "" {
		p.Add("id", "is required")
	}
	checkTitle(&p, spec.Title)
	checkText(&p, "description", spec.Description, MaxDescriptionLength)
	checkStatus(&p, spec.Status)
	checkPriority(&p, spec.Priority)
	checkText(&p, "assignee_id", spec.AssigneeID, MaxRefLength)
	checkText(&p, "department", spec.Department, MaxRefLength)
	if err := p.Err(); err != nil {
		return nil, err
	}
	return []domain.Event{Created{
		TaskID: id, Title: strings.TrimSpace(spec.Title), Description: spec.Description,
		Status: spec.Status, Priority: spec.Priority, AssigneeID: spec.AssigneeID, Department: spec.Department,
	}}, nil
}

// Update changes the given fields; only real changes are recorded.
func (t *Task) Update(patch Patch) ([]domain.Event, error) {
	if !t.Exists() {
		return nil, fmt.Errorf("task: %w", domain.ErrNotFound)
	}
	var p domain.Problems
	var ch Patch
	if patch.Title != nil {
		checkTitle(&p, *patch.Title)
		if v := strings.TrimSpace(*patch.Title); v != t.s.Title {
			ch.Title = &v
		}
	}
	if patch.Description != nil {
		checkText(&p, "description", *patch.Description, MaxDescriptionLength)
		if *patch.Description != t.s.Description {
			ch.Description = patch.Description
		}
	}
	if patch.Status != nil {
		checkStatus(&p, *patch.Status)
		if *patch.Status != t.s.Status {
			ch.Status = patch.Status
		}
	}
	if patch.Priority != nil {
		checkPriority(&p, *patch.Priority)
		if *patch.Priority != t.s.Priority {
			ch.Priority = patch.Priority
		}
	}
	if patch.AssigneeID != nil {
		checkText(&p, "assignee_id", *patch.AssigneeID, MaxRefLength)
		if *patch.AssigneeID != t.s.AssigneeID {
			ch.AssigneeID = patch.AssigneeID
		}
	}
	if patch.Department != nil {
		checkText(&p, "department", *patch.Department, MaxRefLength)
		if *patch.Department != t.s.Department {
			ch.Department = patch.Department
		}
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	if ch == (Patch{}) {
		return nil, nil
	}
	return []domain.Event{Updated{Changes: ch}}, nil
}

// Delete deletes the task.
func (t *Task) Delete() ([]domain.Event, error) {
	if !t.Exists() {
		return nil, fmt.Errorf("task: %w", domain.ErrNotFound)
	}
	return []domain.Event{Deleted{}}, nil
}

// Apply evolves the task by one event.
func (t *Task) Apply(e domain.Event, at time.Time) error {
	switch e := e.(type) {
	case Created:
		t.s = State{
			ID: e.TaskID, Title: e.Title, Description: e.Description, Status: e.Status,
			Priority: e.Priority, AssigneeID: e.AssigneeID, Department: e.Department, CreatedAt: at,
		}
		t.exists = true
	case Updated:
		c := e.Changes
		if c.Title != nil {
			t.s.Title = *c.Title
		}
		if c.Description != nil {
			t.s.Description = *c.Description
		}
		if c.Status != nil {
			t.s.Status = *c.Status
		}
		if c.Priority != nil {
			t.s.Priority = *c.Priority
		}
		if c.AssigneeID != nil {
			t.s.AssigneeID = *c.AssigneeID
		}
		if c.Department != nil {
			t.s.Department = *c.Department
		}
	case Deleted:
		t.s.Deleted = true
	default:
		return fmt.Errorf("task: cannot apply %T", e)
	}
	t.s.UpdatedAt = at
	t.version++
	return nil
}
