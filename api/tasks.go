package api

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/task"
)

// TaskPage is GET /api/tasks.
type TaskPage struct {
	Items  []application.TaskView `json:"items"`
	Total  int                    `json:"total"`
	Limit  int                    `json:"limit"`
	Offset int                    `json:"offset"`
}

// CreateTaskRequest is the body of POST /api/tasks.
type CreateTaskRequest struct {
	Title       string        `json:"title" openapi:"required,maxlen=200"`
	Description string        `json:"description,omitempty" openapi:"maxlen=10000"`
	Status      task.Status   `json:"status,omitempty" doc:"Default pending."`
	Priority    task.Priority `json:"priority,omitempty" doc:"Default medium."`
	AssigneeID  string        `json:"assignee_id,omitempty" doc:"Subject of the assignee; default the caller. Users may only assign themselves."`
	Department  string        `json:"department,omitempty" doc:"Default the caller's department; only admins create tasks in another one."`
}

// UpdateTaskRequest is the body of PUT /api/tasks/{id}: the fields to
// change. Only admins change the assignee or the department.
type UpdateTaskRequest struct {
	Title       *string        `json:"title,omitempty" openapi:"maxlen=200"`
	Description *string        `json:"description,omitempty" openapi:"maxlen=10000"`
	Status      *task.Status   `json:"status,omitempty"`
	Priority    *task.Priority `json:"priority,omitempty"`
	AssigneeID  *string        `json:"assignee_id,omitempty"`
	Department  *string        `json:"department,omitempty"`
}

func (s *Server) listTasks(c echo.Context) error {
	p := newParams(c)
	f := application.TaskFilter{
		Department: p.query("department", task.MaxRefLength),
		AssigneeID: p.query("assignee_id", task.MaxRefLength),
		Limit:      p.integer("limit", application.DefaultPageSize, 1, application.MaxPageSize),
		Offset:     p.integer("offset", 0, 0, MaxOffset),
	}
	if err := p.err(); err != nil {
		return err
	}
	items, total, err := s.app.ListTasks(c.Request().Context(), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, TaskPage{Items: items, Total: total, Limit: f.Limit, Offset: f.Offset})
}

func (s *Server) getTask(c echo.Context) error {
	p := newParams(c)
	id := p.id("id")
	if err := p.err(); err != nil {
		return err
	}
	v, err := s.app.GetTask(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

func (s *Server) createTask(c echo.Context) error {
	var body CreateTaskRequest
	if err := bindJSON(c, MaxJSONBody, &body); err != nil {
		return err
	}
	res, err := s.app.CreateTask(c.Request().Context(), application.CreateTask{
		Title: body.Title, Description: body.Description, Status: body.Status, Priority: body.Priority,
		AssigneeID: body.AssigneeID, Department: body.Department,
	})
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, "/api/tasks/"+res.ID)
	return c.JSON(http.StatusCreated, res)
}

func (s *Server) updateTask(c echo.Context) error {
	p := newParams(c)
	id := p.id("id")
	if err := p.err(); err != nil {
		return err
	}
	var body UpdateTaskRequest
	if err := bindJSON(c, MaxJSONBody, &body); err != nil {
		return err
	}
	res, err := s.app.UpdateTask(c.Request().Context(), id, task.Patch(body))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, res)
}

func (s *Server) deleteTask(c echo.Context) error {
	p := newParams(c)
	id := p.id("id")
	if err := p.err(); err != nil {
		return err
	}
	res, err := s.app.DeleteTask(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, res)
}
