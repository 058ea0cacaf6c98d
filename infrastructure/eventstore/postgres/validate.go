package postgres

import (
	"math"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
)

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

// buildAppend validates an append (eventstore.CheckAppend) and converts it
// to the function's parameters. Every error wraps eventstore.ErrInvalidAppend.
func buildAppend(stream string, expected eventstore.Expected, events []eventstore.EventData) (*appendArgs, error) {
	if err := eventstore.CheckAppend(stream, events); err != nil {
		return nil, err
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
	for i, e := range events {
		a.ids[i], _ = parseUUID(e.ID) // canonical: checked above
		a.types[i] = e.Type
		a.data[i] = e.Data
		a.metadata[i] = e.Metadata
		if len(e.Metadata) == 0 {
			a.metadata[i] = eventstore.EmptyMetadata
		}
	}
	return a, nil
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
