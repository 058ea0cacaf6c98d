package cml_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/cloudsim/cmlsim"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/cml"
)

const topologyYAML = `lab:
  version: 0.3.0
  title: From the test
  description: two routers
nodes:
  - id: n0
    label: r1
    node_definition: iosv
  - id: n1
    label: r2
    node_definition: iosv
links:
  - id: l0
    n1: n0
    n2: n1
`

// requireCloudError asserts err is a CloudError of kind and code.
func requireCloudError(t *testing.T, err error, kind application.CloudErrorKind, code string) *application.CloudError {
	t.Helper()
	require.Error(t, err)
	var ce *application.CloudError
	require.True(t, errors.As(err, &ce), "not a CloudError: %v", err)
	require.Equal(t, kind, ce.Kind, "kind of %v", err)
	require.Equal(t, code, ce.Code, "code of %v", err)
	require.True(t, strings.HasPrefix(ce.Op, "cml:"), "op %q", ce.Op)
	return ce
}

func TestEveryMethodEndToEnd(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, cmlsim.Options{}, cml.Options{})
	ep := e.boot("i-0123456789abcdef0")

	info, err := e.client.SystemInformation(ctx, ep)
	require.NoError(t, err)
	require.Equal(t, application.CMLSystemInformation{Version: cmlsim.DefaultVersion, Ready: true}, info)

	health, err := e.client.SystemHealth(ctx, ep)
	require.NoError(t, err)
	require.Equal(t, application.CMLSystemHealth{Valid: true, IsEnterprise: true, Computes: 1, ComputesReady: 1}, health)

	// The demo labs: a running OSPF triangle (3 iosv nodes) and a defined
	// Alpine pair (3 nodes).
	stats, err := e.client.SystemStats(ctx, ep)
	require.NoError(t, err)
	require.Equal(t, 16, stats.CPUCount)
	require.Equal(t, 3, stats.NodesRunning)
	require.Equal(t, 6, stats.NodesTotal)
	require.InDelta(t, float64(64<<30), stats.MemoryTotal, 1)
	require.InDelta(t, 250e9, stats.DiskTotal, 1)
	require.NotNil(t, stats.CPUPercent)
	require.NotNil(t, stats.MemoryPercent)
	require.InDelta(t, 100*(3*(1<<30)+3*768*(1<<20))/float64(64<<30), *stats.MemoryPercent, 0.01)
	require.NotNil(t, stats.DiskPercent)
	require.InDelta(t, 100*(40e9+2e9*6)/250e9, *stats.DiskPercent, 0.01)

	lic, err := e.client.Licensing(ctx, ep)
	require.NoError(t, err)
	require.Equal(t, "NOT_REGISTERED", lic.RegistrationStatus)
	require.Equal(t, "EVAL", lic.AuthorizationStatus)
	require.Equal(t, "CML_Enterprise", lic.ProductLicense)
	require.True(t, lic.IsEnterprise)
	require.Equal(t, worker.LicenseEvaluation, lic.Status())
	require.Contains(t, string(lic.Raw), `"features"`)

	labs, err := e.client.Labs(ctx, ep)
	require.NoError(t, err)
	require.Len(t, labs, 2)
	require.Equal(t, "OSPF triangle", labs[0].Title)
	require.Equal(t, "STARTED", labs[0].State)
	require.Equal(t, "alice", labs[0].Owner)
	require.Equal(t, 3, labs[0].NodeCount)
	require.Equal(t, 3, labs[0].LinkCount)
	require.Equal(t, e.clock.Now(), labs[0].CreatedAt)
	require.Equal(t, "Alpine pair", labs[1].Title)
	require.Equal(t, "DEFINED_ON_CORE", labs[1].State)

	id, err := e.client.ImportLab(ctx, ep, "Imported by the test", topologyYAML)
	require.NoError(t, err)
	got, err := e.client.DownloadLab(ctx, ep, id)
	require.NoError(t, err)
	require.Equal(t, topologyYAML, got)

	for _, step := range []struct {
		action worker.LabAction
		state  string
	}{
		{worker.LabStart, "STARTED"}, {worker.LabStop, "STOPPED"}, {worker.LabWipe, "DEFINED_ON_CORE"},
	} {
		require.NoError(t, e.client.LabAction(ctx, ep, id, step.action), step.action)
		require.Equal(t, step.state, labState(t, e, ep, id), step.action)
	}
	require.NoError(t, e.client.DeleteLab(ctx, ep, id))
	labs, err = e.client.Labs(ctx, ep)
	require.NoError(t, err)
	require.Len(t, labs, 2)

	require.NoError(t, e.client.RegisterLicense(ctx, ep, "good-token", false))
	lic, err = e.client.Licensing(ctx, ep)
	require.NoError(t, err)
	require.Equal(t, "COMPLETED", lic.RegistrationStatus) // LicenseDelay 0: at once
	dereg, err := e.client.DeregisterLicense(ctx, ep)
	require.NoError(t, err)
	require.False(t, dereg.LocalOnly)

	events, err := e.client.TelemetryEvents(ctx, ep)
	require.NoError(t, err)
	var categories []string
	for _, ev := range events {
		categories = append(categories, ev.Category)
	}
	for _, want := range []string{"import_lab", "start_lab", "queue_node", "start_node", "boot_node", "stop_lab", "wipe_lab", "user_activity", "license_info"} {
		require.Contains(t, categories, want)
	}
	// One login served the whole sequence.
	require.EqualValues(t, 1, e.client.Logins())
	require.EqualValues(t, 1, e.fleet.Logins())
}

// labState finds a lab's state through the client's lab list.
func labState(t *testing.T, e *env, endpoint, id string) string {
	t.Helper()
	labs, err := e.client.Labs(context.Background(), endpoint)
	require.NoError(t, err)
	for _, l := range labs {
		if l.ID == id {
			return l.State
		}
	}
	t.Fatalf("lab %s not listed", id)
	return ""
}

func TestTokenIsReusedAcrossCalls(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, cmlsim.Options{EmptyControllers: true}, cml.Options{})
	ep := e.boot("i-reuse")
	const n = 25
	for range n {
		_, err := e.client.SystemStats(ctx, ep)
		require.NoError(t, err)
		e.clock.Advance(5 * time.Minute) // 2 simulated hours of polling
	}
	require.EqualValues(t, 1, e.client.Logins())
	require.EqualValues(t, 1, e.fleet.Logins())
	require.EqualValues(t, n, e.fleet.Calls()["GET /system_stats"])
}

func TestConcurrentFirstCallsShareOneLogin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, cmlsim.Options{EmptyControllers: true}, cml.Options{})
	eps := []string{e.boot("i-a"), e.boot("i-b"), e.boot("i-c")}
	var wg sync.WaitGroup
	errs := make(chan error, 60)
	for i := range 60 {
		wg.Go(func() {
			_, err := e.client.Licensing(ctx, eps[i%len(eps)])
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	for _, id := range []string{"i-a", "i-b", "i-c"} {
		require.EqualValues(t, 1, e.fleet.Controller(id).Logins(), id)
	}
	require.EqualValues(t, 3, e.client.Logins())
}

// cycle is one monitoring pass over a controller, as the metrics job makes.
func cycle(ctx context.Context, c *cml.Client, ep string) error {
	if _, err := c.SystemInformation(ctx, ep); err != nil {
		return err
	}
	if _, err := c.SystemHealth(ctx, ep); err != nil {
		return err
	}
	if _, err := c.SystemStats(ctx, ep); err != nil {
		return err
	}
	if _, err := c.Licensing(ctx, ep); err != nil {
		return err
	}
	_, err := c.Labs(ctx, ep)
	return err
}

func TestTokenExpiryInTheMiddleOfACycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("the clock passes exp", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, cmlsim.Options{TokenTTL: 10 * time.Minute}, cml.Options{})
		ep := e.boot("i-exp")
		_, err := e.client.SystemHealth(ctx, ep)
		require.NoError(t, err)
		_, err = e.client.SystemStats(ctx, ep)
		require.NoError(t, err)
		e.clock.Advance(10 * time.Minute) // the token has expired
		_, err = e.client.Licensing(ctx, ep)
		require.NoError(t, err)
		_, err = e.client.Labs(ctx, ep)
		require.NoError(t, err)
		require.EqualValues(t, 2, e.fleet.Logins())
		require.EqualValues(t, 2, e.client.Logins())
		// The token was replaced before the controller could refuse it.
		require.EqualValues(t, 1, e.fleet.Calls()["GET /licensing"])
	})

	t.Run("the controller revokes every token under concurrent calls", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, cmlsim.Options{}, cml.Options{})
		ep := e.boot("i-revoke")
		require.NoError(t, cycle(ctx, e.client, ep))
		require.EqualValues(t, 1, e.fleet.Logins())
		e.fleet.ExpireAllTokens()
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for range 16 {
			wg.Go(func() { errs <- cycle(ctx, e.client, ep) })
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		require.EqualValues(t, 2, e.fleet.Logins(), "exactly one re-login")
	})
}

func TestUnauthorizedOnceLogsInAgainOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, cmlsim.Options{}, cml.Options{})
	ep := e.boot("i-401")
	_, err := e.client.SystemStats(ctx, ep)
	require.NoError(t, err)
	e.fleet.Controller("i-401").UnauthorizeNext()
	_, err = e.client.SystemStats(ctx, ep)
	require.NoError(t, err)
	require.EqualValues(t, 2, e.fleet.Logins())
	require.EqualValues(t, 3, e.fleet.Calls()["GET /system_stats"])
}

func TestRefusedReloginIsAnAuthErrorWithoutLoop(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, cmlsim.Options{}, cml.Options{})
	ep := e.boot("i-refused")
	_, err := e.client.SystemHealth(ctx, ep)
	require.NoError(t, err)

	ctrl := e.fleet.Controller("i-refused")
	ctrl.SetPassword("rotated")
	ctrl.ExpireTokens()
	_, err = e.client.SystemHealth(ctx, ep)
	ce := requireCloudError(t, err, application.CloudAuth, "403")
	require.Equal(t, "cml:POST /auth_extended", ce.Op)
	require.False(t, ce.Retryable())
	require.EqualValues(t, 2, e.fleet.Logins(), "one login, one re-login, no loop")
	require.EqualValues(t, 2, e.fleet.Calls()["GET /system_health"])

	// Wrong credentials from the start: one login attempt per call.
	e2 := newEnv(t, cmlsim.Options{}, cml.Options{Username: "admin", Password: "wrong"})
	ep2 := e2.boot("i-wrong")
	_, err = e2.client.Labs(ctx, ep2)
	requireCloudError(t, err, application.CloudAuth, "403")
	require.EqualValues(t, 1, e2.fleet.Logins())
	require.Zero(t, e2.fleet.Calls()["GET /labs"])
}

func TestBootingControllerIsUnavailableThenReady(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, cmlsim.Options{BootDelay: 3 * time.Minute, ReadyDelay: 30 * time.Second}, cml.Options{})
	ep := e.boot("i-boot")

	_, err := e.client.SystemInformation(ctx, ep)
	ce := requireCloudError(t, err, application.CloudUnavailable, "502")
	require.Equal(t, "502 Bad Gateway", ce.Message) // nginx's HTML page, read
	require.True(t, ce.Retryable())
	_, err = e.client.SystemStats(ctx, ep) // the login meets the 502 too
	requireCloudError(t, err, application.CloudUnavailable, "502")

	e.clock.Advance(3 * time.Minute)
	info, err := e.client.SystemInformation(ctx, ep)
	require.NoError(t, err)
	require.False(t, info.Ready)
	health, err := e.client.SystemHealth(ctx, ep)
	require.NoError(t, err)
	require.False(t, health.Valid)
	require.Zero(t, health.ComputesReady)

	e.clock.Advance(30 * time.Second)
	info, err = e.client.SystemInformation(ctx, ep)
	require.NoError(t, err)
	require.True(t, info.Ready)
	require.NoError(t, cycle(ctx, e.client, ep))
}

func TestStoppedControllerIsUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, cmlsim.Options{}, cml.Options{})
	ep := e.boot("i-stop")
	require.NoError(t, cycle(ctx, e.client, ep))
	e.fleet.Shutdown("i-stop")
	for _, call := range []func() error{
		func() error { _, err := e.client.SystemInformation(ctx, ep); return err },
		func() error { _, err := e.client.SystemStats(ctx, ep); return err },
		func() error { _, err := e.client.SystemInformation(ctx, e.endpoint("i-never-booted")); return err },
	} {
		ce := requireCloudError(t, call(), application.CloudUnavailable, "")
		require.NotNil(t, ce.Err)
	}
	// After a reboot the old token is refused: one re-login, then success.
	e.fleet.Boot("i-stop")
	require.NoError(t, cycle(ctx, e.client, ep))
	require.EqualValues(t, 2, e.fleet.Logins())
}

func TestLicenseRegistration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name          string
		token         string
		registration  string
		authorization string
		status        worker.LicenseStatus
		licensed      bool
	}{
		{"a good token completes", "a-good-token", "COMPLETED", "IN_COMPLIANCE", worker.LicenseRegistered, true},
		{"the bad token fails", cmlsim.DefaultBadLicenseToken, "FAILED", "EVAL", worker.LicenseEvaluation, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, cmlsim.Options{LicenseDelay: 40 * time.Second}, cml.Options{})
			ep := e.boot("i-lic")
			require.NoError(t, e.client.RegisterLicense(ctx, ep, tt.token, false))

			lic, err := e.client.Licensing(ctx, ep)
			require.NoError(t, err)
			require.Equal(t, "IN_PROGRESS", lic.RegistrationStatus)
			err = e.client.RegisterLicense(ctx, ep, tt.token, true)
			ce := requireCloudError(t, err, application.CloudConflict, "409")
			require.Contains(t, ce.Message, "in progress")

			e.clock.Advance(40 * time.Second)
			lic, err = e.client.Licensing(ctx, ep)
			require.NoError(t, err)
			require.Equal(t, tt.registration, lic.RegistrationStatus)
			require.Equal(t, tt.authorization, lic.AuthorizationStatus)
			require.Equal(t, tt.status, lic.Status())
			health, err := e.client.SystemHealth(ctx, ep)
			require.NoError(t, err)
			require.Equal(t, tt.licensed, health.IsLicensed)
		})
	}

	t.Run("a malformed token is invalid", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, cmlsim.Options{}, cml.Options{})
		ep := e.boot("i-lic-bad")
		err := e.client.RegisterLicense(ctx, ep, "not a token!", false)
		ce := requireCloudError(t, err, application.CloudInvalid, "400")
		require.Contains(t, ce.Message, "Input validation failed")
	})
}

func TestLicenseDeregistration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name      string
		localOnly bool
	}{
		{"done (204)", false},
		{"local only (202)", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, cmlsim.Options{}, cml.Options{})
			ep := e.boot("i-dereg")
			e.fleet.Controller("i-dereg").SetDeregisterLocalOnly(tt.localOnly)
			require.NoError(t, e.client.RegisterLicense(ctx, ep, "token", false))
			got, err := e.client.DeregisterLicense(ctx, ep)
			require.NoError(t, err)
			require.Equal(t, tt.localOnly, got.LocalOnly)
			lic, err := e.client.Licensing(ctx, ep)
			require.NoError(t, err)
			require.Equal(t, "NOT_REGISTERED", lic.RegistrationStatus)

			_, err = e.client.DeregisterLicense(ctx, ep)
			ce := requireCloudError(t, err, application.CloudInvalid, "400")
			require.Contains(t, ce.Message, "already been deregistered")
		})
	}
}

func TestLabActionsFollowCMLStateRules(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, cmlsim.Options{EmptyControllers: true, NodeBootDelay: time.Minute}, cml.Options{})
	ep := e.boot("i-labs")
	id, err := e.client.ImportLab(ctx, ep, "", topologyYAML)
	require.NoError(t, err)
	ctrl := e.fleet.Controller("i-labs")

	steps := []struct {
		name  string
		do    func() error
		kind  application.CloudErrorKind // "" for success
		state string
	}{
		{"a new lab is defined", func() error { return nil }, "", "DEFINED_ON_CORE"},
		{"stop of a defined lab is a no-op", func() error { return e.client.LabAction(ctx, ep, id, worker.LabStop) }, "", "DEFINED_ON_CORE"},
		{"start", func() error { return e.client.LabAction(ctx, ep, id, worker.LabStart) }, "", "STARTED"},
		{"start again is a no-op", func() error { return e.client.LabAction(ctx, ep, id, worker.LabStart) }, "", "STARTED"},
		{"wipe of a running lab is refused", func() error { return e.client.LabAction(ctx, ep, id, worker.LabWipe) }, application.CloudInvalid, "STARTED"},
		{"delete of a running lab is refused", func() error { return e.client.DeleteLab(ctx, ep, id) }, application.CloudInvalid, "STARTED"},
		{"stop", func() error { return e.client.LabAction(ctx, ep, id, worker.LabStop) }, "", "STOPPED"},
		{"delete of a stopped lab is refused", func() error { return e.client.LabAction(ctx, ep, id, worker.LabDelete) }, application.CloudInvalid, "STOPPED"},
		{"wipe", func() error { return e.client.LabAction(ctx, ep, id, worker.LabWipe) }, "", "DEFINED_ON_CORE"},
	}
	for _, s := range steps {
		err := s.do()
		if s.kind == "" {
			require.NoError(t, err, s.name)
		} else {
			requireCloudError(t, err, s.kind, "400")
		}
		require.Equal(t, s.state, labState(t, e, ep, id), s.name)
	}

	// Nodes boot over NodeBootDelay.
	require.NoError(t, e.client.LabAction(ctx, ep, id, worker.LabStart))
	require.Equal(t, map[string]int{"QUEUED": 2}, ctrl.Labs()[0].NodeStates)
	e.clock.Advance(30 * time.Second)
	require.Equal(t, map[string]int{"STARTED": 2}, ctrl.Labs()[0].NodeStates)
	stats, err := e.client.SystemStats(ctx, ep)
	require.NoError(t, err)
	require.Equal(t, 2, stats.NodesRunning)
	e.clock.Advance(30 * time.Second)
	require.Equal(t, map[string]int{"BOOTED": 2}, ctrl.Labs()[0].NodeStates)
	require.NoError(t, e.client.LabAction(ctx, ep, id, worker.LabStop))
	require.NoError(t, e.client.LabAction(ctx, ep, id, worker.LabWipe))
	require.NoError(t, e.client.LabAction(ctx, ep, id, worker.LabDelete))

	// The lab is gone.
	_, err = e.client.DownloadLab(ctx, ep, id)
	ce := requireCloudError(t, err, application.CloudNotFound, "404")
	require.Contains(t, ce.Message, "Lab not found")
	err = e.client.LabAction(ctx, ep, id, worker.LabStart)
	requireCloudError(t, err, application.CloudNotFound, "404")

	// Ids CML refuses, and actions this call does not perform.
	err = e.client.LabAction(ctx, ep, "not-a-uuid", worker.LabStart)
	ce = requireCloudError(t, err, application.CloudInvalid, "400")
	require.Contains(t, ce.Message, "Input validation failed")
	for _, bad := range []string{"", "..", "a/b", "../../system_stats"} {
		err = e.client.LabAction(ctx, ep, bad, worker.LabStop)
		requireCloudError(t, err, application.CloudInvalid, "")
	}
	err = e.client.LabAction(ctx, ep, id, worker.LabImport)
	requireCloudError(t, err, application.CloudInvalid, "")
	require.Zero(t, e.fleet.Calls()["unmatched"])
}

func TestImportDownloadRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, cmlsim.Options{EmptyControllers: true}, cml.Options{})
	ep := e.boot("i-import")

	tests := []struct {
		name    string
		title   string
		yaml    string
		kind    application.CloudErrorKind
		code    string
		message string
		want    worker.Lab
	}{
		{name: "title from the query", title: "Chosen title", yaml: topologyYAML,
			want: worker.Lab{Title: "Chosen title", Description: "two routers", State: "DEFINED_ON_CORE", Owner: "admin", NodeCount: 2, LinkCount: 1}},
		{name: "title from the file", yaml: topologyYAML,
			want: worker.Lab{Title: "From the test", Description: "two routers", State: "DEFINED_ON_CORE", Owner: "admin", NodeCount: 2, LinkCount: 1}},
		{name: "JSON is YAML too", yaml: `{"lab": {"version": "0.3.0", "title": "json"}, "nodes": [], "links": []}`,
			want: worker.Lab{Title: "json", State: "DEFINED_ON_CORE", Owner: "admin"}},
		{name: "invalid YAML", yaml: "lab: [unclosed\nnodes: {", kind: application.CloudInvalid, code: "400", message: "not valid YAML"},
		{name: "no version", yaml: "lab:\n  title: x\nnodes: []\n", kind: application.CloudInvalid, code: "400", message: "lab.version"},
		{name: "dangling link", yaml: "lab: {version: 0.3.0}\nnodes: [{id: n0, node_definition: iosv}]\nlinks: [{id: l0, n1: n0, n2: n9}]\n",
			kind: application.CloudInvalid, code: "400", message: "unknown nodes"},
		{name: "larger than nginx allows", yaml: "lab: {version: 0.3.0}\n# " + strings.Repeat("x", 2<<20),
			kind: application.CloudInvalid, code: "413", message: "413 Request Entity Too Large"},
	}
	for _, tt := range tests {
		id, err := e.client.ImportLab(ctx, ep, tt.title, tt.yaml)
		if tt.kind != "" {
			ce := requireCloudError(t, err, tt.kind, tt.code)
			require.Contains(t, ce.Message, tt.message, tt.name)
			continue
		}
		require.NoError(t, err, tt.name)
		got, err := e.client.DownloadLab(ctx, ep, id)
		require.NoError(t, err)
		require.Equal(t, tt.yaml, got, tt.name)
		labs, err := e.client.Labs(ctx, ep)
		require.NoError(t, err)
		i := slices.IndexFunc(labs, func(l worker.Lab) bool { return l.ID == id })
		require.GreaterOrEqual(t, i, 0)
		lab := labs[i]
		tt.want.ID, tt.want.CreatedAt, tt.want.ModifiedAt = id, e.clock.Now(), e.clock.Now()
		require.Equal(t, tt.want, lab, tt.name)
	}
}

func TestLabsListsEveryUsersLabs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, cmlsim.Options{}, cml.Options{LabConcurrency: 2})
	ep := e.boot("i-all")
	for range 5 {
		_, err := e.client.ImportLab(ctx, ep, "", topologyYAML)
		require.NoError(t, err)
	}
	labs, err := e.client.Labs(ctx, ep)
	require.NoError(t, err)
	require.Len(t, labs, 7, "the demo user's two labs and the admin's five (show_all=true)")
	require.EqualValues(t, 7, e.fleet.Calls()["GET /labs/{lab_id}"])
}

func TestTelemetryTimestampsAndUsers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, cmlsim.Options{}, cml.Options{})
	ep := e.boot("i-tel")
	bootTime := e.clock.Now()
	e.clock.Advance(90 * time.Minute)
	_, err := e.client.SystemStats(ctx, ep) // the manager's own polling
	require.NoError(t, err)
	e.clock.Advance(10 * time.Minute)
	const person = "8f0c6c1e-3b1f-4f39-9a55-0c1f1b2a3d4e"
	e.fleet.Controller("i-tel").AddUserActivity(person)

	events, err := e.client.TelemetryEvents(ctx, ep)
	require.NoError(t, err)
	require.NotEmpty(t, events)
	var sawAutomation, sawPerson, sawDemoStart bool
	for _, ev := range events {
		require.Equal(t, time.UTC, ev.Timestamp.Location())
		require.NotEmpty(t, ev.Data)
		switch {
		case ev.Category == "user_activity" && ev.UserID == cmlsim.AutomationUserID:
			// The polling at +90 min, and this very call at +100 min.
			sawAutomation = sawAutomation || ev.Timestamp.Equal(bootTime.Add(90*time.Minute))
			require.True(t, strings.HasPrefix(ev.UserID, "00000000-0000-"))
		case ev.Category == "user_activity" && ev.UserID == person:
			sawPerson = true
			require.Equal(t, bootTime.Add(100*time.Minute), ev.Timestamp)
		case ev.Category == "start_lab":
			sawDemoStart = true
			require.NotEqual(t, cmlsim.AutomationUserID, ev.UserID)
			require.Equal(t, bootTime, ev.Timestamp)
		}
	}
	require.True(t, sawAutomation, "the API user's activity")
	require.True(t, sawPerson, "the person's activity")
	require.True(t, sawDemoStart, "the demo lab's start")
}

func TestErrorClassification(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		status int
		kind   application.CloudErrorKind
	}{
		{400, application.CloudInvalid},
		{401, application.CloudAuth},
		{408, application.CloudTimeout},
		{413, application.CloudInvalid},
		{429, application.CloudThrottled},
		{500, application.CloudUnavailable},
		{502, application.CloudUnavailable},
		{503, application.CloudUnavailable},
		{504, application.CloudUnavailable},
		{422, application.CloudInvalid},
		{404, application.CloudNotFound},
		{409, application.CloudConflict},
		{403, application.CloudAuth},
		{418, application.CloudUnknown},
	}
	for _, tt := range tests {
		t.Run(string(tt.kind)+"/"+itoa(tt.status), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, cmlsim.Options{Faults: cmlsim.Faults{ErrorRate: 1, ErrorStatus: tt.status}}, cml.Options{})
			ep := e.boot("i-fault")
			_, err := e.client.SystemInformation(ctx, ep)
			ce := requireCloudError(t, err, tt.kind, itoa(tt.status))
			require.Equal(t, "cml:GET /system_information", ce.Op)
			require.NotEmpty(t, ce.Message)
		})
	}

	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, cmlsim.Options{Faults: cmlsim.Faults{Latency: time.Second}}, cml.Options{Timeout: 50 * time.Millisecond})
		ep := e.boot("i-slow")
		_, err := e.client.SystemInformation(ctx, ep)
		ce := requireCloudError(t, err, application.CloudTimeout, "")
		require.ErrorIs(t, ce, context.DeadlineExceeded)
		require.True(t, ce.Retryable())
	})

	t.Run("caller cancels", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, cmlsim.Options{Faults: cmlsim.Faults{Latency: time.Second}}, cml.Options{})
		ep := e.boot("i-cancel")
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, err := e.client.SystemStats(cctx, ep)
		ce := requireCloudError(t, err, application.CloudTimeout, "")
		require.ErrorIs(t, ce, context.Canceled)
	})

	t.Run("connection refused", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, cmlsim.Options{}, cml.Options{})
		ep := e.boot("i-gone")
		e.server.Close()
		_, err := e.client.SystemInformation(ctx, ep)
		requireCloudError(t, err, application.CloudUnavailable, "")
	})

	t.Run("an endpoint that is not a URL", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, cmlsim.Options{}, cml.Options{})
		for _, ep := range []string{"", "ftp://x", "127.0.0.1:9443", "https://"} {
			_, err := e.client.SystemInformation(ctx, ep)
			requireCloudError(t, err, application.CloudInvalid, "")
		}
	})
}

func itoa(i int) string {
	const digits = "0123456789"
	return string([]byte{digits[i/100%10], digits[i/10%10], digits[i%10]})
}

func TestUserIDIsLearntAtLogin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, cmlsim.Options{}, cml.Options{})
	ep := e.boot("i-userid")
	require.Empty(t, e.client.UserID(ep), "no login yet")
	_, err := e.client.SystemHealth(ctx, ep)
	require.NoError(t, err)
	id := e.client.UserID(ep)
	require.NotEmpty(t, id)
	require.Empty(t, e.client.UserID("https://127.0.0.1:1/unknown"))
	require.EqualValues(t, 1, e.fleet.Calls()["POST /auth_extended"])
}
