package eventstore

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// EmptyMetadata is what a store records for an event appended without
// metadata: metadata is always a JSON document.
var EmptyMetadata = []byte("{}")

// CheckAppend applies the rules every store enforces on an append, so that
// an application behaves the same on either: the stream name and each event
// type are names (see NameProblem); there is at least one event; each event
// id is a UUID in canonical text form, not repeated within the append; data
// is one JSON document and metadata, when given, too. Every error wraps
// ErrInvalidAppend.
func CheckAppend(stream string, events []EventData) error {
	if problem := NameProblem(stream); problem != "" {
		return invalidAppend("stream name %q %s", stream, problem)
	}
	if len(events) == 0 {
		return invalidAppend("append to %s: no events", stream)
	}
	seen := make(map[string]int, len(events))
	for i, e := range events {
		if !CanonicalUUID(e.ID) {
			return invalidAppend("append to %s: event %d: id %q is not a UUID", stream, i, e.ID)
		}
		id := strings.ToLower(e.ID)
		if j, dup := seen[id]; dup {
			return invalidAppend("append to %s: event %d: id %s repeats event %d", stream, i, e.ID, j)
		}
		seen[id] = i
		if problem := NameProblem(e.Type); problem != "" {
			return invalidAppend("append to %s: event %d: type %q %s", stream, i, e.Type, problem)
		}
		if !validJSON(e.Data) {
			return invalidAppend("append to %s: event %d (%s): data is not valid JSON", stream, i, e.Type)
		}
		if len(e.Metadata) > 0 && !validJSON(e.Metadata) {
			return invalidAppend("append to %s: event %d (%s): metadata is not valid JSON", stream, i, e.Type)
		}
	}
	return nil
}

// NameProblem tells what makes s unusable as a stream name or an event type
// in either store, or returns "": it is empty, is not valid UTF-8, contains
// a NUL character (a Postgres text column cannot hold it), or starts with $
// (reserved for EventStoreDB's own streams and events).
func NameProblem(s string) string {
	switch {
	case s == "":
		return "is empty"
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	case strings.IndexByte(s, 0) >= 0:
		return "contains a NUL character"
	case strings.HasPrefix(s, "$"):
		return "starts with $, which is reserved for the server"
	}
	return ""
}

// CanonicalUUID reports whether s is a UUID in canonical text form: 8-4-4-4-12
// hexadecimal digits, either case.
func CanonicalUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
		default:
			return false
		}
	}
	return true
}

// validJSON accepts one JSON document in valid UTF-8 (Postgres jsonb rejects
// invalid UTF-8).
func validJSON(b []byte) bool {
	return len(b) > 0 && utf8.Valid(b) && json.Valid(b)
}

func invalidAppend(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidAppend, fmt.Sprintf(format, args...))
}
