package domain_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/settings"
	"github.com/cmlcloud/cml-cloud-manager/domain/task"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// thing is a test event at its current version, v3. v1 had "name" instead of
// "title"; v2 had no "priority".
type thing struct {
	ID       string    `json:"id"`
	Title    string    `json:"title"`
	Priority int       `json:"priority"`
	At       time.Time `json:"at,omitzero"`
}

func (thing) EventType() string { return "test.thing.v3" }

type other struct {
	N int `json:"n"`
}

func (other) EventType() string { return "test.other.v1" }

// sameName collides with thing's type name.
type sameName struct{}

func (sameName) EventType() string { return "test.thing.v3" }

type unnamed struct{}

func (unnamed) EventType() string { return "" }

// rewrite returns an upcaster that decodes the JSON object, lets edit change
// it, and names the result next.
func rewrite(next string, edit func(m map[string]any)) domain.Upcaster {
	return func(data json.RawMessage) (string, json.RawMessage, error) {
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			return "", nil, err
		}
		edit(m)
		out, err := json.Marshal(m)
		return next, out, err
	}
}

func thingRegistry() *domain.Registry {
	r := domain.NewRegistry(thing{}, other{})
	r.RegisterUpcaster("test.thing.v1", rewrite("test.thing.v2", func(m map[string]any) {
		m["title"] = m["name"]
		delete(m, "name")
	}))
	r.RegisterUpcaster("test.thing.v2", rewrite("test.thing.v3", func(m map[string]any) {
		if _, ok := m["priority"]; !ok {
			m["priority"] = 3
		}
	}))
	return r
}

func TestRegistryRoundTrip(t *testing.T) {
	t.Parallel()
	reg := domain.NewRegistry(append(append(worker.Events(), settings.Events()...), task.Events()...)...)
	at := time.Date(2026, 3, 2, 14, 37, 12, 0, time.UTC)
	tests := []domain.Event{
		worker.Created{
			WorkerID: "0195a3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b", Name: "cml-lab-eu-1", Region: "eu-west-1",
			InstanceType: "c5.2xlarge", AMIID: "ami-0a1b2c3d4e5f67890", SecurityGroupIDs: []string{"sg-0123456789abcdef0"},
			Tags: map[string]string{"team": "netops"}, IdleDetectionEnabled: true,
		},
		worker.StopRequested{Reason: worker.StopIdleTimeout},
		worker.ActivityObserved{LastActivityAt: at, Category: "ui"},
		worker.Removed{},
		settings.Changed{Set: settings.Patch{IdleTimeoutSeconds: new(int64(7200))}, Cleared: []settings.Key{settings.KeyAMIName}},
		task.Updated{Changes: task.Patch{Title: new("Renamed")}},
		thing{ID: "x"}, // not registered here
	}
	for _, e := range tests {
		t.Run(e.EventType(), func(t *testing.T) {
			t.Parallel()
			name, data, err := reg.Encode(e)
			if _, ok := e.(thing); ok {
				assert.ErrorIs(t, err, domain.ErrUnknownEventType)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, e.EventType(), name)
			got, err := reg.Decode(name, data)
			require.NoError(t, err)
			assert.Equal(t, e, got)
		})
	}
}

func TestRegistryDecodeErrors(t *testing.T) {
	t.Parallel()
	reg := thingRegistry()
	tests := []struct {
		name      string
		eventType string
		data      string
		unknown   bool // errors.Is ErrUnknownEventType
	}{
		{"unknown type", "test.nothing.v1", `{}`, true},
		{"empty type", "", `{}`, true},
		{"unknown field", "test.thing.v3", `{"id":"x","title":"t","priority":1,"colour":"red"}`, false},
		{"unknown field after upcasting", "test.thing.v1", `{"id":"x","name":"t","colour":"red"}`, false},
		{"wrong field type", "test.thing.v3", `{"id":1}`, false},
		{"not JSON", "test.thing.v3", `id=x`, false},
		{"truncated", "test.thing.v3", `{"id":"x"`, false},
		{"empty data", "test.thing.v3", ``, false},
		{"bad time", "test.thing.v3", `{"at":"yesterday"}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ev, err := reg.Decode(tt.eventType, []byte(tt.data))
			require.Error(t, err)
			assert.Nil(t, ev)
			assert.Equal(t, tt.unknown, errors.Is(err, domain.ErrUnknownEventType), "ErrUnknownEventType: %v", err)
		})
	}
}

func TestRegistryUpcasterChain(t *testing.T) {
	t.Parallel()
	reg := thingRegistry()
	tests := []struct {
		name      string
		eventType string
		data      string
		want      thing
	}{
		{"v1 through v2 to v3", "test.thing.v1", `{"id":"a","name":"first"}`, thing{ID: "a", Title: "first", Priority: 3}},
		{"v2 to v3", "test.thing.v2", `{"id":"b","title":"second"}`, thing{ID: "b", Title: "second", Priority: 3}},
		{"v2 with a priority", "test.thing.v2", `{"id":"c","title":"third","priority":1}`, thing{ID: "c", Title: "third", Priority: 1}},
		{"current version untouched", "test.thing.v3", `{"id":"d","title":"fourth","priority":2}`, thing{ID: "d", Title: "fourth", Priority: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := reg.Decode(tt.eventType, []byte(tt.data))
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestRegistryLongUpcasterChain(t *testing.T) {
	t.Parallel()
	reg := domain.NewRegistry(thing{})
	const versions = 10
	for v := 1; v < versions; v++ {
		next := fmt.Sprintf("test.long.v%d", v+1)
		if v+1 == versions {
			next = "test.thing.v3"
		}
		reg.RegisterUpcaster(fmt.Sprintf("test.long.v%d", v), func(d json.RawMessage) (string, json.RawMessage, error) { return next, d, nil })
	}
	got, err := reg.Decode("test.long.v1", []byte(`{"id":"x"}`))
	require.NoError(t, err)
	assert.Equal(t, thing{ID: "x"}, got)
}

func TestRegistryUpcasterFailures(t *testing.T) {
	t.Parallel()
	identity := func(next string) domain.Upcaster {
		return func(d json.RawMessage) (string, json.RawMessage, error) { return next, d, nil }
	}
	boom := errors.New("boom")
	reg := domain.NewRegistry(thing{})
	reg.RegisterUpcaster("test.a.v1", identity("test.b.v1"))
	reg.RegisterUpcaster("test.b.v1", identity("test.a.v1"))
	reg.RegisterUpcaster("test.self.v1", identity("test.self.v1"))
	reg.RegisterUpcaster("test.fails.v1", func(json.RawMessage) (string, json.RawMessage, error) { return "", nil, boom })
	reg.RegisterUpcaster("test.dangling.v1", identity("test.dangling.v2"))

	t.Run("cycle", func(t *testing.T) {
		t.Parallel()
		done := make(chan error, 1)
		go func() {
			_, err := reg.Decode("test.a.v1", []byte(`{}`))
			done <- err
		}()
		select {
		case err := <-done:
			assert.Error(t, err)
		case <-time.After(5 * time.Second):
			t.Fatal("an upcaster cycle does not end")
		}
	})
	t.Run("self cycle", func(t *testing.T) {
		t.Parallel()
		_, err := reg.Decode("test.self.v1", []byte(`{}`))
		assert.Error(t, err)
	})
	t.Run("upcaster error", func(t *testing.T) {
		t.Parallel()
		_, err := reg.Decode("test.fails.v1", []byte(`{}`))
		assert.ErrorIs(t, err, boom)
	})
	t.Run("chain to nowhere", func(t *testing.T) {
		t.Parallel()
		_, err := reg.Decode("test.dangling.v1", []byte(`{}`))
		assert.ErrorIs(t, err, domain.ErrUnknownEventType)
	})
}

func TestRegistryPanics(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		do   func()
	}{
		{"duplicate registration", func() { domain.NewRegistry(thing{}, thing{}) }},
		{"two Go types with one name", func() { domain.NewRegistry(thing{}, sameName{}) }},
		{"duplicate through Register", func() { domain.NewRegistry(thing{}).Register(thing{}) }},
		{"pointer", func() { domain.NewRegistry(&thing{}) }},
		{"empty type name", func() { domain.NewRegistry(unnamed{}) }},
		{"upcaster for a current type", func() {
			domain.NewRegistry(thing{}).RegisterUpcaster("test.thing.v3", func(d json.RawMessage) (string, json.RawMessage, error) {
				return "", d, nil
			})
		}},
		{"every event registered twice", func() {
			all := append(append(worker.Events(), settings.Events()...), task.Events()...)
			domain.NewRegistry(append(all, worker.Created{})...)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			assert.Panics(t, tt.do)
		})
	}
}

func TestRegistryEncodeErrors(t *testing.T) {
	t.Parallel()
	reg := domain.NewRegistry(thing{})
	_, _, err := reg.Encode(other{N: 1})
	assert.ErrorIs(t, err, domain.ErrUnknownEventType)
	_, _, err = reg.Encode(&thing{ID: "x"})
	assert.Error(t, err, "a pointer is not the registered type")
}

func TestRegistryTypesAndNew(t *testing.T) {
	t.Parallel()
	reg := domain.NewRegistry(other{}, thing{})
	assert.Equal(t, []string{"test.other.v1", "test.thing.v3"}, reg.Types())
	e, ok := reg.New("test.thing.v3")
	require.True(t, ok)
	assert.Equal(t, thing{}, e)
	_, ok = reg.New("test.thing.v1")
	assert.False(t, ok, "New does not upcast")
}

// Every event of the product is registered once, under a stable, versioned
// name prefixed by its aggregate.
func TestAllEventNames(t *testing.T) {
	t.Parallel()
	nameRE := regexp.MustCompile(`^[a-z]+\.[a-z_]+\.v[1-9][0-9]*$`)
	groups := map[string][]domain.Event{"worker": worker.Events(), "settings": settings.Events(), "task": task.Events()}
	var all []domain.Event
	for prefix, events := range groups {
		for _, e := range events {
			assert.Regexp(t, nameRE, e.EventType())
			assert.True(t, strings.HasPrefix(e.EventType(), prefix+"."), "%s is not a %s event", e.EventType(), prefix)
		}
		all = append(all, events...)
	}
	reg := domain.NewRegistry(all...) // panics on a duplicate
	assert.Len(t, reg.Types(), 34+1+3)
}

func TestErrors(t *testing.T) {
	t.Parallel()
	t.Run("validation error lists every problem", func(t *testing.T) {
		t.Parallel()
		var ps domain.Problems
		assert.NoError(t, ps.Err())
		ps.Add("name", "is required")
		ps.Add("region", "%q is not an AWS region name", "Europe")
		err := ps.Err()
		require.ErrorIs(t, err, domain.ErrInvalid)
		assert.NotErrorIs(t, err, domain.ErrIllegalTransition)
		assert.Equal(t, `invalid input: name: is required; region: "Europe" is not an AWS region name`, err.Error())
		ps[0].Message = "changed"
		var ve *domain.ValidationError
		require.ErrorAs(t, err, &ve)
		assert.Equal(t, "is required", ve.Problems[0].Message, "Err copies the problems")
		assert.ErrorIs(t, fmt.Errorf("create worker: %w", err), domain.ErrInvalid)
	})
	t.Run("transition error", func(t *testing.T) {
		t.Parallel()
		err := error(&domain.TransitionError{Command: "start", State: "stopping", Reason: "wait until the instance has stopped"})
		assert.ErrorIs(t, err, domain.ErrIllegalTransition)
		assert.NotErrorIs(t, err, domain.ErrInvalid)
		assert.Equal(t, "start is not allowed when stopping: wait until the instance has stopped", err.Error())
		assert.Equal(t, "stop is not allowed when pending", (&domain.TransitionError{Command: "stop", State: "pending"}).Error())
		var te *domain.TransitionError
		require.ErrorAs(t, fmt.Errorf("worker x: %w", err), &te)
		assert.Equal(t, "stopping", te.State)
	})
}

// FuzzDecode feeds arbitrary type names and bytes to a registry holding every
// event. Decode must never panic; what it accepts must encode again, and
// encoding is stable from then on.
func FuzzDecode(f *testing.F) {
	reg := domain.NewRegistry(append(append(worker.Events(), settings.Events()...), task.Events()...)...)
	for _, set := range goldenSets {
		files, err := filepath.Glob(filepath.Join(set.dir, "*.json"))
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(strings.TrimSuffix(filepath.Base(file), ".json"), data)
		}
	}
	for _, seed := range []struct{ name, data string }{
		{"worker.created.v1", `null`},
		{"worker.created.v1", `[]`},
		{"worker.created.v1", `{"tags":{"a":null}}`},
		{"worker.activity_observed.v1", `{"last_activity_at":"0000-01-01T00:00:00+01:00"}`},
		{"worker.metrics_sampled.v1", `{"cml_cpu":1e308,"nodes_total":-0}`},
		{"settings.changed.v1", `{"set":{"ami_ids":{}},"cleared":["nope"]}`},
		{"task.updated.v1", `{"changes":{"title":null}}`},
		{"nope", `{}`},
		{"", ``},
	} {
		f.Add(seed.name, []byte(seed.data))
	}
	f.Fuzz(func(t *testing.T, eventType string, data []byte) {
		ev, err := reg.Decode(eventType, data)
		if err != nil {
			if ev != nil {
				t.Fatalf("Decode returned both %#v and %v", ev, err)
			}
			return
		}
		if ev == nil {
			t.Fatal("Decode returned neither an event nor an error")
		}
		if ev.EventType() != eventType {
			t.Fatalf("decoded %q as %q", eventType, ev.EventType())
		}
		name, encoded, err := reg.Encode(ev)
		if err != nil {
			t.Fatalf("a decoded %s does not encode: %v", eventType, err)
		}
		again, err := reg.Decode(name, encoded)
		if err != nil {
			t.Fatalf("re-encoded %s does not decode: %v\n%s", name, err, encoded)
		}
		_, encodedAgain, err := reg.Encode(again)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(encoded, encodedAgain) {
			t.Fatalf("encoding is not stable:\n%s\n%s", encoded, encodedAgain)
		}
	})
}
