package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// Body size limits.
const (
	// MaxJSONBody bounds every JSON request body except lab imports.
	MaxJSONBody = 1 << 20
	// MaxLabBody bounds a lab import: the largest topology the domain
	// accepts plus room for JSON escaping and the other fields.
	MaxLabBody = worker.MaxLabYAMLBytes + 256<<10
)

// Media types.
const (
	mimeJSON = "application/json"
	mimeYAML = "application/yaml"
	mimeCSV  = "text/csv"
)

// mediaType returns the request's media type without parameters, lower-case.
func mediaType(r *http.Request) string {
	ct := r.Header.Get(echo.HeaderContentType)
	if ct == "" {
		return ""
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return "invalid"
	}
	return strings.ToLower(mt)
}

func isJSONMedia(mt string) bool {
	return mt == mimeJSON || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
}

func unsupportedMedia(want ...string) *Problem {
	return NewProblem(http.StatusUnsupportedMediaType, CodeUnsupportedMediaType,
		"The request body must be "+strings.Join(want, " or ")+"; set Content-Type accordingly.")
}

// bindJSON decodes the request's JSON body into dst, at most limit bytes.
func bindJSON(c echo.Context, limit int64, dst any) error {
	if !isJSONMedia(mediaType(c.Request())) {
		return unsupportedMedia(mimeJSON)
	}
	return decodeJSON(http.MaxBytesReader(c.Response(), c.Request().Body, limit), dst)
}

// decodeJSON reads exactly one JSON value into dst, rejecting unknown fields
// and trailing data. Its errors are *Problem values: 400 bad_request for
// malformed JSON, 400 invalid for a well-formed body with unknown fields or
// values of the wrong type, 413 for a body over the reader's limit.
func decodeJSON(r io.Reader, dst any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return jsonProblem(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return jsonProblem(err)
		}
		return NewProblem(http.StatusBadRequest, CodeBadRequest, "The body holds data after the JSON value.")
	}
	return nil
}

// unknownFieldRE matches encoding/json's error for a field DisallowUnknownFields rejects.
var unknownFieldRE = regexp.MustCompile(`^json: unknown field "(.*)"$`)

func jsonProblem(err error) *Problem {
	var (
		mbe *http.MaxBytesError
		se  *json.SyntaxError
		ute *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &mbe):
		return NewProblem(http.StatusRequestEntityTooLarge, CodeRequestTooLarge,
			fmt.Sprintf("The body is larger than %d bytes.", mbe.Limit))
	case errors.Is(err, io.EOF):
		return NewProblem(http.StatusBadRequest, CodeBadRequest, "A JSON body is required.")
	case errors.As(err, &se):
		return NewProblem(http.StatusBadRequest, CodeBadRequest, fmt.Sprintf("The body is not valid JSON (at byte %d).", se.Offset))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return NewProblem(http.StatusBadRequest, CodeBadRequest, "The body ends in the middle of a JSON value.")
	case errors.As(err, &ute):
		field := ute.Field
		if field == "" {
			field = "(body)"
		}
		return invalid(field, "must be "+jsonKind(ute.Type.Kind().String()))
	}
	if m := unknownFieldRE.FindStringSubmatch(err.Error()); m != nil {
		return invalid(m[1], "is not a known field")
	}
	return NewProblem(http.StatusBadRequest, CodeBadRequest, "The body is not valid JSON.")
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "an integer"
	case "float32", "float64":
		return "a number"
	case "slice", "array":
		return "an array"
	case "map", "struct":
		return "an object"
	}
	return "of another type"
}

// invalid is a 400 invalid problem with one field problem.
func invalid(field, message string) *Problem {
	return problemsOf(domain.Problems{{Field: field, Message: message}})
}

// problemsOf is the 400 invalid problem listing ps (which must not be empty).
func problemsOf(ps domain.Problems) *Problem {
	return domainProblem(ps.Err())
}

// params collects the problems of a request's path and query parameters, so
// that one response lists them all.
type params struct {
	c        echo.Context
	problems domain.Problems
}

func newParams(c echo.Context) *params { return &params{c: c} }

// err returns the 400 invalid problem, or nil when every parameter is fine.
func (p *params) err() error {
	if len(p.problems) == 0 {
		return nil
	}
	return problemsOf(p.problems)
}

// query returns a query parameter; given twice is a problem.
func (p *params) query(name string, maxLen int) string {
	vals := p.c.QueryParams()[name]
	switch {
	case len(vals) == 0:
		return ""
	case len(vals) > 1:
		p.problems.Add(name, "is given more than once")
		return ""
	case len(vals[0]) > maxLen:
		p.problems.Add(name, "is longer than %d characters", maxLen)
		return ""
	}
	return vals[0]
}

// id returns a path parameter that must be a canonical UUID.
func (p *params) id(name string) string {
	v := p.c.Param(name)
	if !application.ValidID(v) {
		p.problems.Add(name, "%q is not a valid id (a lower-case UUID)", truncateForMessage(v))
	}
	return v
}

// labIDRE is the form of a CML lab id as the domain accepts it.
var labIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// labID returns the lab path parameter.
func (p *params) labID(name string) string {
	v := p.c.Param(name)
	if !labIDRE.MatchString(v) {
		p.problems.Add(name, "%q is not a lab id", truncateForMessage(v))
	}
	return v
}

// integer returns an integer query parameter between min and max, or def
// when absent.
func (p *params) integer(name string, def, minV, maxV int) int {
	s := p.query(name, 20)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < minV || n > maxV {
		p.problems.Add(name, "must be an integer between %d and %d", minV, maxV)
		return def
	}
	return n
}

// boolean returns a true/false query parameter (false when absent).
func (p *params) boolean(name string) bool {
	switch s := p.query(name, 5); s {
	case "", "false", "0":
		return false
	case "true", "1":
		return true
	default:
		p.problems.Add(name, "must be true or false")
		return false
	}
}

// time returns an RFC 3339 query parameter (zero when absent and not
// required).
func (p *params) time(name string, required bool) time.Time {
	s := p.query(name, 64)
	if s == "" {
		if required {
			p.problems.Add(name, "is required (an RFC 3339 time, such as 2026-01-02T15:04:05Z)")
		}
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		p.problems.Add(name, "must be an RFC 3339 time, such as 2026-01-02T15:04:05Z")
		return time.Time{}
	}
	return t
}

// truncateForMessage keeps a client's bad value short in an error message.
func truncateForMessage(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// readBody reads a raw body of at most limit bytes.
func readBody(c echo.Context, limit int64) ([]byte, error) {
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(http.MaxBytesReader(c.Response(), c.Request().Body, limit)); err != nil {
		return nil, readBodyProblem(err)
	}
	return buf.Bytes(), nil
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
