package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain"
)

// TestProblemMapping maps every error kind of the application and the
// domain, wrapped as handlers return them, to its status, code and members.
func TestProblemMapping(t *testing.T) {
	t.Parallel()
	wrap := func(err error) error { return fmt.Errorf("handler: %w", err) }
	tests := []struct {
		name   string
		err    error
		status int
		code   string
		ext    map[string]any
		detail string
	}{
		{"Validation", wrap((&domain.Problems{{Field: "name", Message: "is required"}}).Err()), 400, CodeInvalid,
			map[string]any{"problems": []domain.Problem{{Field: "name", Message: "is required"}}}, ""},
		{"BareInvalid", wrap(domain.ErrInvalid), 400, CodeInvalid, nil, ""},
		{"Unauthenticated", wrap(rbac.ErrUnauthenticated), 401, CodeUnauthenticated, nil, ""},
		{"Forbidden", wrap(&rbac.ForbiddenError{Action: rbac.WorkerStart}), 403, CodeForbidden,
			map[string]any{"action": "worker.start"}, "worker.start is not allowed for your roles"},
		{"BareForbidden", wrap(rbac.ErrForbidden), 403, CodeForbidden, nil, ""},
		{"NotFound", wrap(&application.NotFoundError{Kind: "worker", ID: "w1"}), 404, CodeNotFound, nil, "Worker w1 not found."},
		{"BareNotFound", wrap(domain.ErrNotFound), 404, CodeNotFound, nil, "The resource does not exist."},
		{"IllegalTransition", wrap(&domain.TransitionError{Command: "start", State: "stopping", Reason: "wait"}), 409, CodeIllegalTransition,
			map[string]any{"current_status": "stopping"}, "Start is not allowed when stopping: wait."},
		{"AlreadyManaged", wrap(&application.AlreadyManagedError{InstanceID: "i-1", WorkerID: "w2"}), 409, CodeAlreadyExists,
			map[string]any{"worker_id": "w2"}, ""},
		{"AlreadyExists", wrap(domain.ErrAlreadyExists), 409, CodeAlreadyExists, nil, ""},
		{"Conflict", wrap(&application.ConflictError{Stream: "worker-x", Attempts: 5, Err: eventstore.ErrWrongExpectedVersion}), 409, CodeConflict, nil, ""},
		{"RebuildInProgress", wrap(fmt.Errorf("x: %w", application.ErrRebuildInProgress)), 409, CodeRebuildInProgress, nil, ""},
		{"Internal", wrap(errors.New("pq: password authentication failed for db-host")), 500, CodeInternal, nil, ""},
		{"Cancelled", wrap(context.Canceled), 500, CodeInternal, nil, ""},
		{"EchoError", wrap(NewProblem(http.StatusTeapot, "", "x")), http.StatusTeapot, CodeBadRequest, nil, "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := problemFor(tt.err)
			require.Equal(t, tt.status, p.Status)
			require.Equal(t, tt.code, p.Code)
			for k, v := range tt.ext {
				require.Equal(t, v, p.Extensions[k], k)
			}
			if tt.detail != "" {
				require.Equal(t, tt.detail, p.Detail)
			}
			require.NotContains(t, p.Detail, "db-host")
			_, err := p.MarshalJSON()
			require.NoError(t, err)
		})
	}
}
