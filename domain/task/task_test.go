package task_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/task"
)

const taskID = "0195a3c6-0a1b-7c2d-8e3f-405162738495"

var t0 = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

func ptr[T any](v T) *T { return &v }

// fold applies events at t0, t0+1m, ...
func fold(t *testing.T, events ...domain.Event) *task.Task {
	t.Helper()
	tk := task.New()
	for i, e := range events {
		require.NoError(t, tk.Apply(e, t0.Add(time.Duration(i)*time.Minute)))
	}
	return tk
}

var created = task.Created{
	TaskID: taskID, Title: "Refresh the AMI", Description: "Build 2.9.1", Status: task.StatusPending,
	Priority: task.PriorityMedium, AssigneeID: "alice@example.com", Department: "netops",
}

func problemFields(t *testing.T, err error) []string {
	t.Helper()
	require.ErrorIs(t, err, domain.ErrInvalid)
	var ve *domain.ValidationError
	require.ErrorAs(t, err, &ve)
	var fields []string
	for _, p := range ve.Problems {
		fields = append(fields, p.Field)
	}
	return fields
}

func TestCreate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		spec task.Spec
		then task.Created
	}{
		{
			name: "defaults: pending, medium",
			spec: task.Spec{Title: "Refresh the AMI"},
			then: task.Created{TaskID: taskID, Title: "Refresh the AMI", Status: task.StatusPending, Priority: task.PriorityMedium},
		},
		{
			name: "every field",
			spec: task.Spec{
				Title: "Refresh the AMI", Description: "Build 2.9.1", Status: task.StatusInProgress,
				Priority: task.PriorityHigh, AssigneeID: "alice@example.com", Department: "netops",
			},
			then: task.Created{
				TaskID: taskID, Title: "Refresh the AMI", Description: "Build 2.9.1", Status: task.StatusInProgress,
				Priority: task.PriorityHigh, AssigneeID: "alice@example.com", Department: "netops",
			},
		},
		{
			name: "title trimmed",
			spec: task.Spec{Title: "  Refresh the AMI \n"},
			then: task.Created{TaskID: taskID, Title: "Refresh the AMI", Status: task.StatusPending, Priority: task.PriorityMedium},
		},
		{
			name: "limits in characters, not bytes",
			spec: task.Spec{Title: strings.Repeat("é", task.MaxTitleLength), Department: strings.Repeat("ü", task.MaxRefLength)},
			then: task.Created{
				TaskID: taskID, Title: strings.Repeat("é", task.MaxTitleLength), Status: task.StatusPending,
				Priority: task.PriorityMedium, Department: strings.Repeat("ü", task.MaxRefLength),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tk := task.New()
			events, err := tk.Create(taskID, tt.spec)
			require.NoError(t, err)
			assert.Equal(t, []domain.Event{tt.then}, events)
			assert.False(t, tk.Exists(), "Create does not change the task")

			require.NoError(t, tk.Apply(events[0], t0))
			s := tk.State()
			assert.Equal(t, task.State{
				ID: taskID, Title: tt.then.Title, Description: tt.then.Description, Status: tt.then.Status,
				Priority: tt.then.Priority, AssigneeID: tt.then.AssigneeID, Department: tt.then.Department,
				CreatedAt: t0, UpdatedAt: t0,
			}, s)
			assert.True(t, tk.Exists())
			assert.Equal(t, int64(0), tk.Version())

			_, err = tk.Create(taskID, tt.spec)
			assert.ErrorIs(t, err, domain.ErrAlreadyExists)
		})
	}
}

func TestCreateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	events, err := task.New().Create("", task.Spec{
		Title: "   ", Description: strings.Repeat("d", task.MaxDescriptionLength+1), Status: "done", Priority: "urgent",
		AssigneeID: strings.Repeat("a", task.MaxRefLength+1), Department: strings.Repeat("b", task.MaxRefLength+1),
	})
	assert.Empty(t, events)
	assert.Equal(t, []string{"id", "title", "description", "status", "priority", "assignee_id", "department"}, problemFields(t, err))
}

func TestCreateTitleTooLong(t *testing.T) {
	t.Parallel()
	_, err := task.New().Create(taskID, task.Spec{Title: strings.Repeat("t", task.MaxTitleLength+1)})
	assert.Equal(t, []string{"title"}, problemFields(t, err))
}

func TestUpdateRecordsOnlyChangedFields(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		patch task.Patch
		then  []domain.Event // nil: no event
	}{
		{name: "nothing"},
		{name: "same values", patch: task.Patch{
			Title: ptr("Refresh the AMI"), Description: ptr("Build 2.9.1"), Status: ptr(task.StatusPending),
			Priority: ptr(task.PriorityMedium), AssigneeID: ptr("alice@example.com"), Department: ptr("netops"),
		}},
		{name: "same title with spaces", patch: task.Patch{Title: ptr("  Refresh the AMI  ")}},
		{
			name:  "one changed among unchanged",
			patch: task.Patch{Title: ptr("Refresh the AMI"), Priority: ptr(task.PriorityHigh), Department: ptr("netops")},
			then:  []domain.Event{task.Updated{Changes: task.Patch{Priority: ptr(task.PriorityHigh)}}},
		},
		{
			name:  "new title trimmed",
			patch: task.Patch{Title: ptr(" Rebuild the AMI ")},
			then:  []domain.Event{task.Updated{Changes: task.Patch{Title: ptr("Rebuild the AMI")}}},
		},
		{
			name:  "clearing optional fields",
			patch: task.Patch{Description: ptr(""), AssigneeID: ptr("")},
			then:  []domain.Event{task.Updated{Changes: task.Patch{Description: ptr(""), AssigneeID: ptr("")}}},
		},
		{
			name: "every field",
			patch: task.Patch{
				Title: ptr("Rebuild"), Description: ptr("2.9.2"), Status: ptr(task.StatusCompleted),
				Priority: ptr(task.PriorityLow), AssigneeID: ptr("bob@example.com"), Department: ptr("platform"),
			},
			then: []domain.Event{task.Updated{Changes: task.Patch{
				Title: ptr("Rebuild"), Description: ptr("2.9.2"), Status: ptr(task.StatusCompleted),
				Priority: ptr(task.PriorityLow), AssigneeID: ptr("bob@example.com"), Department: ptr("platform"),
			}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tk := fold(t, created)
			before := tk.State()

			events, err := tk.Update(tt.patch)

			require.NoError(t, err)
			assert.Equal(t, tt.then, events)
			assert.Equal(t, before, tk.State(), "Update does not change the task")
			if tt.then == nil {
				return
			}
			require.NoError(t, tk.Apply(events[0], t0.Add(time.Hour)))
			assert.Equal(t, t0.Add(time.Hour), tk.State().UpdatedAt)
			assert.Equal(t, int64(1), tk.Version())
			again, err := tk.Update(tt.patch)
			require.NoError(t, err)
			assert.Empty(t, again, "the same update again changes nothing")
		})
	}
}

func TestUpdateAppliesChanges(t *testing.T) {
	t.Parallel()
	tk := fold(t, created, task.Updated{Changes: task.Patch{Status: ptr(task.StatusInProgress), AssigneeID: ptr("bob@example.com")}})
	s := tk.State()
	assert.Equal(t, task.StatusInProgress, s.Status)
	assert.Equal(t, "bob@example.com", s.AssigneeID)
	assert.Equal(t, "Refresh the AMI", s.Title, "fields not in the change stay")
	assert.Equal(t, task.PriorityMedium, s.Priority)
	assert.Equal(t, t0, s.CreatedAt)
	assert.Equal(t, t0.Add(time.Minute), s.UpdatedAt)
}

func TestUpdateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	tk := fold(t, created)
	events, err := tk.Update(task.Patch{
		Title: ptr(""), Description: ptr(strings.Repeat("d", task.MaxDescriptionLength+1)), Status: ptr(task.Status("done")),
		Priority: ptr(task.Priority("urgent")), AssigneeID: ptr(strings.Repeat("a", task.MaxRefLength+1)),
		Department: ptr(strings.Repeat("b", task.MaxRefLength+1)),
	})
	assert.Empty(t, events)
	assert.Equal(t, []string{"title", "description", "status", "priority", "assignee_id", "department"}, problemFields(t, err))
}

func TestDelete(t *testing.T) {
	t.Parallel()
	tk := fold(t, created)
	events, err := tk.Delete()
	require.NoError(t, err)
	assert.Equal(t, []domain.Event{task.Deleted{}}, events)
	require.NoError(t, tk.Apply(events[0], t0.Add(time.Hour)))
	assert.False(t, tk.Exists())
	assert.True(t, tk.State().Deleted)
	assert.Equal(t, t0.Add(time.Hour), tk.State().UpdatedAt)
}

func TestMissingOrDeletedTask(t *testing.T) {
	t.Parallel()
	givens := map[string][]domain.Event{
		"missing": nil,
		"deleted": {created, task.Deleted{}},
	}
	for name, given := range givens {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tk := fold(t, given...)
			assert.False(t, tk.Exists())

			events, err := tk.Update(task.Patch{Title: ptr("New title")})
			assert.ErrorIs(t, err, domain.ErrNotFound)
			assert.Empty(t, events)

			events, err = tk.Delete()
			assert.ErrorIs(t, err, domain.ErrNotFound)
			assert.Empty(t, events)

			events, err = tk.Update(task.Patch{})
			assert.ErrorIs(t, err, domain.ErrNotFound, "even an empty update")
			assert.Empty(t, events)
		})
	}
}

func TestApplyUnknownEvent(t *testing.T) {
	t.Parallel()
	tk := fold(t, created)
	type foreign struct{ domain.Event }
	assert.Error(t, tk.Apply(foreign{}, t0))
	assert.Equal(t, int64(0), tk.Version(), "a refused event does not count")
	assert.Equal(t, t0, tk.State().UpdatedAt)
}

func TestStream(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "task-"+taskID, task.Stream(taskID))
	assert.Equal(t, int64(-1), task.New().Version())
}
