package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/cmlcloud/cml-cloud-manager/application"
)

// fuzzDecoder checks decodeJSON on arbitrary bytes for one request type: it
// never panics; it fails only with a 400 or 413 problem that encodes as
// JSON; and a value it accepts encodes to JSON that decodes to the same
// value again.
func fuzzDecoder[T any](f *testing.F, seeds []string, check func(T) error) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"x":1}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"a":`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var v T
		err := decodeJSON(io.LimitReader(bytes.NewReader(data), 1<<16), &v)
		if err != nil {
			var p *Problem
			if !errors.As(err, &p) {
				t.Fatalf("error %v is not a *Problem", err)
			}
			if p.Status != http.StatusBadRequest && p.Status != http.StatusRequestEntityTooLarge {
				t.Fatalf("status %d for %q", p.Status, data)
			}
			if _, err := json.Marshal(p); err != nil {
				t.Fatalf("problem does not encode: %v", err)
			}
			return
		}
		out, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("accepted value does not encode: %v", err)
		}
		var again T
		if err := decodeJSON(bytes.NewReader(out), &again); err != nil {
			t.Fatalf("re-decoding %s: %v", out, err)
		}
		if out2, _ := json.Marshal(again); !bytes.Equal(out, out2) {
			t.Fatalf("round trip changed %s into %s", out, out2)
		}
		if check != nil {
			if err := check(v); err != nil {
				var p *Problem
				if !errors.As(err, &p) || p.Status != http.StatusBadRequest {
					t.Fatalf("check: %v", err)
				}
			}
		}
	})
}

func FuzzCreateWorkerRequest(f *testing.F) {
	fuzzDecoder[CreateWorkerRequest](f, []string{
		`{"name":"w","region":"us-east-1","tags":{"a":"b"},"detailed_monitoring":false}`,
		`{"name":"w","region":"us-east-1","colour":1}`,
	}, nil)
}

func FuzzTagsRequest(f *testing.F) {
	fuzzDecoder[TagsRequest](f, []string{`{"tags":{"team":"x"}}`, `{"tags":null}`, `{"tags":{"a":1}}`}, nil)
}

func FuzzMonitoringRequest(f *testing.F) {
	fuzzDecoder[MonitoringRequest](f, []string{`{"enabled":true}`, `{"enabled":"yes"}`}, nil)
}

func FuzzIdleDetectionRequest(f *testing.F) {
	fuzzDecoder(f, []string{`{"enabled":true,"timeout_minutes":30}`, `{"enabled":false,"timeout_minutes":-5}`, `{"timeout_minutes":1e30}`},
		func(r IdleDetectionRequest) error { _, _, err := r.check(); return err })
}

func FuzzLicenseRequest(f *testing.F) {
	fuzzDecoder[LicenseRequest](f, []string{`{"token":"abc","reregister":true}`}, nil)
}

func FuzzLabImportRequest(f *testing.F) {
	fuzzDecoder[LabImportRequest](f, []string{`{"title":"t","yaml":"lab: {}\n"}`, `{"yaml":"\u0000"}`}, nil)
}

func FuzzSettingsUpdateRequest(f *testing.F) {
	fuzzDecoder[SettingsUpdateRequest](f, []string{
		`{"set":{"instance_type":"c5.metal","ami_ids":{"us-east-1":"ami-0123456789abcdef0"}},"clear":["key_name"]}`,
		`{"set":{"idle_timeout_seconds":"x"}}`,
	}, nil)
}

func FuzzImportRequest(f *testing.F) {
	fuzzDecoder[application.ImportRequest](f, []string{
		`{"region":"us-east-1","instance_id":"i-0123456789abcdef0","name":"w"}`,
		`{"region":"us-east-1","ami_name_pattern":"cisco-cml2.9-*","all":true}`,
		`{"region":"us-east-1","ami_id":"ami-0123456789abcdef0","all":"yes"}`,
	}, nil)
}

func FuzzCreateTaskRequest(f *testing.F) {
	fuzzDecoder[CreateTaskRequest](f, []string{`{"title":"t","priority":"high","status":"pending"}`}, nil)
}

func FuzzUpdateTaskRequest(f *testing.F) {
	fuzzDecoder[UpdateTaskRequest](f, []string{`{"title":"t","assignee_id":null}`, `{"status":"completed"}`}, nil)
}

// TestDecodeJSONLimit: a body over the reader's limit is 413.
func TestDecodeJSONLimit(t *testing.T) {
	t.Parallel()
	body := `{"name":"` + strings.Repeat("a", 100) + `"}`
	r := http.MaxBytesReader(nil, io.NopCloser(strings.NewReader(body)), 50)
	var v CreateWorkerRequest
	err := decodeJSON(r, &v)
	var p *Problem
	if !errors.As(err, &p) || p.Status != http.StatusRequestEntityTooLarge || p.Code != CodeRequestTooLarge {
		t.Fatalf("err = %v, want a 413 request_too_large problem", err)
	}
}
