package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain"
)

// ProblemContentType is the media type of every error response (RFC 9457).
const ProblemContentType = "application/problem+json"

// Stable problem codes. Clients switch on the code, never on the title or
// the detail, which are for humans and may change.
const (
	CodeBadRequest           = "bad_request"
	CodeUnauthenticated      = "unauthenticated"
	CodeForbidden            = "forbidden"
	CodeNotFound             = "not_found"
	CodeMethodNotAllowed     = "method_not_allowed"
	CodeConflict             = "conflict"
	CodeIllegalTransition    = "illegal_transition"
	CodeAlreadyExists        = "already_exists"
	CodeRebuildInProgress    = "rebuild_in_progress"
	CodeRequestTooLarge      = "request_too_large"
	CodeUnsupportedMediaType = "unsupported_media_type"
	CodeNotAcceptable        = "not_acceptable"
	CodeInvalid              = "invalid"
	CodeTooManyRequests      = "too_many_requests"
	CodeInternal             = "internal"
	CodeNotReady             = "not_ready"
	CodeUnavailable          = "unavailable"
	CodeAmbiguous            = "ambiguous"
	CodeUpstreamUnavailable  = "upstream_unavailable"
	CodeUpstreamError        = "upstream_error"

	// CodeUnauthorized is the code of a 401, under its former constant
	// name; it equals CodeUnauthenticated.
	CodeUnauthorized = CodeUnauthenticated
)

// codeByStatus names the code of an error that carries only an HTTP status
// (Echo's own errors, for example). Statuses not listed fall back to
// bad_request (4xx) or internal (5xx).
var codeByStatus = map[int]string{
	http.StatusBadRequest:            CodeBadRequest,
	http.StatusUnauthorized:          CodeUnauthenticated,
	http.StatusForbidden:             CodeForbidden,
	http.StatusNotFound:              CodeNotFound,
	http.StatusMethodNotAllowed:      CodeMethodNotAllowed,
	http.StatusNotAcceptable:         CodeNotAcceptable,
	http.StatusConflict:              CodeConflict,
	http.StatusRequestEntityTooLarge: CodeRequestTooLarge,
	http.StatusUnsupportedMediaType:  CodeUnsupportedMediaType,
	http.StatusUnprocessableEntity:   CodeInvalid,
	http.StatusTooManyRequests:       CodeTooManyRequests,
	http.StatusInternalServerError:   CodeInternal,
	http.StatusServiceUnavailable:    CodeUnavailable,
}

// Problem is an RFC 9457 problem detail plus a stable machine-readable Code.
// It is also an error, so handlers can return it and the error handler
// writes it as is.
type Problem struct {
	// Type is a URI that identifies the problem type; "about:blank" (the
	// default) means the problem is what the HTTP status says.
	Type string
	// Title is a short human summary; for "about:blank" it is the status text.
	Title string
	// Status is the HTTP status code.
	Status int
	// Detail explains this occurrence to a human.
	Detail string
	// Instance optionally identifies this occurrence (a URI reference).
	Instance string
	// Code is the stable machine-readable code, such as "not_found".
	Code string
	// RequestID is the X-Request-ID of the request, filled in by the error
	// handler.
	RequestID string
	// Extensions are extra members written beside the standard ones (for
	// example "checks" on /readyz). Keys that clash with standard members are
	// ignored.
	Extensions map[string]any
}

// NewProblem returns an "about:blank" problem for status with the given code
// and detail.
func NewProblem(status int, code, detail string) *Problem {
	return &Problem{Status: status, Code: code, Detail: detail}
}

// Error implements error.
func (p *Problem) Error() string {
	if p.Detail != "" {
		return fmt.Sprintf("%d %s: %s", p.Status, p.Code, p.Detail)
	}
	return fmt.Sprintf("%d %s", p.Status, p.Code)
}

// MarshalJSON writes the standard members, the code, the request id and the
// extensions as one flat object.
func (p *Problem) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, 7+len(p.Extensions))
	maps.Copy(m, p.Extensions)
	typ := p.Type
	if typ == "" {
		typ = "about:blank"
	}
	title := p.Title
	if title == "" {
		title = http.StatusText(p.Status)
	}
	m["type"] = typ
	m["title"] = title
	m["status"] = p.Status
	m["code"] = p.Code
	delete(m, "detail")
	delete(m, "instance")
	delete(m, "request_id")
	if p.Detail != "" {
		m["detail"] = p.Detail
	}
	if p.Instance != "" {
		m["instance"] = p.Instance
	}
	if p.RequestID != "" {
		m["request_id"] = p.RequestID
	}
	return json.Marshal(m)
}

// handleError is Echo's HTTPErrorHandler: every error becomes a
// problem+json response. Only internal errors are logged here (with the
// request id); the access log records every response anyway.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		// Headers are gone already (for example a stream that failed half
		// way); all we can do is record it.
		s.logger.WarnContext(c.Request().Context(), "error after response started",
			slog.String("request_id", RequestID(c.Request().Context())),
			slog.Any("error", err))
		return
	}
	p := problemFor(err)
	p.RequestID = RequestID(c.Request().Context())
	if p.Status == http.StatusUnauthorized && c.Response().Header().Get(echo.HeaderWWWAuthenticate) == "" {
		c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="cml-cloud-manager"`)
	}
	if p.Code == CodeInternal && errors.Is(err, context.Canceled) && c.Request().Context().Err() != nil {
		// The client went away; nobody reads this response.
		s.logger.InfoContext(c.Request().Context(), "request cancelled by the client",
			slog.String("request_id", p.RequestID), slog.String("path", c.Request().URL.Path))
		_ = writeProblem(c, p)
		return
	}
	if p.Status >= http.StatusInternalServerError && p.Code == CodeInternal {
		s.logger.ErrorContext(c.Request().Context(), "internal error",
			slog.String("request_id", p.RequestID),
			slog.String("method", c.Request().Method),
			slog.String("path", c.Request().URL.Path),
			slog.Any("error", err))
	}
	if werr := writeProblem(c, p); werr != nil {
		s.logger.WarnContext(c.Request().Context(), "write problem response",
			slog.String("request_id", p.RequestID), slog.Any("error", werr))
	}
}

// problemFor maps any error to a problem. Errors that are neither a
// *Problem nor an *echo.HTTPError are internal: their text is never shown
// to the client.
func problemFor(err error) *Problem {
	var p *Problem
	if errors.As(err, &p) {
		cp := *p
		if cp.Status == 0 {
			cp.Status = http.StatusInternalServerError
		}
		if cp.Code == "" {
			cp.Code = codeFor(cp.Status)
		}
		return &cp
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		if inner, ok := he.Internal.(*echo.HTTPError); ok {
			he = inner
		}
		status := he.Code
		if status < 400 || status > 599 {
			status = http.StatusInternalServerError
		}
		out := &Problem{Status: status, Code: codeFor(status)}
		if status < http.StatusInternalServerError {
			if msg, ok := he.Message.(string); ok && msg != http.StatusText(status) {
				out.Detail = msg
			}
		}
		if out.Detail == "" {
			out.Detail = defaultDetail(status)
		}
		return out
	}
	if p := domainProblem(err); p != nil {
		return p
	}
	return &Problem{
		Status: http.StatusInternalServerError,
		Code:   CodeInternal,
		Detail: defaultDetail(http.StatusInternalServerError),
	}
}

// domainProblem maps the errors of the application and the domain; it
// returns nil for any other error. Details come from error types whose text
// is written for the client (they name ids and statuses, nothing internal).
func domainProblem(err error) *Problem {
	var (
		ve  *domain.ValidationError
		te  *domain.TransitionError
		am  *application.AlreadyManagedError
		nf  *application.NotFoundError
		ny  *application.NotYetError
		fe  *rbac.ForbiddenError
		amb *application.AmbiguousImportError
		lna *application.LabNotAvailableError
		ce  *application.CloudError
		out *Problem
	)
	switch {
	case errors.As(err, &amb):
		out = &Problem{Status: http.StatusBadRequest, Code: CodeAmbiguous, Detail: upperFirst(amb.Error()) + ".",
			Extensions: map[string]any{"instance_ids": amb.InstanceIDs}}
	case errors.As(err, &lna):
		out = &Problem{Status: http.StatusConflict, Code: CodeIllegalTransition, Detail: upperFirst(lna.Error()) + ".",
			Extensions: map[string]any{"current_status": lna.Status}}
	case errors.As(err, &ve):
		problems := make([]domain.Problem, len(ve.Problems))
		copy(problems, ve.Problems)
		out = &Problem{Status: http.StatusBadRequest, Code: CodeInvalid,
			Detail:     "The request is invalid; \"problems\" lists each reason.",
			Extensions: map[string]any{"problems": problems}}
	case errors.Is(err, domain.ErrInvalid):
		out = &Problem{Status: http.StatusBadRequest, Code: CodeInvalid, Detail: "The request is invalid.",
			Extensions: map[string]any{"problems": []domain.Problem{}}}
	case errors.Is(err, rbac.ErrUnauthenticated):
		out = &Problem{Status: http.StatusUnauthorized, Code: CodeUnauthenticated, Detail: "Authentication is required."}
	case errors.As(err, &fe):
		out = &Problem{Status: http.StatusForbidden, Code: CodeForbidden, Detail: fe.Error(),
			Extensions: map[string]any{"action": string(fe.Action)}}
	case errors.Is(err, rbac.ErrForbidden):
		out = &Problem{Status: http.StatusForbidden, Code: CodeForbidden, Detail: "Your roles do not allow this."}
	case errors.As(err, &ny):
		out = &Problem{Status: http.StatusNotFound, Code: CodeNotFound, Detail: ny.Error()}
	case errors.As(err, &nf):
		out = &Problem{Status: http.StatusNotFound, Code: CodeNotFound, Detail: upperFirst(nf.Error()) + "."}
	case errors.Is(err, domain.ErrNotFound):
		out = &Problem{Status: http.StatusNotFound, Code: CodeNotFound, Detail: "The resource does not exist."}
	case errors.As(err, &te):
		out = &Problem{Status: http.StatusConflict, Code: CodeIllegalTransition, Detail: upperFirst(te.Error()) + ".",
			Extensions: map[string]any{"current_status": te.State}}
	case errors.Is(err, domain.ErrIllegalTransition):
		out = &Problem{Status: http.StatusConflict, Code: CodeIllegalTransition, Detail: "The resource's current state does not allow this."}
	case errors.As(err, &am):
		out = &Problem{Status: http.StatusConflict, Code: CodeAlreadyExists, Detail: upperFirst(am.Error()) + ".",
			Extensions: map[string]any{"worker_id": am.WorkerID}}
	case errors.Is(err, domain.ErrAlreadyExists):
		out = &Problem{Status: http.StatusConflict, Code: CodeAlreadyExists, Detail: "The resource already exists."}
	case errors.Is(err, application.ErrConflict):
		out = &Problem{Status: http.StatusConflict, Code: CodeConflict,
			Detail: "The resource kept changing concurrently while this request was applied; try again."}
	case errors.Is(err, application.ErrRebuildInProgress):
		out = &Problem{Status: http.StatusConflict, Code: CodeRebuildInProgress,
			Detail: "A rebuild of this read model is already running."}
	case errors.As(err, &ce):
		out = cloudProblem(ce)
	}
	return out
}

func codeFor(status int) string {
	if code, ok := codeByStatus[status]; ok {
		return code
	}
	if status >= http.StatusInternalServerError {
		return CodeInternal
	}
	return CodeBadRequest
}

func defaultDetail(status int) string {
	switch status {
	case http.StatusNotFound:
		return "No resource exists at this path."
	case http.StatusMethodNotAllowed:
		return "The resource does not support this method; the Allow header lists those it does."
	case http.StatusInternalServerError:
		return "An internal error occurred; it has been logged with the request id."
	}
	return ""
}

func writeProblem(c echo.Context, p *Problem) error {
	if c.Request().Method == http.MethodHead {
		return c.NoContent(p.Status)
	}
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode problem: %w", err)
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.Blob(p.Status, ProblemContentType, b)
}

// cloudProblem maps a failed call to AWS or a CML controller made on the
// caller's behalf: 503 when it may succeed if retried later, 502 otherwise.
// The detail names the operation, the kind and the provider's error code,
// never the provider's message (which may carry account details).
func cloudProblem(ce *application.CloudError) *Problem {
	ext := map[string]any{"operation": ce.Op, "kind": string(ce.Kind)}
	if ce.Code != "" {
		ext["upstream_code"] = ce.Code
	}
	if ce.Retryable() {
		return &Problem{Status: http.StatusServiceUnavailable, Code: CodeUpstreamUnavailable,
			Detail:     fmt.Sprintf("The call %s did not succeed (%s); try again shortly.", ce.Op, ce.Kind),
			Extensions: ext}
	}
	return &Problem{Status: http.StatusBadGateway, Code: CodeUpstreamError,
		Detail:     fmt.Sprintf("The call %s failed (%s).", ce.Op, ce.Kind),
		Extensions: ext}
}
