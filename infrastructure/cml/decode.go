package cml

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// The controller's JSON varies between releases (fields added, nullable,
// integers sent as 2791538688.0). Decoding is lenient: unknown fields are
// ignored, a value of an unexpected type leaves its field unset, and only a
// document that is not JSON (or not of the expected top-level shape) fails.

// decodeObject decodes a JSON object into v, ignoring type mismatches.
func decodeObject(body []byte, v any) error {
	return decodeLenient(body, '{', v)
}

// decodeArray decodes a JSON array into v, ignoring type mismatches.
func decodeArray(body []byte, v any) error {
	return decodeLenient(body, '[', v)
}

func decodeLenient(body []byte, open byte, v any) error {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return errors.New("empty body")
	}
	if body[0] != open {
		want := "object"
		if open == '[' {
			want = "array"
		}
		return fmt.Errorf("want a JSON %s, got %s", want, snippet(body))
	}
	err := json.Unmarshal(body, v)
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		return nil // encoding/json fills every other field and reports the first mismatch
	}
	return err
}

func snippet(b []byte) string {
	if len(b) > 32 {
		return strconv.Quote(string(b[:32])) + "…"
	}
	return strconv.Quote(string(b))
}

// number is a JSON number (integer or float), a numeric string, or null.
type number struct {
	v  float64
	ok bool
}

// UnmarshalJSON never fails: a value that is not a finite number leaves n
// unset.
func (n *number) UnmarshalJSON(b []byte) error {
	*n = number{}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		var s string
		if json.Unmarshal(b, &s) != nil {
			return nil
		}
		if f, err = strconv.ParseFloat(strings.TrimSpace(s), 64); err != nil {
			return nil
		}
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil
	}
	n.v, n.ok = f, true
	return nil
}

// int returns the number as an int, clamped to a sane range.
func (n number) int() int {
	if !n.ok {
		return 0
	}
	return int(math.Max(math.Min(math.Round(n.v), 1<<53), -(1 << 53)))
}

// flag is a JSON boolean (or "true"/"false"), or null.
type flag struct {
	v  bool
	ok bool
}

// UnmarshalJSON never fails: anything but a boolean leaves f unset.
func (f *flag) UnmarshalJSON(b []byte) error {
	*f = flag{}
	var v bool
	if json.Unmarshal(b, &v) == nil {
		f.v, f.ok = v, true
		return nil
	}
	var s string
	if json.Unmarshal(b, &s) == nil {
		if v, err := strconv.ParseBool(strings.TrimSpace(s)); err == nil {
			f.v, f.ok = v, true
		}
	}
	return nil
}

// text is a JSON string; any other value leaves it empty.
type text string

// UnmarshalJSON never fails.
func (t *text) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		*t = text(s)
	} else {
		*t = ""
	}
	return nil
}

// timeLayouts are the timestamp forms CML uses: ISO 8601 with an offset
// (labs), naive ISO 8601 with a T (telemetry) and naive with a space
// (licensing). A timestamp without a zone is UTC.
var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02T15:04:05.999999999Z0700",
	"2006-01-02T15:04Z07:00",
	"2006-01-02T15:04",
}

// parseTime reads a CML timestamp; ok is false when it is in no known form.
func parseTime(s string) (time.Time, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, false
	}
	// "2025-11-19T10:00:00+00:00Z": an offset followed by a stray Z.
	if n := len(s); n > 7 && s[n-1] == 'Z' && (s[n-7] == '+' || s[n-7] == '-') && s[n-4] == ':' {
		s = s[:n-1]
	}
	for _, layout := range timeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}

// timestamp is a JSON timestamp: a string in one of timeLayouts, or a number
// of seconds since the Unix epoch.
type timestamp struct {
	t  time.Time
	ok bool
}

// UnmarshalJSON never fails: an unreadable timestamp leaves ts unset.
func (ts *timestamp) UnmarshalJSON(b []byte) error {
	*ts = timestamp{}
	var s string
	if json.Unmarshal(b, &s) == nil {
		ts.t, ts.ok = parseTime(s)
		return nil
	}
	var n number
	_ = n.UnmarshalJSON(b)
	if n.ok && n.v > 0 && n.v < 1e11 {
		ts.t, ts.ok = unixTime(n.v), true
	}
	return nil
}
