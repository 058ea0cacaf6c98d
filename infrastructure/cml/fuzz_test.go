package cml

import (
	"encoding/json"
	"math"
	"testing"
	"time"
	"unicode/utf8"
)

func checkPercent(t *testing.T, name string, p *float64) {
	t.Helper()
	if p != nil && (math.IsNaN(*p) || *p < 0 || *p > 100) {
		t.Fatalf("%s = %v, not a percentage", name, *p)
	}
}

func FuzzDecodeSystemStats(f *testing.F) {
	for _, seed := range []string{
		statsCaptured, `{}`, `{"all": {"cpu": {"count": 1e308, "percent": -5}}}`,
		`{"computes": {"a": {"stats": {"memory": {"used": 1e308, "total": 1e-308}, "disk": {"free": 1e308, "total": 1}}}}}`,
		`{"computes": {"a": {"stats": {"dominfo": {"total_nodes": 1e300, "running_nodes": -1e300}}}}}`,
		`{"computes": null}`, `[]`, `"x"`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		s, err := decodeSystemStats(body)
		if err != nil {
			return
		}
		checkPercent(t, "cpu", s.CPUPercent)
		checkPercent(t, "memory", s.MemoryPercent)
		checkPercent(t, "disk", s.DiskPercent)
		if s.NodesRunning < 0 || s.NodesTotal < 0 || s.CPUCount < 0 {
			t.Fatalf("negative count: %+v", s)
		}
		if math.IsNaN(s.MemoryTotal) || math.IsNaN(s.DiskTotal) || math.IsInf(s.MemoryTotal, 0) || math.IsInf(s.DiskTotal, 0) {
			t.Fatalf("NaN total: %+v", s)
		}
	})
}

func FuzzDecodeLicensing(f *testing.F) {
	for _, seed := range []string{
		licensingCaptured, `{}`, `{"registration": {"status": 1}}`, `{"registration_status": "COMPLETED"}`, `null`, `{"a":`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		l, err := decodeLicensing(body)
		if err != nil {
			return
		}
		if !json.Valid(l.Raw) {
			t.Fatalf("Raw is not JSON: %q", l.Raw)
		}
		_ = l.Status()
	})
}

func FuzzDecodeTelemetry(f *testing.F) {
	for _, seed := range []string{
		`[{"category": "user_activity", "timestamp": "2026-03-02T09:15:00.123456", "data": {"user_id": "00000000-0000-4000-8000-000000000001"}}]`,
		`[{"category": "start_lab", "timestamp": "2026-03-02 09:15:00", "data": null}]`,
		`[{"category": "x", "timestamp": 1e300}, {"category": "y", "timestamp": "2026-03-02T09:15:00+00:00Z"}]`,
		`[]`, `[1, "a", null, {}]`, `{}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		events, skipped, err := decodeTelemetry(body)
		if err != nil {
			return
		}
		if skipped < 0 {
			t.Fatal("negative skipped")
		}
		for _, e := range events {
			if e.Category == "" || e.Timestamp.IsZero() || e.Timestamp.Location() != time.UTC {
				t.Fatalf("bad event %+v", e)
			}
			if e.Data != nil && !json.Valid(e.Data) {
				t.Fatalf("data is not JSON: %q", e.Data)
			}
		}
	})
}

func FuzzErrorMessage(f *testing.F) {
	for _, seed := range []string{
		`{"code": 404, "description": "Lab not found"}`, `{"description": {"a": [1]}}`, `{"description": ["x"]}`,
		`<html><title>502 Bad Gateway</title></html>`, "plain", "", "\xff", `"quoted"`, `{"detail": null}`,
	} {
		f.Add(502, []byte(seed))
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		msg := errorMessage(status, body)
		if msg == "" {
			t.Fatal("empty message")
		}
		if len(msg) > maxMessage+len("…") {
			t.Fatalf("message of %d bytes", len(msg))
		}
		if utf8.Valid(body) && !utf8.ValidString(msg) {
			t.Fatalf("invalid UTF-8 from valid input: %q", msg)
		}
	})
}

func FuzzDecodeToken(f *testing.F) {
	f.Add([]byte(`"` + jwtWith(`{"exp": 1613837215, "iat": 1613750815}`) + `"`))
	f.Add([]byte(`{"token": "a.b.c"}`))
	f.Add([]byte(`"a.e30.c"`))
	f.Fuzz(func(t *testing.T, body []byte) {
		tok, _, err := decodeToken(body)
		if err != nil {
			return
		}
		if tok == "" {
			t.Fatal("empty token without error")
		}
		if exp, iat, ok := jwtTimes(tok); ok && (exp.IsZero() || (!iat.IsZero() && iat.Location() != time.UTC)) {
			t.Fatalf("bad times %v %v", exp, iat)
		}
	})
}
