package application_test

import (
	"context"
	"errors"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain/settings"
	"github.com/cmlcloud/cml-cloud-manager/domain/task"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// The expected access matrix, written out from DESIGN.md section 8 and
// independently of rbac.Policy: every command and query of the application ×
// every kind of caller. "A" allowed, "-" refused (403), for the columns
// admin, manager, user, auditor, integrator, authenticated without a role,
// system. Anonymous callers are refused with 401 everywhere.
var accessMatrix = []struct {
	op     string
	expect string // admin manager user auditor integrator none system
	call   func(ctx context.Context, a *application.App, id string) error
}{
	{"ListWorkers", "AAAAA--", func(ctx context.Context, a *application.App, _ string) error {
		_, _, err := a.ListWorkers(ctx, application.WorkerFilter{})
		return err
	}},
	{"ListWorkersJSON", "AAAAA--", func(ctx context.Context, a *application.App, _ string) error {
		_, _, err := a.ListWorkersJSON(ctx, application.WorkerFilter{})
		return err
	}},
	{"GetWorker", "AAAAA--", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.GetWorker(ctx, id)
		return err
	}},
	{"IdleStatus", "AAAA---", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.IdleStatus(ctx, id)
		return err
	}},
	{"CreateWorker", "A------", func(ctx context.Context, a *application.App, _ string) error {
		_, err := a.CreateWorker(ctx, application.CreateWorker{Name: "w", Region: "us-east-1"})
		return err
	}},
	{"ImportWorker", "A------", func(ctx context.Context, a *application.App, _ string) error {
		_, err := a.ImportWorker(ctx, application.ImportWorker{Region: "us-east-1", InstanceID: "i-0aaaaaaaaaaaaaaaa", State: worker.EC2Running})
		return err
	}},
	{"TerminateWorker", "A------", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.TerminateWorker(ctx, id)
		return err
	}},
	{"RemoveWorker", "A------", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.RemoveWorker(ctx, id)
		return err
	}},
	{"RetryProvisioning", "A------", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.RetryProvisioning(ctx, id)
		return err
	}},
	{"StartWorker", "AA-----", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.StartWorker(ctx, id)
		return err
	}},
	{"StopWorker", "AA-----", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.StopWorker(ctx, id)
		return err
	}},
	{"ReplaceWorkerTags", "AA-----", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.ReplaceWorkerTags(ctx, id, map[string]string{"team": "x"})
		return err
	}},
	{"SetDetailedMonitoring", "A------", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.SetDetailedMonitoring(ctx, id, false)
		return err
	}},
	{"SetIdleDetection", "A------", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.SetIdleDetection(ctx, id, false, 0)
		return err
	}},
	{"RequestLicenseRegistration", "A------", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.RequestLicenseRegistration(ctx, id, "token", false)
		return err
	}},
	{"RequestLicenseDeregistration", "A------", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.RequestLicenseDeregistration(ctx, id)
		return err
	}},
	{"RequestLabAction", "AA-----", func(ctx context.Context, a *application.App, id string) error {
		_, _, err := a.RequestLabAction(ctx, id, application.LabAction{Action: worker.LabStart, LabID: "lab1"})
		return err
	}},
	{"GetSettings", "A--A---", func(ctx context.Context, a *application.App, _ string) error {
		_, err := a.GetSettings(ctx)
		return err
	}},
	{"UpdateSettings", "A------", func(ctx context.Context, a *application.App, _ string) error {
		n := int64(120)
		_, err := a.UpdateSettings(ctx, settings.Patch{FleetReconcileSeconds: &n}, nil)
		return err
	}},
	{"ListTasks", "AAAA---", func(ctx context.Context, a *application.App, _ string) error {
		_, _, err := a.ListTasks(ctx, application.TaskFilter{})
		return err
	}},
	{"GetTask", "AAAA---", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.GetTask(ctx, id)
		return err
	}},
	{"CreateTask", "AAA----", func(ctx context.Context, a *application.App, _ string) error {
		_, err := a.CreateTask(ctx, application.CreateTask{Title: "t"})
		return err
	}},
	{"UpdateTask", "AAA----", func(ctx context.Context, a *application.App, id string) error {
		title := "x"
		_, err := a.UpdateTask(ctx, id, task.Patch{Title: &title})
		return err
	}},
	{"DeleteTask", "AA-----", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.DeleteTask(ctx, id)
		return err
	}},
	{"RecordInstanceLaunched", "------A", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.RecordInstanceLaunched(ctx, id, "i-0123456789abcdef0")
		return err
	}},
	{"RecordProvisioningFailed", "------A", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.RecordProvisioningFailed(ctx, id, "X", "")
		return err
	}},
	{"RecordStartFailed", "------A", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.RecordStartFailed(ctx, id, "X", "")
		return err
	}},
	{"RecordStopFailed", "------A", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.RecordStopFailed(ctx, id, "X", "")
		return err
	}},
	{"RecordTerminationFailed", "------A", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.RecordTerminationFailed(ctx, id, "X", "")
		return err
	}},
	{"ObserveInstance", "------A", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.ObserveInstance(ctx, id, worker.Observation{State: worker.EC2Running})
		return err
	}},
	{"ObserveService", "------A", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.ObserveService(ctx, id, worker.ServiceAvailable, "2.9.0", true)
		return err
	}},
	{"ObserveLicense", "------A", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.ObserveLicense(ctx, id, worker.LicenseRegistered)
		return err
	}},
	{"RecordLicenseRegistrationCompleted", "------A", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.RecordLicenseRegistrationCompleted(ctx, id, worker.LicenseRegistered, "", "")
		return err
	}},
	{"RecordLicenseRegistrationFailed", "------A", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.RecordLicenseRegistrationFailed(ctx, id, "X", "")
		return err
	}},
	{"RecordLicenseDeregistrationCompleted", "------A", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.RecordLicenseDeregistrationCompleted(ctx, id, "")
		return err
	}},
	{"RecordLicenseDeregistrationFailed", "------A", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.RecordLicenseDeregistrationFailed(ctx, id, "X", "")
		return err
	}},
	{"ObserveActivity", "------A", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.ObserveActivity(ctx, id, time.Now(), "start_lab")
		return err
	}},
	{"StopIfIdle", "------A", func(ctx context.Context, a *application.App, id string) error {
		_, _, err := a.StopIfIdle(ctx, id)
		return err
	}},
	{"RecordLabActionCompleted", "------A", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.RecordLabActionCompleted(ctx, id, "r", "lab1")
		return err
	}},
	{"RecordLabActionFailed", "------A", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.RecordLabActionFailed(ctx, id, "r", "X", "")
		return err
	}},
	{"WorkerState", "------A", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.WorkerState(ctx, id)
		return err
	}},
	{"DashboardStream", "AAAAA--", func(ctx context.Context, a *application.App, id string) error {
		_, err := a.DashboardStream(ctx, application.DashboardQuery{WorkerIDs: []string{id}})
		return err
	}},
	{"DomainEvents", "A---A--", func(ctx context.Context, a *application.App, id string) error {
		sub, err := a.DomainEvents(ctx, application.DomainQuery{WorkerID: id})
		if sub != nil {
			sub.Close()
		}
		return err
	}},
}

var callers = []struct {
	name string
	p    rbac.Principal
}{
	{"admin", rbac.Principal{Subject: "u-admin", Roles: []rbac.Role{rbac.RoleAdmin}, Department: "ops"}},
	{"manager", rbac.Principal{Subject: "u-manager", Roles: []rbac.Role{rbac.RoleManager}, Department: "ops"}},
	{"user", rbac.Principal{Subject: "u-user", Roles: []rbac.Role{rbac.RoleUser}, Department: "ops"}},
	{"auditor", rbac.Principal{Subject: "u-auditor", Roles: []rbac.Role{rbac.RoleAuditor}}},
	{"integrator", rbac.Principal{Subject: "svc-integrator", Roles: []rbac.Role{rbac.RoleIntegrator}}},
	{"none", rbac.Principal{Subject: "u-nobody"}},
	{"system", rbac.System("test")},
}

// TestAccessMatrix runs every handler as every kind of caller and checks the
// outcome against the matrix: allowed calls may fail for other reasons (the
// worker or task does not exist), but never with 401 or 403.
func TestAccessMatrix(t *testing.T) {
	b := setup(t)
	missing := "0190c6a0-0000-7000-8000-000000000001"
	seen := map[string]bool{}
	for _, row := range accessMatrix {
		seen[row.op] = true
		if len(row.expect) != len(callers) {
			t.Fatalf("%s: matrix row has %d columns, want %d", row.op, len(row.expect), len(callers))
		}
		for i, c := range callers {
			t.Run(row.op+"/"+c.name, func(t *testing.T) {
				err := row.call(rbac.WithPrincipal(context.Background(), c.p), b.app, missing)
				denied := errors.Is(err, rbac.ErrForbidden) || errors.Is(err, rbac.ErrUnauthenticated)
				if want := row.expect[i] == 'A'; want == denied {
					t.Fatalf("%s as %s: err = %v; want allowed=%v", row.op, c.name, err, want)
				}
				if denied && !errors.Is(err, rbac.ErrForbidden) {
					t.Fatalf("%s as %s: err = %v; want ErrForbidden", row.op, c.name, err)
				}
			})
		}
		t.Run(row.op+"/anonymous", func(t *testing.T) {
			if err := row.call(context.Background(), b.app, missing); !errors.Is(err, rbac.ErrUnauthenticated) {
				t.Fatalf("%s anonymous: err = %v; want ErrUnauthenticated", row.op, err)
			}
		})
	}
	// Every exported handler of App is in the matrix.
	var absent []string
	for _, m := range appMethods() {
		if !seen[m] {
			absent = append(absent, m)
		}
	}
	if len(absent) > 0 {
		sort.Strings(absent)
		t.Fatalf("handlers missing from the access matrix: %s", strings.Join(absent, ", "))
	}
}

// TestPolicyMatchesMatrix checks the policy table (used by the API docs)
// against the same expectations, action by action.
func TestPolicyMatchesMatrix(t *testing.T) {
	t.Parallel()
	want := map[rbac.Action]string{
		rbac.WorkersRead: "AAAAA--", rbac.WorkerCreate: "A------", rbac.WorkerImport: "A------",
		rbac.WorkerTerminate: "A------", rbac.WorkerRemove: "A------", rbac.WorkerStart: "AA-----",
		rbac.WorkerStop: "AA-----", rbac.WorkerTags: "AA-----", rbac.WorkerRefresh: "AAA----",
		rbac.WorkerMonitoring: "A------", rbac.WorkerIdleDetection: "A------", rbac.WorkerLicense: "A------",
		rbac.WorkerObserve: "AAAA---", rbac.WorkerLabsManage: "AA-----", rbac.WorkerHistory: "A--A---",
		rbac.WorkerRecord: "------A", rbac.AuditRead: "A--A---", rbac.SystemRead: "AAAA---",
		rbac.SystemJobsRun: "A------", rbac.SettingsRead: "A--A---", rbac.SettingsUpdate: "A------",
		rbac.ProjectionsRebuild: "A------", rbac.TasksRead: "AAAA---", rbac.TaskCreate: "AAA----",
		rbac.TaskUpdate: "AAA----", rbac.TaskDelete: "AA-----", rbac.EventsStream: "AAAAA--",
		rbac.EventsDomain: "A---A--",
	}
	for _, a := range rbac.Actions() {
		exp, ok := want[a]
		if !ok {
			t.Errorf("action %s has no expectation", a)
			continue
		}
		got := ""
		for _, c := range callers {
			if rbac.Allowed(c.p, a) {
				got += "A"
			} else {
				got += "-"
			}
		}
		if got != exp {
			t.Errorf("%s: policy gives %s, want %s", a, got, exp)
		}
	}
	if len(want) != len(rbac.Actions()) {
		t.Errorf("expectations for %d actions, policy has %d", len(want), len(rbac.Actions()))
	}
}

// appMethods lists App's exported methods by name, so that a new handler
// cannot be added without deciding its access.
func appMethods() []string {
	t := reflect.TypeFor[*application.App]()
	out := make([]string, 0, t.NumMethod())
	for i := range t.NumMethod() {
		out = append(out, t.Method(i).Name)
	}
	return out
}
