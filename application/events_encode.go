package application

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/domain"
)

// AppendEnvelope appends the JSON of rec's DomainEvent (see
// DomainEnvelope) to dst and returns it with the event's type as sent
// (the current type of an upcast event).
//
// Integrators catch up on the whole log through this, so it avoids the
// reflection of encoding/json on the common path: a current, non-secret
// event type whose stored data and metadata are valid JSON of the usual
// shape is written by hand, its payload and actor passed through as
// stored. Anything else (an old version, a redacted type, an unreadable
// event, unusual metadata) goes through DomainEnvelope and json.Marshal.
// Both produce the same document (TestAppendEnvelopeMatchesDomainEnvelope).
func (s *DomainSubscription) AppendEnvelope(dst []byte, rec *eventstore.RecordedEvent) ([]byte, string) {
	return s.envelope.append(dst, rec)
}

// AppendDomainEnvelope is AppendEnvelope for a registry.
func AppendDomainEnvelope(dst []byte, registry *domain.Registry, rec *eventstore.RecordedEvent) ([]byte, string) {
	return newEnvelopes(registry).append(dst, rec)
}

func (en *envelopes) append(dst []byte, rec *eventstore.RecordedEvent) ([]byte, string) {
	if out, ok := appendEnvelopeFast(dst, en.current, rec); ok {
		return out, rec.Type
	}
	ev := en.of(rec)
	b, err := json.Marshal(ev)
	if err != nil {
		// Data that does not encode (it never should: it is stored JSON or
		// a registered type) gives way to a decode error.
		ev.Data, ev.DecodeError = nil, "encode the payload: "+err.Error()
		b, _ = json.Marshal(ev)
	}
	return append(dst, b...), ev.Type
}

// envelopeMeta is the metadata of an event as the fast path reads it: raw
// JSON values, not decoded.
type envelopeMeta struct {
	actor, correlation, causation, command []byte
	occurred                               time.Time
}

// appendEnvelopeFast writes the envelope by hand. It relies on the event
// store's contract that stored data and metadata are JSON (both adapters
// refuse anything else with ErrInvalidAppend), so they are not validated
// again: the payload and the actor are copied as stored, whitespace
// included.
func appendEnvelopeFast(dst []byte, current map[string]bool, rec *eventstore.RecordedEvent) ([]byte, bool) {
	if !current[rec.Type] || redactedTypes[rec.Type] || len(rec.Data) == 0 {
		return dst, false
	}
	m, ok := readEnvelopeMeta(rec.Metadata)
	if !ok {
		return dst, false
	}
	recorded := rec.RecordedAt.UTC()
	occurred := m.occurred.UTC()
	if occurred.IsZero() {
		occurred = recorded
	}
	b := append(dst, `{"id":`...)
	b = appendJSONString(b, rec.ID)
	b = append(b, `,"position":"`...)
	b = appendPosition(b, rec.Position)
	b = append(b, `","type":`...)
	b = appendJSONString(b, rec.Type)
	b = append(b, `,"stream":`...)
	b = appendJSONString(b, rec.Stream)
	b = append(b, `,"revision":`...)
	b = strconv.AppendInt(b, int64(rec.Revision), 10)
	b = append(b, `,"data":`...)
	b = append(b, rec.Data...)
	b = append(b, `,"actor":`...)
	if m.actor == nil {
		b = append(b, `{"type":"","subject":""}`...)
	} else {
		b = append(b, m.actor...)
	}
	b = append(b, `,"correlation_id":`...)
	b = appendRawString(b, m.correlation)
	b = append(b, `,"causation_id":`...)
	b = appendRawString(b, m.causation)
	if len(m.command) > 2 { // omitempty: more than ""
		b = append(b, `,"command":`...)
		b = append(b, m.command...)
	}
	b = append(b, `,"occurred_at":"`...)
	b = occurred.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","recorded_at":"`...)
	b = recorded.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `"}`...)
	return b, true
}

// readEnvelopeMeta reads metadata (see Metadata) without decoding it,
// when it has the usual shape: a JSON object whose actor is an object of
// Actor's fields, whose ids and command are strings and whose occurred_at
// is an RFC 3339 time. ok is false otherwise; ParseMetadata then decides.
func readEnvelopeMeta(data []byte) (m envelopeMeta, ok bool) {
	if len(data) == 0 {
		return m, true
	}
	ok = eachMember(data, func(key, value []byte) bool {
		switch string(key) {
		case `"actor"`:
			m.actor = value
			var hasType, hasSubject bool
			return value[0] == '{' && eachMember(value, func(k, v []byte) bool {
				// The actor is copied as stored when it reads back as
				// encoding/json would write Actor: type and subject
				// present, username and roles present only when not
				// empty; anything else takes the slow path.
				switch string(k) {
				case `"type"`:
					hasType = true
					return v[0] == '"'
				case `"subject"`:
					hasSubject = true
					return v[0] == '"'
				case `"username"`:
					return v[0] == '"' && len(v) > 2
				case `"roles"`:
					n := 0
					return v[0] == '[' && eachElement(v, func(e []byte) bool { n++; return e[0] == '"' }) && n > 0
				}
				return false
			}) && hasType && hasSubject
		case `"correlation_id"`:
			m.correlation = value
			return value[0] == '"'
		case `"causation_id"`:
			m.causation = value
			return value[0] == '"'
		case `"command"`:
			m.command = value
			return value[0] == '"'
		case `"occurred_at"`:
			// As encoding/json reads a time.Time.
			return value[0] == '"' && m.occurred.UnmarshalJSON(value) == nil
		}
		// Another key is ignored, as ParseMetadata does, unless
		// encoding/json would match it to a field (it folds case and
		// unescapes).
		return bytes.IndexByte(key, '\\') < 0 && !foldsToMetadataKey(string(key))
	})
	return m, ok
}

func foldsToMetadataKey(quoted string) bool {
	for _, k := range []string{`"actor"`, `"correlation_id"`, `"causation_id"`, `"command"`, `"occurred_at"`} {
		if strings.EqualFold(quoted, k) {
			return true
		}
	}
	return false
}

// eachMember calls fn with each member of a JSON object, key quoted as
// written; it stops and returns false when fn does, or when v is not an
// object. v is expected to be valid JSON; other input never panics but
// may be read loosely.
func eachMember(v []byte, fn func(key, value []byte) bool) bool {
	i := skipSpace(v, 0)
	if i >= len(v) || v[i] != '{' {
		return false
	}
	i = skipSpace(v, i+1)
	for i < len(v) && v[i] != '}' {
		if v[i] != '"' {
			return false
		}
		ks := i
		i = skipString(v, i)
		key := v[ks:i]
		if i = skipSpace(v, i); i >= len(v) || v[i] != ':' {
			return false
		}
		vs := skipSpace(v, i+1)
		if i = skipValue(v, vs); i <= vs {
			return false
		}
		if !fn(key, v[vs:i]) {
			return false
		}
		i = skipSpace(v, i)
		if i < len(v) && v[i] == ',' {
			i = skipSpace(v, i+1)
		}
	}
	return true
}

// eachElement calls fn with each element of a valid JSON array.
func eachElement(v []byte, fn func(elem []byte) bool) bool {
	i := skipSpace(v, 0)
	if i >= len(v) || v[i] != '[' {
		return false
	}
	i = skipSpace(v, i+1)
	for i < len(v) && v[i] != ']' {
		es := i
		if i = skipValue(v, i); i <= es {
			return false
		}
		if !fn(v[es:i]) {
			return false
		}
		i = skipSpace(v, i)
		if i < len(v) && v[i] == ',' {
			i = skipSpace(v, i+1)
		}
	}
	return true
}

func skipSpace(v []byte, i int) int {
	for i < len(v) && (v[i] == ' ' || v[i] == '\t' || v[i] == '\n' || v[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at i.
func skipString(v []byte, i int) int {
	for i++; i < len(v); i++ {
		switch v[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

// skipValue returns the index after the value starting at i.
func skipValue(v []byte, i int) int {
	if i >= len(v) {
		return i
	}
	switch v[i] {
	case '"':
		return skipString(v, i)
	case '{', '[':
		depth := 0
		for i < len(v) {
			switch v[i] {
			case '"':
				i = skipString(v, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	}
	for ; i < len(v); i++ {
		switch v[i] {
		case ',', '}', ']', ' ', '\t', '\r', '\n':
			return i
		}
	}
	return i
}

// appendPosition appends p as Position.String writes it.
func appendPosition(dst []byte, p eventstore.Position) []byte {
	dst = strconv.AppendUint(dst, p.Commit, 10)
	if p.Prepare != p.Commit {
		dst = strconv.AppendUint(append(dst, '-'), p.Prepare, 10)
	}
	return dst
}

// appendRawString appends a JSON string value as stored, or "" when absent.
func appendRawString(dst, raw []byte) []byte {
	if raw == nil {
		return append(dst, `""`...)
	}
	return append(dst, raw...)
}

// appendJSONString appends s as a JSON string, escaped as encoding/json
// does (HTML characters included; invalid UTF-8 becomes U+FFFD).
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
