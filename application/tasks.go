package application

import (
	"context"

	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/task"
)

// Tasks are the seed's RBAC sample: an admin (and an auditor, read-only)
// sees every task, a manager the tasks of their department, a user the tasks
// assigned to them. A task is updated by an admin or its assignee, and
// deleted by an admin or a manager of its department. Only admins move a
// task to another assignee or department.

// taskScope says what the principal may see.
func taskScope(p rbac.Principal) (all bool, department, assignee string) {
	switch {
	case p.Has(rbac.RoleAdmin) || p.Has(rbac.RoleAuditor):
		return true, "", ""
	case p.Has(rbac.RoleManager):
		return false, p.Department, ""
	default:
		return false, "", p.Subject
	}
}

func canSeeTask(p rbac.Principal, s task.State) bool {
	all, dept, assignee := taskScope(p)
	switch {
	case all:
		return true
	case assignee != "":
		return s.AssigneeID == assignee
	default:
		return dept != "" && s.Department == dept
	}
}

// ListTasks lists the tasks the caller may see.
func (a *App) ListTasks(ctx context.Context, f TaskFilter) ([]TaskView, int, error) {
	p, err := rbac.Authorize(ctx, rbac.TasksRead)
	if err != nil {
		return nil, 0, err
	}
	if f.Limit < 0 || f.Limit > MaxPageSize || f.Offset < 0 {
		var ps domain.Problems
		ps.Add("limit", "must be between 1 and %d, with a non-negative offset", MaxPageSize)
		return nil, 0, ps.Err()
	}
	if f.Limit == 0 {
		f.Limit = DefaultPageSize
	}
	all, dept, assignee := taskScope(p)
	switch {
	case all:
	case assignee != "":
		if f.AssigneeID != "" && f.AssigneeID != assignee {
			return []TaskView{}, 0, nil
		}
		f.AssigneeID = assignee
	default:
		if dept == "" || (f.Department != "" && f.Department != dept) {
			return []TaskView{}, 0, nil
		}
		f.Department = dept
	}
	return a.opts.Tasks.ListTasks(ctx, f)
}

// GetTask returns a task the caller may see; others are reported missing.
func (a *App) GetTask(ctx context.Context, id string) (TaskView, error) {
	p, err := rbac.Authorize(ctx, rbac.TasksRead)
	if err != nil {
		return TaskView{}, err
	}
	if err := checkID("id", id); err != nil {
		return TaskView{}, err
	}
	v, err := a.opts.Tasks.GetTask(ctx, id)
	if err != nil {
		return TaskView{}, asNotFound(err, "task", id)
	}
	if !canSeeTask(p, v.State) {
		return TaskView{}, notFound("task", id)
	}
	return v, nil
}

// CreateTask is the input of CreateTask. An empty department is the
// caller's; an empty assignee is the caller.
type CreateTask struct {
	Title       string        `json:"title"`
	Description string        `json:"description,omitempty"`
	Status      task.Status   `json:"status,omitempty"`
	Priority    task.Priority `json:"priority,omitempty"`
	AssigneeID  string        `json:"assignee_id,omitempty"`
	Department  string        `json:"department,omitempty"`
}

// CreateTask creates a task. Users create tasks for themselves, managers
// within their department, admins anywhere.
func (a *App) CreateTask(ctx context.Context, in CreateTask) (Result, error) {
	p, err := rbac.Authorize(ctx, rbac.TaskCreate)
	if err != nil {
		return Result{}, err
	}
	if in.Department == "" {
		in.Department = p.Department
	}
	if in.AssigneeID == "" {
		in.AssigneeID = p.Subject
	}
	if !p.Has(rbac.RoleAdmin) {
		if in.Department != p.Department {
			return Result{}, &rbac.ForbiddenError{Action: rbac.TaskCreate, Reason: "tasks can only be created in your own department"}
		}
		if !p.Has(rbac.RoleManager) && in.AssigneeID != p.Subject {
			return Result{}, &rbac.ForbiddenError{Action: rbac.TaskCreate, Reason: "users create tasks assigned to themselves"}
		}
	}
	id := a.opts.IDs.NewID()
	saved, err := a.tasks.Update(ctx, id, a.metadata(ctx, p, "task.create"), func(t *task.Task) ([]domain.Event, error) {
		return t.Create(id, task.Spec{
			Title: in.Title, Description: in.Description, Status: in.Status, Priority: in.Priority,
			AssigneeID: in.AssigneeID, Department: in.Department,
		})
	})
	if err != nil {
		return Result{}, err
	}
	return result(id, saved), nil
}

// UpdateTask changes a task (admin or the assignee).
func (a *App) UpdateTask(ctx context.Context, id string, patch task.Patch) (Result, error) {
	return a.updateTask(ctx, rbac.TaskUpdate, "task.update", id, func(p rbac.Principal, t *task.Task) ([]domain.Event, error) {
		s := t.State()
		if !p.Has(rbac.RoleAdmin) {
			if s.AssigneeID != p.Subject {
				return nil, &rbac.ForbiddenError{Action: rbac.TaskUpdate, Reason: "only an admin or the assignee may update a task"}
			}
			if (patch.AssigneeID != nil && *patch.AssigneeID != s.AssigneeID) || (patch.Department != nil && *patch.Department != s.Department) {
				return nil, &rbac.ForbiddenError{Action: rbac.TaskUpdate, Reason: "only an admin may reassign a task"}
			}
		}
		return t.Update(patch)
	})
}

// DeleteTask deletes a task (admin, or a manager of its department).
func (a *App) DeleteTask(ctx context.Context, id string) (Result, error) {
	return a.updateTask(ctx, rbac.TaskDelete, "task.delete", id, func(p rbac.Principal, t *task.Task) ([]domain.Event, error) {
		if !p.Has(rbac.RoleAdmin) && t.State().Department != p.Department {
			return nil, &rbac.ForbiddenError{Action: rbac.TaskDelete, Reason: "managers delete tasks of their own department"}
		}
		return t.Delete()
	})
}

func (a *App) updateTask(ctx context.Context, action rbac.Action, command, id string, decide func(rbac.Principal, *task.Task) ([]domain.Event, error)) (Result, error) {
	p, err := rbac.Authorize(ctx, action)
	if err != nil {
		return Result{}, err
	}
	if err := checkID("id", id); err != nil {
		return Result{}, err
	}
	saved, err := a.tasks.Update(ctx, id, a.metadata(ctx, p, command), func(t *task.Task) ([]domain.Event, error) {
		if !t.Exists() || !canSeeTask(p, t.State()) {
			return nil, notFound("task", id)
		}
		return decide(p, t)
	})
	if err != nil {
		return Result{}, err
	}
	return result(id, saved), nil
}
