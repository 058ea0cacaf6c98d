package cml

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
)

// statsCaptured is the shape captured from a CML 2.9.1 controller
// (reference section 3.3): bytes as floats, one compute.
const statsCaptured = `{
  "computes": {"7c3a0d2e-0000-4000-8000-000000000001": {"hostname": "cml-controller", "is_controller": true,
    "stats": {
      "cpu": {"count": 6, "percent": 4.17, "model": "Intel(R) Core(TM) i7-5960X CPU @ 3.00GHz", "predicted": 43, "load": [0.19, 0.22, 0.18]},
      "memory": {"used": 2791538688.0, "free": 13624754176.0, "total": 16748994560.0},
      "disk": {"used": 82798108672.0, "free": 37041123328.0, "total": 119839232000.0},
      "dominfo": {"total_nodes": 182, "total_orphans": 50, "running_nodes": 8, "running_orphans": 0, "allocated_cpus": 7, "allocated_memory": 6291456}}}},
  "all": {"cpu": {"count": 6, "percent": 4.17}, "memory": {"used": 2791538688.0, "free": 13624754176.0, "total": 16748994560.0},
          "disk": {"used": 82798108672.0, "free": 37041123328.0, "total": 119839232000.0}},
  "controller": {"disk": {"used": 77848326144.0, "free": 37041123328.0, "total": 119839232000.0}}}`

func ptr(f float64) *float64 { return &f }

func TestDecodeSystemStats(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want application.CMLSystemStats
		err  bool
	}{
		{name: "captured 2.9.1", body: statsCaptured, want: application.CMLSystemStats{
			CPUCount: 6, CPUPercent: ptr(4.17),
			MemoryPercent: ptr(100 * 2791538688.0 / 16748994560.0), DiskPercent: ptr(100 * 82798108672.0 / 119839232000.0),
			MemoryTotal: 16748994560, DiskTotal: 119839232000, NodesRunning: 8, NodesTotal: 182,
		}},
		{name: "two computes are summed, CPU weighted by count", body: `{"computes": {
			"a": {"stats": {"cpu": {"count": 4, "percent": 10}, "memory": {"used": 1.0e9, "total": 4.0e9},
			      "disk": {"free": 75.0, "total": 100.0}, "dominfo": {"total_nodes": 3, "running_nodes": 1}}},
			"b": {"stats": {"cpu": {"count": 12.0, "percent": "50"}, "memory": {"used": 3e9, "total": 4e9},
			      "disk": {"used": 25, "total": 100}, "dominfo": {"total_nodes": 5.0, "running_nodes": null}}}}}`,
			want: application.CMLSystemStats{
				CPUCount: 16, CPUPercent: ptr(40), MemoryPercent: ptr(50), DiskPercent: ptr(25),
				MemoryTotal: 8e9, DiskTotal: 200, NodesRunning: 1, NodesTotal: 8,
			}},
		{name: "no computes: the all section", body: `{"all": {"cpu": {"count": 2, "percent": 12.5}, "memory": {"used": 1, "total": 4}}}`,
			want: application.CMLSystemStats{CPUCount: 2, CPUPercent: ptr(12.5), MemoryPercent: ptr(25), MemoryTotal: 4}},
		{name: "nothing reported: percentages nil", body: `{"computes": {"a": {"stats": {"cpu": {}, "memory": {"total": 0}}}}}`,
			want: application.CMLSystemStats{}},
		{name: "wrong types are ignored", body: `{"computes": {"a": "broken", "b": {"stats": {"cpu": {"count": "six", "percent": true}, "memory": [], "dominfo": {"total_nodes": "7"}}}}}`,
			want: application.CMLSystemStats{NodesTotal: 7}},
		{name: "used above total is clamped", body: `{"all": {"memory": {"used": 5, "total": 4}}}`,
			want: application.CMLSystemStats{MemoryPercent: ptr(100), MemoryTotal: 4}},
		{name: "not an object", body: `[1,2]`, err: true},
		{name: "HTML", body: `<html>502</html>`, err: true},
		{name: "truncated", body: `{"computes": {`, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := decodeSystemStats([]byte(tt.body))
			if tt.err {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			for _, p := range []struct{ got, want *float64 }{
				{got.CPUPercent, tt.want.CPUPercent}, {got.MemoryPercent, tt.want.MemoryPercent}, {got.DiskPercent, tt.want.DiskPercent},
			} {
				if p.want == nil {
					require.Nil(t, p.got)
				} else {
					require.NotNil(t, p.got)
					require.InDelta(t, *p.want, *p.got, 1e-9)
				}
			}
			got.CPUPercent, got.MemoryPercent, got.DiskPercent = nil, nil, nil
			tt.want.CPUPercent, tt.want.MemoryPercent, tt.want.DiskPercent = nil, nil, nil
			require.Equal(t, tt.want, got)
		})
	}
}

const licensingCaptured = `{
  "registration": {"status": "COMPLETED", "smart_account": "Acme", "virtual_account": "Lab", "expires": "2026-08-20 17:25:30",
    "register_time": {"succeeded": null, "attempted": "2023-08-11 19:33:12", "scheduled": null, "status": null, "failure": "OK", "success": "SUCCESS"}},
  "authorization": {"status": "IN_COMPLIANCE", "expires": "2026-02-20 15:13:31"},
  "features": [{"id": "regid.2019-10.com.cisco.CML_NODE_COUNT", "in_use": 200, "max": 500, "minEndDate": null}],
  "reservation_mode": false,
  "udi": {"hostname": "cml-controller", "product_uuid": "5e0e49e2"},
  "product_license": {"active": "CML_Enterprise", "is_enterprise": true}}`

func TestDecodeLicensing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want application.CMLLicensing
		err  bool
	}{
		{name: "captured", body: licensingCaptured, want: application.CMLLicensing{
			RegistrationStatus: "COMPLETED", AuthorizationStatus: "IN_COMPLIANCE", SmartAccount: "Acme",
			VirtualAccount: "Lab", ProductLicense: "CML_Enterprise", IsEnterprise: true,
		}},
		// Upstream read a flat registration_status and missed every change;
		// only the nested form counts.
		{name: "flat keys are not the status", body: `{"registration_status": "COMPLETED", "authorization_status": "IN_COMPLIANCE"}`,
			want: application.CMLLicensing{}},
		{name: "old controllers: udi is a string", body: `{"registration": {"status": "NOT_REGISTERED", "instance_name": "x"}, "authorization": {"status": "EVAL"}, "udi": "x"}`,
			want: application.CMLLicensing{RegistrationStatus: "NOT_REGISTERED", AuthorizationStatus: "EVAL"}},
		{name: "wrong types are ignored", body: `{"registration": "COMPLETED", "authorization": {"status": 3}, "product_license": {"is_enterprise": "true"}}`,
			want: application.CMLLicensing{IsEnterprise: true}},
		{name: "not an object", body: `"COMPLETED"`, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := decodeLicensing([]byte(tt.body))
			if tt.err {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.JSONEq(t, tt.body, string(got.Raw))
			got.Raw = nil
			require.Equal(t, tt.want, got)
		})
	}
}

func TestDecodeTelemetry(t *testing.T) {
	t.Parallel()
	body := `[
	  {"category": "user_activity", "timestamp": "2026-03-02T09:15:00.123456", "data": {"user_id": "00000000-0000-4000-8000-000000000001"}},
	  {"category": "start_lab", "timestamp": "2026-03-02T09:16:00Z", "data": {"lab_id": "x", "user_id": "8f0c6c1e-3b1f-4f39-9a55-0c1f1b2a3d4e"}},
	  {"category": "boot_node", "timestamp": "2026-03-02T10:17:00+01:00", "data": {}},
	  {"category": "license_info", "timestamp": "2026-03-02 09:18:00", "data": null},
	  {"category": "stop_lab", "timestamp": 1772443140, "data": {"user_id": 42}},
	  {"category": "wipe_node", "timestamp": "yesterday", "data": {}},
	  {"timestamp": "2026-03-02T09:20:00"},
	  "garbage"
	]`
	events, skipped, err := decodeTelemetry([]byte(body))
	require.NoError(t, err)
	require.Equal(t, 3, skipped)
	at := func(h, m, s, ns int) time.Time { return time.Date(2026, 3, 2, h, m, s, ns, time.UTC) }
	want := []application.CMLTelemetryEvent{
		{Category: "user_activity", Timestamp: at(9, 15, 0, 123456000), UserID: "00000000-0000-4000-8000-000000000001",
			Data: json.RawMessage(`{"user_id": "00000000-0000-4000-8000-000000000001"}`)},
		{Category: "start_lab", Timestamp: at(9, 16, 0, 0), UserID: "8f0c6c1e-3b1f-4f39-9a55-0c1f1b2a3d4e",
			Data: json.RawMessage(`{"lab_id": "x", "user_id": "8f0c6c1e-3b1f-4f39-9a55-0c1f1b2a3d4e"}`)},
		{Category: "boot_node", Timestamp: at(9, 17, 0, 0), Data: json.RawMessage(`{}`)},
		{Category: "license_info", Timestamp: at(9, 18, 0, 0)},
		{Category: "stop_lab", Timestamp: at(9, 19, 0, 0), Data: json.RawMessage(`{"user_id": 42}`)},
	}
	require.Equal(t, want, events)

	for _, bad := range []string{``, `{}`, `<html></html>`, `[`} {
		_, _, err := decodeTelemetry([]byte(bad))
		require.Error(t, err, bad)
	}
}

func TestParseTime(t *testing.T) {
	t.Parallel()
	want := time.Date(2025, 12, 6, 11, 11, 28, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"2025-12-06T11:11:28+00:00", want, true},
		{"2025-12-06T12:11:28+01:00", want, true},
		{"2025-12-06T11:11:28Z", want, true},
		{"2025-12-06T11:11:28", want, true},
		{"2025-12-06 11:11:28", want, true},
		{"2025-12-06 11:11:28+00:00", want, true},
		{"2025-12-06T11:11:28.5", want.Add(500 * time.Millisecond), true},
		{"2025-12-06T11:11:28.123456", want.Add(123456 * time.Microsecond), true},
		{"2025-12-06T11:11:28+00:00Z", want, true},
		{" 2025-12-06T11:11:28 ", want, true},
		{"", time.Time{}, false},
		{"06/12/2025", time.Time{}, false},
		{"2025-12-06T25:11:28", time.Time{}, false},
	}
	for _, tt := range tests {
		got, ok := parseTime(tt.in)
		require.Equal(t, tt.ok, ok, tt.in)
		require.True(t, tt.want.Equal(got), "%q: got %v", tt.in, got)
		if ok {
			require.Equal(t, time.UTC, got.Location())
		}
	}
}

func jwtWith(claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc([]byte(claims)) + ".c2lnbmF0dXJl"
}

func TestDecodeTokenAndClaims(t *testing.T) {
	t.Parallel()
	tok := jwtWith(`{"iss":"com.cisco.virl","iat":1613750815,"exp":1613837215,"sub":"90f84e38-a71c-4d57-8d90-00fa8a197385"}`)
	for body, wantID := range map[string]string{
		`"` + tok + `"`:         "",
		` "` + tok + `"` + "\n": "",
		`{"username":"admin","id":"x","token":"` + tok + `","admin":true}`: "x",
	} {
		got, id, err := decodeToken([]byte(body))
		require.NoError(t, err, body)
		require.Equal(t, tok, got)
		require.Equal(t, wantID, id)
	}
	for _, body := range []string{``, `""`, `{}`, `"a b"`, `<html>`, `42`} {
		_, _, err := decodeToken([]byte(body))
		require.Error(t, err, body)
	}

	exp, iat, ok := jwtTimes(tok)
	require.True(t, ok)
	require.Equal(t, time.Unix(1613837215, 0).UTC(), exp)
	require.Equal(t, time.Unix(1613750815, 0).UTC(), iat)
	exp, _, ok = jwtTimes(jwtWith(`{"exp": 1613837215.5}`))
	require.True(t, ok)
	require.Equal(t, time.Unix(1613837215, 5e8).UTC(), exp)
	for _, bad := range []string{"opaque", "a.b", jwtWith(`{"iat": 1}`), jwtWith(`{"exp": "soon"}`), "a.!!!.c", jwtWith(`[]`)} {
		_, _, ok := jwtTimes(bad)
		require.False(t, ok, bad)
	}
}

func TestErrorMessage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
		body   string
		want   string
	}{
		{"description string", 404, `{"code": 404, "description": "Lab not found: 90f84e38"}`, "Lab not found: 90f84e38"},
		{"description object", 400, `{"code": 400, "description": {"Input validation failed": [{"location": ["body"]}]}}`,
			`{"Input validation failed":[{"location":["body"]}]}`},
		{"description array", 400, `{"code": 400, "description": ["first", "second"]}`, `["first","second"]`},
		{"description JSON text", 400, `{"code": 400, "description": "{\"Input validation failed\": []}"}`, `{"Input validation failed": []}`},
		{"FastAPI detail", 422, `{"detail": [{"loc": ["query"], "msg": "bad"}]}`, `[{"loc":["query"],"msg":"bad"}]`},
		{"bare JSON string", 403, `"Access is denied"`, "Access is denied"},
		{"nginx HTML", 502, "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>", "502 Bad Gateway"},
		{"HTML without title", 500, "<p>It &amp; broke</p>", "It & broke"},
		{"plain text", 500, "upstream\n  exploded", "upstream exploded"},
		{"empty", 503, "", "Service Unavailable"},
		{"binary", 599, "\xff\xfe", "HTTP 599"},
		{"JSON without a message", 500, `{"code": 500}`, `{"code":500}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, errorMessage(tt.status, []byte(tt.body)))
		})
	}
	long := errorMessage(500, []byte(`{"description": "`+strings.Repeat("é", 600)+`"}`))
	require.LessOrEqual(t, len(long), maxMessage+len("…"))
	require.True(t, utf8.ValidString(long))
}

func TestKindOfStatus(t *testing.T) {
	t.Parallel()
	tests := map[int]application.CloudErrorKind{
		400: application.CloudInvalid, 401: application.CloudAuth, 403: application.CloudAuth,
		404: application.CloudNotFound, 408: application.CloudTimeout, 409: application.CloudConflict,
		413: application.CloudInvalid, 422: application.CloudInvalid, 429: application.CloudThrottled,
		500: application.CloudUnavailable, 502: application.CloudUnavailable, 503: application.CloudUnavailable,
		504: application.CloudUnavailable, 301: application.CloudUnknown, 405: application.CloudUnknown,
	}
	for status, want := range tests {
		require.Equal(t, want, kindOfStatus(status), status)
	}
}

func TestAPIURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		endpoint, path, query, want string
	}{
		{"https://10.0.0.1", "/system_stats", "", "https://10.0.0.1/api/v0/system_stats"},
		{"https://10.0.0.1/", "/system_stats", "", "https://10.0.0.1/api/v0/system_stats"},
		{"https://127.0.0.1:9443/controllers/i-0abc", "/labs", "show_all=true", "https://127.0.0.1:9443/controllers/i-0abc/api/v0/labs?show_all=true"},
		{"https://127.0.0.1:9443/controllers/i-0abc/", "/labs/x/start", "", "https://127.0.0.1:9443/controllers/i-0abc/api/v0/labs/x/start"},
		{"https://user:pw@host:1/p?q=1#f", "/authenticate", "", "https://host:1/p/api/v0/authenticate"},
		{" https://cml.example.com ", "/import", "title=a+b%26c", "https://cml.example.com/api/v0/import?title=a+b%26c"},
	}
	for _, tt := range tests {
		q, err := url.ParseQuery(tt.query)
		require.NoError(t, err)
		got, err := apiURL(tt.endpoint, tt.path, q)
		require.NoError(t, err, tt.endpoint)
		require.Equal(t, tt.want, got)
	}
}
