package domain_test

// Golden fixtures: <aggregate>/testdata/events/<event type>.json is the
// stored form of every event type, written by hand. They are the
// stored-format contract: a change to an event's Go type that breaks reading
// old data, or a new field without a fixture update, fails here.

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/assert"

	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/settings"
	"github.com/cmlcloud/cml-cloud-manager/domain/task"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// goldenSets are the aggregates' events, fixture folders and the fields a
// realistic payload leaves unset (by event type and JSON path; keep them
// short).
var goldenSets = []struct {
	name   string
	events []domain.Event
	dir    string
	exempt map[string][]string
}{
	// A lab import carries YAML and no lab id; any other action carries a
	// lab id and no YAML. The fixture is an import.
	{"worker", worker.Events(), "worker/testdata/events", map[string][]string{"worker.lab_action_requested.v1": {"lab_id"}}},
	// A key cannot be both set and cleared in one change: the fixture
	// clears key_name, so it does not set it.
	{"settings", settings.Events(), "settings/testdata/events", map[string][]string{"settings.changed.v1": {"set.key_name"}}},
	{"task", task.Events(), "task/testdata/events", nil},
}

func TestGoldenFixtures(t *testing.T) {
	t.Parallel()
	for _, set := range goldenSets {
		t.Run(set.name, func(t *testing.T) {
			t.Parallel()
			reg := domain.NewRegistry(set.events...)
			for _, p := range checkFixtures(os.DirFS(set.dir), reg, set.exempt) {
				t.Error(p)
			}
		})
	}
}

// TestGoldenFixtureChecks shows that the fixture check fails on a stray file,
// a missing fixture, an unknown field, a missing field and a broken file.
func TestGoldenFixtureChecks(t *testing.T) {
	t.Parallel()
	t.Run("worker", func(t *testing.T) {
		t.Parallel()
		reg := domain.NewRegistry(worker.ProvisioningRetried{}, worker.EndpointChanged{}, worker.StopRequested{}, worker.InstanceLaunched{})
		fsys := fstest.MapFS{
			"worker.provisioning_retried.v1.json": {Data: []byte(`{"attempt": 2, "region": "eu-west-1"}`)},
			"worker.endpoint_changed.v1.json":     {Data: []byte(`{}`)},
			"worker.stop_requested.v1.json":       {Data: []byte(`{"reason": `)},
			"worker.bogus.v1.json":                {Data: []byte(`{}`)},
			"README.md":                           {Data: []byte(`notes`)},
		}
		got := strings.Join(checkFixtures(fsys, reg, nil), "\n")
		for _, want := range []string{
			`worker.bogus.v1.json: "worker.bogus.v1" is not a registered event type`,
			`README.md: not a .json fixture`,
			`worker.instance_launched.v1: no fixture`,
			`worker.provisioning_retried.v1.json: decode`,
			`worker.endpoint_changed.v1.json: endpoint: missing`,
			`worker.stop_requested.v1.json: decode`,
		} {
			assert.Contains(t, got, want)
		}
	})
	t.Run("settings", func(t *testing.T) {
		t.Parallel()
		reg := domain.NewRegistry(settings.Events()...)
		fsys := fstest.MapFS{
			"settings.changed.v1.json": {Data: []byte(`{"set": {"idle_timeout_seconds": 3600}, "cleared": ["ami_name"], "extra": 1}`)},
			"settings.changed.v2.json": {Data: []byte(`{}`)},
		}
		got := strings.Join(checkFixtures(fsys, reg, nil), "\n")
		for _, want := range []string{
			`settings.changed.v1.json: decode`,
			`settings.changed.v2.json: "settings.changed.v2" is not a registered event type`,
		} {
			assert.Contains(t, got, want)
		}
	})
	t.Run("task", func(t *testing.T) {
		t.Parallel()
		reg := domain.NewRegistry(task.Events()...)
		fsys := fstest.MapFS{
			"task.created.v1.json":  {Data: []byte(`{"task_id": "t-1", "title": "Title", "status": "pending", "priority": "low"}`)},
			"task.updated.v1.json":  {Data: []byte(`{"changes": {"title": "x"}}`)},
			"task.archived.v1.json": {Data: []byte(`{}`)},
		}
		got := strings.Join(checkFixtures(fsys, reg, nil), "\n")
		for _, want := range []string{
			`task.archived.v1.json: "task.archived.v1" is not a registered event type`,
			`task.created.v1.json: description: missing`,
			`task.updated.v1.json: changes.status: missing`,
			`task.deleted.v1: no fixture`,
		} {
			assert.Contains(t, got, want)
		}
	})
}

// checkFixtures returns every problem with the fixtures in fsys.
func checkFixtures(fsys fs.FS, reg *domain.Registry, exempt map[string][]string) []string {
	var problems []string
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return []string{err.Error()}
	}
	have := map[string]bool{}
	for _, e := range entries {
		file := e.Name()
		name, ok := strings.CutSuffix(file, ".json")
		if e.IsDir() || !ok {
			problems = append(problems, file+": not a .json fixture")
			continue
		}
		have[name] = true
		proto, ok := reg.New(name)
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: %q is not a registered event type", file, name))
			continue
		}
		data, err := fs.ReadFile(fsys, file)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", file, err))
			continue
		}
		for _, p := range checkFixture(reg, name, proto, data, exempt[name]) {
			problems = append(problems, file+": "+p)
		}
	}
	for _, name := range reg.Types() {
		if !have[name] {
			problems = append(problems, name+": no fixture in testdata/events")
		}
	}
	sort.Strings(problems)
	return problems
}

func checkFixture(reg *domain.Registry, name string, proto domain.Event, data []byte, exempt []string) []string {
	ev, err := reg.Decode(name, data)
	if err != nil {
		return []string{fmt.Sprintf("decode: %v", err)}
	}
	var problems []string
	if reflect.TypeOf(ev) != reflect.TypeOf(proto) {
		problems = append(problems, fmt.Sprintf("decoded as %T, registered %T", ev, proto))
	}
	// Re-encoding then decoding gives the same value...
	gotName, encoded, err := reg.Encode(ev)
	if err != nil {
		return append(problems, fmt.Sprintf("encode: %v", err))
	}
	if gotName != name {
		problems = append(problems, fmt.Sprintf("re-encoded as %q", gotName))
	}
	again, err := reg.Decode(gotName, encoded)
	if err != nil {
		return append(problems, fmt.Sprintf("decode re-encoded: %v", err))
	}
	if !reflect.DeepEqual(ev, again) {
		problems = append(problems, fmt.Sprintf("round trip changed the value:\n%#v\n%#v", ev, again))
	}
	// ...and the same JSON: nothing in the fixture is lost or renamed.
	var fixture, reencoded any
	if err := json.Unmarshal(data, &fixture); err != nil {
		return append(problems, fmt.Sprintf("fixture JSON: %v", err))
	}
	if err := json.Unmarshal(encoded, &reencoded); err != nil {
		return append(problems, fmt.Sprintf("re-encoded JSON: %v", err))
	}
	if !reflect.DeepEqual(fixture, reencoded) {
		problems = append(problems, fmt.Sprintf("re-encoded JSON differs:\nfixture:    %s\nre-encoded: %s", data, encoded))
	}
	// Every field is set.
	skip := map[string]bool{}
	for _, p := range exempt {
		skip[p] = true
	}
	return append(problems, unsetFields(reflect.TypeOf(proto), fixture, "", skip)...)
}

var jsonMarshaler = reflect.TypeFor[json.Marshaler]()

// unsetFields lists the JSON fields of typ that v (decoded JSON) leaves
// missing, null or empty, recursively.
func unsetFields(typ reflect.Type, v any, path string, skip map[string]bool) []string {
	at := func(msg string) []string {
		if path == "" {
			return []string{msg}
		}
		return []string{path + ": " + msg}
	}
	if v == nil {
		return at("missing")
	}
	if typ.Implements(jsonMarshaler) || reflect.PointerTo(typ).Implements(jsonMarshaler) {
		return nil // for example time.Time
	}
	switch typ.Kind() {
	case reflect.Pointer:
		return unsetFields(typ.Elem(), v, path, skip)
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			return at("not an object")
		}
		var out []string
		for i := range typ.NumField() {
			f := typ.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" {
				continue
			}
			if name == "" {
				name = f.Name
			}
			p := name
			if path != "" {
				p = path + "." + name
			}
			if skip[p] {
				continue
			}
			fv, present := obj[name]
			if !present || fv == nil {
				out = append(out, p+": missing")
				continue
			}
			out = append(out, unsetFields(f.Type, fv, p, skip)...)
		}
		return out
	case reflect.Slice, reflect.Array:
		arr, ok := v.([]any)
		if !ok || len(arr) == 0 {
			return at("empty")
		}
		var out []string
		for i, e := range arr {
			out = append(out, unsetFields(typ.Elem(), e, fmt.Sprintf("%s[%d]", path, i), skip)...)
		}
		return out
	case reflect.Map:
		if m, ok := v.(map[string]any); !ok || len(m) == 0 {
			return at("empty")
		}
	case reflect.String:
		if s, ok := v.(string); !ok || s == "" {
			return at("empty")
		}
	}
	return nil
}
