package postgres

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
)

// emptyMetadata replaces nil or empty metadata.
var emptyMetadata = []byte("{}")

// Expected kinds as eventstore_append's p_expected_kind understands them.
const (
	expectAny          int16 = 0
	expectNoStream     int16 = 1
	expectStreamExists int16 = 2
	expectExact        int16 = 3
)

// appendArgs are the parameters of one eventstore_append call.
type appendArgs struct {
	stream   string
	kind     int16
	revision int64
	ids      [][16]byte
	types    []string
	data     [][]byte
	metadata [][]byte
}

func (a *appendArgs) values() []any {
	return []any{a.stream, a.kind, a.revision, a.ids, a.types, a.data, a.metadata}
}

// buildAppend validates an append and converts it to the function's
// parameters. Every error wraps eventstore.ErrInvalidAppend.
func buildAppend(stream string, expected eventstore.Expected, events []eventstore.EventData) (*appendArgs, error) {
	if problem := textProblem(stream); problem != "" {
		return nil, invalid("stream name %q %s", stream, problem)
	}
	if len(events) == 0 {
		return nil, invalid("append to %s: no events", stream)
	}
	a := &appendArgs{
		stream:   stream,
		ids:      make([][16]byte, len(events)),
		types:    make([]string, len(events)),
		data:     make([][]byte, len(events)),
		metadata: make([][]byte, len(events)),
	}
	switch rev, exact := expected.Revision(); {
	case exact:
		a.kind = expectExact
		if rev > math.MaxInt64 {
			// No stream can be at that revision; -1 never matches.
			a.revision = -1
		} else {
			a.revision = int64(rev)
		}
	case expected.IsNoStream():
		a.kind = expectNoStream
	case expected.IsStreamExists():
		a.kind = expectStreamExists
	default:
		a.kind = expectAny
	}
	seen := make(map[[16]byte]int, len(events))
	for i, e := range events {
		id, ok := parseUUID(e.ID)
		if !ok {
			return nil, invalid("append to %s: event %d: id %q is not a UUID", stream, i, e.ID)
		}
		if j, dup := seen[id]; dup {
			return nil, invalid("append to %s: event %d: id %s repeats event %d", stream, i, e.ID, j)
		}
		seen[id] = i
		if problem := textProblem(e.Type); problem != "" {
			return nil, invalid("append to %s: event %d: type %q %s", stream, i, e.Type, problem)
		}
		if !validJSON(e.Data) {
			return nil, invalid("append to %s: event %d (%s): data is not valid JSON", stream, i, e.Type)
		}
		meta := e.Metadata
		if len(meta) == 0 {
			meta = emptyMetadata
		} else if !validJSON(meta) {
			return nil, invalid("append to %s: event %d (%s): metadata is not valid JSON", stream, i, e.Type)
		}
		a.ids[i] = id
		a.types[i] = e.Type
		a.data[i] = e.Data
		a.metadata[i] = meta
	}
	return a, nil
}

// textProblem tells what makes s unusable as a stream name or event type: it
// is empty, or a Postgres text column cannot hold it (invalid UTF-8, NUL).
// It returns "" when s is fine.
func textProblem(s string) string {
	switch {
	case s == "":
		return "is empty"
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	case strings.IndexByte(s, 0) >= 0:
		return "contains a NUL character"
	}
	return ""
}

// validJSON accepts one JSON document in valid UTF-8 (jsonb rejects invalid
// UTF-8; it also rejects \u0000, which the append maps from SQLSTATE class 22).
func validJSON(b []byte) bool {
	return len(b) > 0 && utf8.Valid(b) && json.Valid(b)
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", eventstore.ErrInvalidAppend, fmt.Sprintf(format, args...))
}

// parseUUID reads a UUID in canonical text form (8-4-4-4-12 hexadecimal
// digits, either case).
func parseUUID(s string) ([16]byte, bool) {
	var u [16]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, false
	}
	j := 0
	for i := 0; i < 36; {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			i++
			continue
		}
		hi, ok1 := fromHex(s[i])
		lo, ok2 := fromHex(s[i+1])
		if !ok1 || !ok2 {
			return u, false
		}
		u[j] = hi<<4 | lo
		j++
		i += 2
	}
	return u, true
}

func fromHex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// formatUUID writes u in canonical lower-case text form.
func formatUUID(u [16]byte) string {
	const digits = "0123456789abcdef"
	var b [36]byte
	j := 0
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b[j] = '-'
			j++
		}
		b[j] = digits[c>>4]
		b[j+1] = digits[c&0xf]
		j += 2
	}
	return string(b[:])
}
