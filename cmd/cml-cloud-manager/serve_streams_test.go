package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	sse "github.com/tmaxmax/go-sse"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// openStream opens an event stream with a bearer token and returns its
// events until it ends (the channel then closes).
func openStream(t *testing.T, url, token string) <-chan sse.Event {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		res.Body.Close()
		t.Fatalf("%s: %d %s", url, res.StatusCode, res.Header.Get("Content-Type"))
	}
	out := make(chan sse.Event, 256)
	go func() {
		defer close(out)
		defer res.Body.Close()
		for ev, err := range sse.Read(res.Body, &sse.ReadConfig{MaxEventSize: 1 << 20}) {
			if err != nil {
				return
			}
			out <- ev
		}
	}()
	return out
}

func nextEvent(t *testing.T, events <-chan sse.Event) (sse.Event, bool) {
	t.Helper()
	select {
	case ev, ok := <-events:
		return ev, ok
	case <-time.After(30 * time.Second):
		t.Fatal("no event within 30s")
		return sse.Event{}, false
	}
}

// TestServeStreams runs serve and follows a worker on both event streams
// over real HTTP with tokens of the real authenticator: its snapshot on
// the dashboard stream, its first event on the domain stream; then stops
// serve: both streams get system.shutdown and end, and Run returns in
// time.
func TestServeStreams(t *testing.T) {
	cfg := mustLoad(t, map[string]string{
		"DATABASE_URL": freshDatabaseURL(t),
		"HTTP_ADDR":    "127.0.0.1:0",
	})
	m := NewMain(cfg, testLogger(t))
	stop := startMain(t, m)
	defer func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
	}()
	base := "http://" + m.Addr().String()
	token := func(user string) string {
		body, _ := json.Marshal(map[string]string{"username": user, "password": "test"})
		res, err := http.Post(base+"/api/auth/token", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		if err := json.NewDecoder(res.Body).Decode(&tok); err != nil || tok.AccessToken == "" {
			t.Fatalf("token for %s: %d %v", user, res.StatusCode, err)
		}
		return tok.AccessToken
	}

	admin := rbac.WithPrincipal(t.Context(), rbac.Principal{Subject: "u-admin", Username: "admin", Roles: []rbac.Role{rbac.RoleAdmin}})
	res, err := m.App.ImportWorker(admin, application.ImportWorker{
		Name: "streamed", Region: cfg.AWSRegions[0], InstanceID: "i-0123456789abcdef0", State: worker.EC2Running,
	})
	if err != nil {
		t.Fatal(err)
	}

	dash := openStream(t, base+"/api/events/stream?worker_ids="+res.ID, token("user"))
	if ev, _ := nextEvent(t, dash); ev.Type != "worker.snapshot" {
		t.Fatalf("dashboard: first event %q %s", ev.Type, ev.Data)
	}
	dom := openStream(t, base+"/api/events/domain?worker_id="+res.ID, token("integrator"))
	if ev, _ := nextEvent(t, dom); ev.Type != "worker.imported.v1" || ev.LastEventID != res.Position {
		t.Fatalf("domain: first event %q id %q, want worker.imported.v1 at %s", ev.Type, ev.LastEventID, res.Position)
	}

	if err := stop(); err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	for name, events := range map[string]<-chan sse.Event{"dashboard": dash, "domain": dom} {
		var last string
		for {
			ev, ok := nextEvent(t, events)
			if !ok {
				break
			}
			last = ev.Type
		}
		if last != "system.shutdown" {
			t.Errorf("%s stream ended after %q, want system.shutdown", name, last)
		}
	}
}
