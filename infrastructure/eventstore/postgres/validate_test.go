package postgres

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
)

var canonicalUUID = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

func FuzzParseUUID(f *testing.F) {
	for _, s := range []string{
		"0190a5b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b", "0190A5B2-7C3D-7E4F-8A1B-2C3D4E5F6A7B", "", "not-a-uuid",
		"0190a5b27c3d7e4f8a1b2c3d4e5f6a7b", "{0190a5b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b}", "0190a5b2-7c3d-7e4f-8a1b-2c3d4e5f6a7g",
		"0190a5b2+7c3d-7e4f-8a1b-2c3d4e5f6a7b", "0190a5b2-7c3d-7e4f-8a1b-2c3d4e5f6a7",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, ok := parseUUID(s)
		if ok != canonicalUUID.MatchString(s) {
			t.Fatalf("parseUUID(%q) ok = %v, canonical form: %v", s, ok, !ok)
		}
		if ok && formatUUID(u) != strings.ToLower(s) {
			t.Fatalf("parseUUID(%q) round trip gives %q", s, formatUUID(u))
		}
	})
}

func FuzzBuildAppend(f *testing.F) {
	f.Add("worker-1", "0190a5b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b", "worker.created.v1", []byte(`{"a":1}`), []byte(nil))
	f.Add("", "x", "", []byte(`{`), []byte(`}`))
	f.Add("s\x00", "0190a5b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b", "t", []byte(`1`), []byte(`"\xff"`))
	f.Add("s", "0190a5b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b", "t\xff", []byte(` [] `), []byte(`{}`))
	f.Fuzz(func(t *testing.T, stream, id, typ string, data, meta []byte) {
		e := eventstore.EventData{ID: id, Type: typ, Data: data, Metadata: meta}
		a, err := buildAppend(stream, eventstore.Exact(7), []eventstore.EventData{e, e})
		require.Error(t, err, "duplicate ids are always invalid")
		require.ErrorIs(t, err, eventstore.ErrInvalidAppend)
		require.Nil(t, a)

		a, err = buildAppend(stream, eventstore.Exact(7), []eventstore.EventData{e})
		valid := stream != "" && utf8.ValidString(stream) && !strings.ContainsRune(stream, 0) &&
			canonicalUUID.MatchString(id) &&
			typ != "" && utf8.ValidString(typ) && !strings.ContainsRune(typ, 0) &&
			utf8.Valid(data) && json.Valid(data) &&
			(len(meta) == 0 || (utf8.Valid(meta) && json.Valid(meta)))
		if !valid {
			require.ErrorIs(t, err, eventstore.ErrInvalidAppend)
			return
		}
		require.NoError(t, err)
		require.Equal(t, expectExact, a.kind)
		require.Equal(t, int64(7), a.revision)
		require.Equal(t, strings.ToLower(id), formatUUID(a.ids[0]))
		require.Equal(t, typ, a.types[0])
		require.Equal(t, data, a.data[0])
		require.True(t, json.Valid(a.metadata[0]))
	})
}

func TestBuildAppendExpectations(t *testing.T) {
	t.Parallel()
	e := eventstore.EventData{ID: "0190a5b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b", Type: "t", Data: []byte(`{}`)}
	cases := []struct {
		expected eventstore.Expected
		kind     int16
		revision int64
	}{
		{eventstore.Any, expectAny, 0},
		{eventstore.NoStream, expectNoStream, 0},
		{eventstore.StreamExists, expectStreamExists, 0},
		{eventstore.Exact(0), expectExact, 0},
		{eventstore.Exact(41), expectExact, 41},
		{eventstore.Exact(1 << 63), expectExact, -1}, // can never match
	}
	for _, c := range cases {
		a, err := buildAppend("s", c.expected, []eventstore.EventData{e})
		require.NoError(t, err)
		require.Equal(t, c.kind, a.kind, c.expected.String())
		require.Equal(t, c.revision, a.revision, c.expected.String())
		require.Equal(t, "{}", string(a.metadata[0]), "nil metadata becomes {}")
	}
}
