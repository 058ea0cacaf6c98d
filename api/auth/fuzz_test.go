package auth

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
)

func FuzzDecodeCredentials(f *testing.F) {
	for _, s := range []string{
		`{"username":"admin","password":"test"}`,
		`{"username":"admin","password":"test","x":1}`,
		`{"username":"","password":"test"}`,
		`{"USERNAME":"admin","Password":"test"}`,
		`{"username":"a","password":"b"} {}`,
		`{"username":1,"password":true}`,
		`null`, `[]`, `"x"`, ``, `{`, `{"username":"\u0000","password":"\ud800"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		creds, err := decodeCredentials(body)
		if err != nil {
			return
		}
		if creds.Username == "" || creds.Password == "" || len(creds.Username) > maxUsernameLen || len(creds.Password) > maxPasswordLen {
			t.Fatalf("accepted invalid credentials %+v", creds)
		}
		if creds.ReturnTo != "" {
			t.Fatalf("JSON credentials carry no return_to")
		}
		// Accepted bodies are objects with exactly our two members.
		var m map[string]json.RawMessage
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("accepted a body that is not an object: %v", err)
		}
		for k := range m {
			if !strings.EqualFold(k, "username") && !strings.EqualFold(k, "password") {
				t.Fatalf("accepted unknown member %q", k)
			}
		}
	})
}

func FuzzDecodeCredentialsForm(f *testing.F) {
	for _, s := range []string{
		"username=admin&password=test",
		"username=admin&password=test&return_to=%2Fworkers",
		"username=admin&username=x&password=test",
		"username=admin&password=test&evil=1",
		"%zz", "", "&&&", "username=&password=",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		creds, err := decodeCredentialsForm([]byte(body))
		if err != nil {
			return
		}
		if creds.validate() != nil {
			t.Fatalf("accepted invalid credentials %+v", creds)
		}
		values, _ := url.ParseQuery(body)
		for k, v := range values {
			if len(v) != 1 || !slices.Contains([]string{"username", "password", "return_to"}, k) {
				t.Fatalf("accepted field %q ×%d", k, len(v))
			}
		}
	})
}

func FuzzSafeReturnTo(f *testing.F) {
	for _, s := range []string{"/", "/workers?x=1", "//evil.example", "/\\evil", "https://evil.example", "/%2F%2Fevil", "/\t/evil", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := safeReturnTo(s)
		if got != "/" && got != s {
			t.Fatalf("safeReturnTo(%q) = %q: neither the input nor /", s, got)
		}
		// Appended to our base, it never leaves our host.
		u, err := url.Parse("https://cml.example.com" + got)
		if err != nil {
			t.Fatalf("safeReturnTo(%q) = %q does not parse after the base: %v", s, got, err)
		}
		if u.Host != "cml.example.com" || u.User != nil {
			t.Fatalf("safeReturnTo(%q) = %q leads to host %q", s, got, u.Host)
		}
		if strings.HasPrefix(got, "//") || strings.ContainsAny(got, "\\\r\n") {
			t.Fatalf("safeReturnTo(%q) = %q", s, got)
		}
	})
}

func FuzzIdentityFromClaims(f *testing.F) {
	for _, s := range []string{
		`{"sub":"a","realm_access":{"roles":["admin","system","offline_access"]}}`,
		`{"sub":"a","roles":"manager"}`,
		`{"sub":"a","realm_access":"x","roles":["user"]}`,
		`{"sub":1,"preferred_username":["x"],"realm_access":{"roles":[1,null,{"a":"b"},"AUDITOR"]}}`,
		`{}`,
	} {
		f.Add([]byte(s), "realm_access.roles")
	}
	f.Add([]byte(`{"a":{"b":{"c":["admin"]}}}`), "a.b.c")
	f.Fuzz(func(t *testing.T, raw []byte, path string) {
		var claims map[string]any
		if json.Unmarshal(raw, &claims) != nil {
			return
		}
		id := identityFromClaims(claims, []string{path, "roles"})
		seen := map[rbac.Role]bool{}
		for _, r := range id.Roles {
			if !slices.Contains(rbac.ExternalRoles, r) {
				t.Fatalf("role %q is not an external role", r)
			}
			if seen[r] {
				t.Fatalf("role %q twice", r)
			}
			seen[r] = true
		}
		if id.Roles == nil {
			t.Fatal("roles must be an empty list, not nil")
		}
	})
}

func FuzzParseAccounts(f *testing.F) {
	f.Add([]byte(`{"accounts":[{"username":"a","password_hash":"$2a$04$0123456789012345678901uHjVvqjcXVGXkqcBnO9nI8VIPaEtAcG","roles":["admin"]}]}`))
	f.Add([]byte(`{"accounts":[{"username":"a","password_hash":"x","roles":["system"]}]}`))
	f.Add([]byte(`{"accounts":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		accounts, err := parseAccounts(data)
		if err != nil {
			return
		}
		for _, acc := range accounts {
			if !validUsername(acc.Username) {
				t.Fatalf("accepted username %q", acc.Username)
			}
			for _, r := range acc.Roles {
				if r == rbac.RoleSystem || !slices.Contains(rbac.ExternalRoles, r) {
					t.Fatalf("accepted role %q", r)
				}
			}
		}
	})
}

func FuzzParseSigningKeys(f *testing.F) {
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte("-----BEGIN EC PRIVATE KEY-----\n-----END EC PRIVATE KEY-----\n"))
	f.Add([]byte("junk"))
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := parseSigningKeys(data)
		if err == nil && len(keys) == 0 {
			t.Fatal("no error and no key")
		}
	})
}

// FuzzBearerHeader sends arbitrary Authorization headers through the
// middleware: the answer is the probe's 200 or a 401, never anything else.
func FuzzBearerHeader(f *testing.F) {
	for _, s := range []string{"Bearer a.b.c", "Bearer ", "bearer eyJhbGciOiJub25lIn0.e30.", "Basic x", "Bearer \x00", "Bearer " + strings.Repeat("x.", 50)} {
		f.Add(s)
	}
	h := newHarness(f, ModeLocal, harnessConfig{})
	e := newEcho(f, h.auth)
	f.Fuzz(func(t *testing.T, header string) {
		if !utf8.ValidString(header) || strings.ContainsAny(header, "\r\n") {
			return
		}
		req := httptest.NewRequest(http.MethodGet, "/api/probe", nil)
		req.Header.Set("Authorization", header)
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		require.Contains(t, []int{http.StatusOK, http.StatusUnauthorized}, rec.Code, "header %q: %s", header, rec.Body)
		if rec.Code == http.StatusOK && header != "" {
			t.Fatalf("header %q authenticated", header)
		}
	})
}
