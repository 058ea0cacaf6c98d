package eventstore_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
)

func TestCheckAppend(t *testing.T) {
	t.Parallel()
	const id1, id2 = "0190c6a0-0000-7000-8000-000000000001", "0190c6a0-0000-7000-8000-000000000002"
	ok := eventstore.EventData{ID: id1, Type: "t.v1", Data: []byte(`{"a":1}`)}
	with := func(f func(e *eventstore.EventData)) []eventstore.EventData {
		e := ok
		f(&e)
		return []eventstore.EventData{e}
	}
	for _, tc := range []struct {
		name, stream string
		events       []eventstore.EventData
		want         string // "" accepted, else a part of the error
	}{
		{"accepted", "s-1", []eventstore.EventData{ok, {ID: strings.ToUpper(id2), Type: "t.v1", Data: []byte(`[]`), Metadata: []byte(`{}`)}}, ""},
		{"no events", "s-1", nil, "no events"},
		{"empty stream", "", []eventstore.EventData{ok}, "is empty"},
		{"system stream", "$settings", []eventstore.EventData{ok}, "reserved"},
		{"NUL in stream", "s\x00", []eventstore.EventData{ok}, "NUL"},
		{"bad UTF-8 type", "s-1", with(func(e *eventstore.EventData) { e.Type = "t\xff" }), "UTF-8"},
		{"system type", "s-1", with(func(e *eventstore.EventData) { e.Type = "$metadata" }), "reserved"},
		{"braced id", "s-1", with(func(e *eventstore.EventData) { e.ID = "{" + id1 + "}" }), "not a UUID"},
		{"short id", "s-1", with(func(e *eventstore.EventData) { e.ID = id1[:35] }), "not a UUID"},
		{"repeated id", "s-1", []eventstore.EventData{ok, {ID: strings.ToUpper(id1), Type: "t.v1", Data: []byte(`1`)}}, "repeats event 0"},
		{"bad data", "s-1", with(func(e *eventstore.EventData) { e.Data = []byte(`{`) }), "data is not valid JSON"},
		{"no data", "s-1", with(func(e *eventstore.EventData) { e.Data = nil }), "data is not valid JSON"},
		{"bad metadata", "s-1", with(func(e *eventstore.EventData) { e.Metadata = []byte("\xff") }), "metadata is not valid JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := eventstore.CheckAppend(tc.stream, tc.events)
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, eventstore.ErrInvalidAppend)
			require.ErrorContains(t, err, tc.want)
		})
	}
}
