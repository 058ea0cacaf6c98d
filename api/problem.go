package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"

	"github.com/labstack/echo/v4"
)

// ProblemContentType is the media type of every error response (RFC 9457).
const ProblemContentType = "application/problem+json"

// Stable problem codes. Clients switch on the code, never on the title or
// the detail, which are for humans and may change.
const (
	CodeBadRequest           = "bad_request"
	CodeUnauthorized         = "unauthorized"
	CodeForbidden            = "forbidden"
	CodeNotFound             = "not_found"
	CodeMethodNotAllowed     = "method_not_allowed"
	CodeConflict             = "conflict"
	CodeRequestTooLarge      = "request_too_large"
	CodeUnsupportedMediaType = "unsupported_media_type"
	CodeInvalid              = "invalid"
	CodeTooManyRequests      = "too_many_requests"
	CodeInternal             = "internal"
	CodeNotReady             = "not_ready"
	CodeUnavailable          = "unavailable"
)

// codeByStatus names the code of an error that carries only an HTTP status
// (Echo's own errors, for example). Statuses not listed fall back to
// bad_request (4xx) or internal (5xx).
var codeByStatus = map[int]string{
	http.StatusBadRequest:            CodeBadRequest,
	http.StatusUnauthorized:          CodeUnauthorized,
	http.StatusForbidden:             CodeForbidden,
	http.StatusNotFound:              CodeNotFound,
	http.StatusMethodNotAllowed:      CodeMethodNotAllowed,
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
	return &Problem{
		Status: http.StatusInternalServerError,
		Code:   CodeInternal,
		Detail: defaultDetail(http.StatusInternalServerError),
	}
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
