package worker_test

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// outcomeKind is what a command is expected to do on a given.
type outcomeKind int

const (
	kindEvents   outcomeKind = iota // E: exactly these events
	kindNone                        // N: no event, no error
	kindIllegal                     // X: domain.ErrIllegalTransition
	kindNotFound                    // NF: domain.ErrNotFound
	kindExists                      // AE: domain.ErrAlreadyExists
	kindInvalid                     // INV: domain.ErrInvalid
)

type outcome struct {
	kind   outcomeKind
	events []domain.Event
}

// E expects exactly these events, in order, field for field.
func E(events ...domain.Event) outcome { return outcome{kind: kindEvents, events: events} }

var (
	N   = outcome{kind: kindNone}
	X   = outcome{kind: kindIllegal}
	NF  = outcome{kind: kindNotFound}
	AE  = outcome{kind: kindExists}
	INV = outcome{kind: kindInvalid}
)

type command func(w *worker.Worker, g given) ([]domain.Event, error)

type matrixRow struct {
	name string
	// idle builds the givens with idle detection enabled in Created.
	idle bool
	cmd  command
	want map[string]outcome // one entry per given, all of them
	// notIdempotent is set where a second identical call may legitimately
	// record again. No row needs it today.
	notIdempotent bool
}

// later is after every event of every given.
var later = t0.Add(24 * time.Hour)

func idlePolicy() worker.IdlePolicy {
	return worker.IdlePolicy{Enabled: true, Timeout: 60 * time.Minute, Snooze: 60 * time.Minute}
}

// seen builds the InstanceStateObserved the running observation of the
// matrix produces.
func seen(state worker.EC2State, public, private, system, inst string, external bool) worker.InstanceStateObserved {
	return worker.InstanceStateObserved{
		EC2State: state, PublicIP: public, PrivateIP: private, InstanceType: instanceType,
		SystemStatus: system, InstanceStatus: inst, External: external,
	}
}

func createSpec() worker.CreateSpec {
	return worker.CreateSpec{
		Name: "cml-lab-eu-2", Region: region, InstanceType: instanceType, AMIID: amiID, AMIName: amiName,
		SubnetID: subnetID, SecurityGroupIDs: []string{securityGroupID}, KeyName: "cml-admin",
		Tags: map[string]string{"team": "netops"}, DetailedMonitoring: true, IdleDetectionEnabled: true,
	}
}

func importSpec() worker.ImportSpec {
	return worker.ImportSpec{
		Name: "cml-training-2", Region: region, InstanceID: instanceID, InstanceType: instanceType,
		AMIID: amiID, AMIName: amiName, EC2State: worker.EC2Running, PublicIP: publicIP, PrivateIP: privateIP,
		Endpoint: "https://" + publicIP, Tags: map[string]string{"team": "training"}, IdleDetectionEnabled: true,
	}
}

func matrix() []matrixRow {
	adopted := E(worker.InstanceLaunched{InstanceID: instanceID, Attempt: 1},
		seen(worker.EC2Running, "", "", "", "", false))
	idleStop := func(idleFor time.Duration) outcome {
		return E(
			worker.IdleDetected{IdleSince: at(2), IdleSeconds: int64(idleFor / time.Second), TimeoutSeconds: 3600},
			worker.StopRequested{Reason: worker.StopIdleTimeout},
		)
	}
	tags := E(worker.TagsChanged{Tags: map[string]string{"team": "a"}})
	monitoring := E(worker.DetailedMonitoringChanged{Enabled: true})
	idleOn := E(worker.IdleDetectionEnabled{TimeoutSeconds: 0})
	service := E(worker.ServiceStatusChanged{Status: worker.ServiceAvailable, Version: "2.9.0", Ready: true})
	license := E(worker.LicenseStatusChanged{Status: worker.LicenseRegistered})
	licenseAsk := E(worker.LicenseRegistrationRequested{Reregister: false, TokenFingerprint: "fp", SealedToken: "sealed"})
	deregister := E(worker.LicenseDeregistrationRequested{})
	activity := E(worker.ActivityObserved{LastActivityAt: later, Category: "ui"})
	lab2 := E(worker.LabActionRequested{RequestID: "req-2", Action: worker.LabStart, LabID: "lab1"})
	lab1 := E(worker.LabActionRequested{RequestID: "req-1", Action: worker.LabStart, LabID: "lab1"})
	launched := E(worker.InstanceLaunched{InstanceID: otherInstanceID, Attempt: 1})
	launchedSame := E(worker.InstanceLaunched{InstanceID: instanceID, Attempt: 1})
	terminate := E(worker.TerminationRequested{})
	removed := E(worker.Removed{})

	return []matrixRow{
		{
			name: "Create",
			cmd:  func(w *worker.Worker, _ given) ([]domain.Event, error) { return w.Create(workerID, createSpec()) },
			want: map[string]outcome{
				gNew: E(worker.Created{
					WorkerID: workerID, Name: "cml-lab-eu-2", Region: region, InstanceType: instanceType,
					AMIID: amiID, AMIName: amiName, SubnetID: subnetID, SecurityGroupIDs: []string{securityGroupID},
					KeyName: "cml-admin", Tags: map[string]string{"team": "netops"},
					DetailedMonitoring: true, IdleDetectionEnabled: true,
				}),
				gProvisioning: AE, gPending: AE, gStarting: AE, gRunning: AE, gStopping: AE, gStopped: AE,
				gTerminating: AE, gTerminated: AE, gFailed: AE, gRemoved: AE, gRegistering: AE, gLabPending: AE,
			},
		},
		{
			name: "Import",
			cmd:  func(w *worker.Worker, _ given) ([]domain.Event, error) { return w.Import(workerID, importSpec()) },
			want: map[string]outcome{
				gNew: E(worker.Imported{
					WorkerID: workerID, Name: "cml-training-2", Region: region, InstanceID: instanceID,
					InstanceType: instanceType, AMIID: amiID, AMIName: amiName, EC2State: worker.EC2Running,
					PublicIP: publicIP, PrivateIP: privateIP, Endpoint: "https://" + publicIP,
					Tags: map[string]string{"team": "training"}, IdleDetectionEnabled: true,
				}),
				gProvisioning: AE, gPending: AE, gStarting: AE, gRunning: AE, gStopping: AE, gStopped: AE,
				gTerminating: AE, gTerminated: AE, gFailed: AE, gRemoved: AE, gRegistering: AE, gLabPending: AE,
			},
		},
		{
			name: "RecordInstanceLaunched/new-id",
			cmd: func(w *worker.Worker, _ given) ([]domain.Event, error) {
				return w.RecordInstanceLaunched(otherInstanceID)
			},
			want: map[string]outcome{
				gNew: NF, gProvisioning: launched, gPending: X, gStarting: X, gRunning: X, gStopping: X, gStopped: X,
				gTerminating: X, gTerminated: X, gFailed: launched, gRemoved: X, gRegistering: X, gLabPending: X,
			},
		},
		{
			name: "RecordInstanceLaunched/same-id",
			cmd: func(w *worker.Worker, _ given) ([]domain.Event, error) {
				return w.RecordInstanceLaunched(instanceID)
			},
			want: map[string]outcome{
				gNew: NF, gProvisioning: launchedSame, gPending: N, gStarting: N, gRunning: N, gStopping: N, gStopped: N,
				gTerminating: N, gTerminated: N, gFailed: launchedSame, gRemoved: X, gRegistering: N, gLabPending: N,
			},
		},
		{
			name: "RecordProvisioningFailed",
			cmd: func(w *worker.Worker, _ given) ([]domain.Event, error) {
				return w.RecordProvisioningFailed("InsufficientInstanceCapacity", "no capacity")
			},
			want: map[string]outcome{
				gNew: NF, gProvisioning: E(worker.ProvisioningFailed{Code: "InsufficientInstanceCapacity", Message: "no capacity", Attempt: 1}),
				gPending: X, gStarting: X, gRunning: X, gStopping: X, gStopped: X,
				gTerminating: X, gTerminated: X, gFailed: N, gRemoved: X, gRegistering: X, gLabPending: X,
			},
		},
		{
			name: "RetryProvisioning",
			cmd:  func(w *worker.Worker, _ given) ([]domain.Event, error) { return w.RetryProvisioning() },
			want: map[string]outcome{
				gNew: NF, gProvisioning: N, gPending: X, gStarting: X, gRunning: X, gStopping: X, gStopped: X,
				gTerminating: X, gTerminated: X, gFailed: E(worker.ProvisioningRetried{Attempt: 2}), gRemoved: X,
				gRegistering: X, gLabPending: X,
			},
		},
		{
			name: "RequestStart",
			cmd:  func(w *worker.Worker, _ given) ([]domain.Event, error) { return w.RequestStart() },
			want: map[string]outcome{
				gNew: NF, gProvisioning: X, gPending: N, gStarting: N, gRunning: N, gStopping: X,
				gStopped:     E(worker.StartRequested{}),
				gTerminating: X, gTerminated: X, gFailed: X, gRemoved: X, gRegistering: N, gLabPending: N,
			},
		},
		{
			name: "RecordStartFailed",
			cmd: func(w *worker.Worker, _ given) ([]domain.Event, error) {
				return w.RecordStartFailed("IncorrectInstanceState", "cannot start")
			},
			want: map[string]outcome{
				gNew: NF, gProvisioning: N, gPending: N,
				gStarting: E(worker.StartFailed{Code: "IncorrectInstanceState", Message: "cannot start"}),
				gRunning:  N, gStopping: N, gStopped: N, gTerminating: N, gTerminated: N, gFailed: N, gRemoved: X,
				gRegistering: N, gLabPending: N,
			},
		},
		{
			name: "RequestStop/manual",
			cmd:  func(w *worker.Worker, _ given) ([]domain.Event, error) { return w.RequestStop(worker.StopManual) },
			want: map[string]outcome{
				gNew: NF, gProvisioning: X, gPending: X, gStarting: X,
				gRunning:  E(worker.StopRequested{Reason: worker.StopManual}),
				gStopping: N, gStopped: N, gTerminating: X, gTerminated: X, gFailed: X, gRemoved: X,
				gRegistering: E(worker.StopRequested{Reason: worker.StopManual}),
				gLabPending:  E(worker.StopRequested{Reason: worker.StopManual}),
			},
		},
		{
			name: "RequestStop/idle_timeout",
			cmd: func(w *worker.Worker, _ given) ([]domain.Event, error) {
				return w.RequestStop(worker.StopIdleTimeout)
			},
			want: map[string]outcome{
				gNew: NF, gProvisioning: INV, gPending: INV, gStarting: INV, gRunning: INV, gStopping: INV, gStopped: INV,
				gTerminating: INV, gTerminated: INV, gFailed: INV, gRemoved: INV, gRegistering: INV, gLabPending: INV,
			},
		},
		{
			name: "RecordStopFailed",
			cmd: func(w *worker.Worker, _ given) ([]domain.Event, error) {
				return w.RecordStopFailed("UnauthorizedOperation", "not allowed")
			},
			want: map[string]outcome{
				gNew: NF, gProvisioning: N, gPending: N, gStarting: N, gRunning: N,
				gStopping: E(worker.StopFailed{Code: "UnauthorizedOperation", Message: "not allowed"}),
				gStopped:  N, gTerminating: N, gTerminated: N, gFailed: N, gRemoved: X, gRegistering: N, gLabPending: N,
			},
		},
		{
			name: "RequestTermination",
			cmd:  func(w *worker.Worker, _ given) ([]domain.Event, error) { return w.RequestTermination() },
			want: map[string]outcome{
				gNew: NF, gProvisioning: X, gPending: terminate, gStarting: terminate, gRunning: terminate,
				gStopping: terminate, gStopped: terminate, gTerminating: N, gTerminated: N, gFailed: terminate,
				gRemoved: X, gRegistering: terminate, gLabPending: terminate,
			},
		},
		{
			name: "RecordTerminationFailed",
			cmd: func(w *worker.Worker, _ given) ([]domain.Event, error) {
				return w.RecordTerminationFailed("OperationNotPermitted", "termination protection")
			},
			want: map[string]outcome{
				gNew: NF, gProvisioning: N, gPending: N, gStarting: N, gRunning: N, gStopping: N, gStopped: N,
				gTerminating: E(worker.TerminationFailed{Code: "OperationNotPermitted", Message: "termination protection"}),
				gTerminated:  N, gFailed: N, gRemoved: X, gRegistering: N, gLabPending: N,
			},
		},
		{
			name: "Remove",
			cmd:  func(w *worker.Worker, _ given) ([]domain.Event, error) { return w.Remove() },
			want: map[string]outcome{
				gNew: NF, gProvisioning: X, gPending: removed, gStarting: removed, gRunning: removed,
				gStopping: removed, gStopped: removed, gTerminating: removed, gTerminated: removed, gFailed: removed,
				gRemoved: N, gRegistering: removed, gLabPending: removed,
			},
		},
		{
			name: "ObserveInstance/running",
			cmd: func(w *worker.Worker, g given) ([]domain.Event, error) {
				return w.ObserveInstance(worker.Observation{
					InstanceID: instanceID, State: worker.EC2Running,
					PublicIP: g.state.PublicIP, PrivateIP: g.state.PrivateIP, InstanceType: g.state.InstanceType,
					SystemStatus: g.state.SystemStatus, InstanceStatus: g.state.InstanceStatus, Endpoint: g.state.Endpoint,
				})
			},
			want: map[string]outcome{
				gNew: NF, gProvisioning: adopted,
				gPending:  E(seen(worker.EC2Running, "", "", "", "", false)),
				gStarting: E(seen(worker.EC2Running, "", privateIP, "", "", false)),
				gRunning:  N, gStopping: N,
				gStopped:     E(seen(worker.EC2Running, "", privateIP, "", "", true)),
				gTerminating: N, gTerminated: N, gFailed: adopted, gRemoved: X, gRegistering: N, gLabPending: N,
			},
		},
		{
			name: "ReplaceTags/changed",
			cmd: func(w *worker.Worker, _ given) ([]domain.Event, error) {
				return w.ReplaceTags(map[string]string{"team": "a"})
			},
			want: map[string]outcome{
				gNew: NF, gProvisioning: tags, gPending: tags, gStarting: tags, gRunning: tags, gStopping: tags,
				gStopped: tags, gTerminating: X, gTerminated: X, gFailed: tags, gRemoved: X,
				gRegistering: tags, gLabPending: tags,
			},
		},
		{
			name: "ReplaceTags/same",
			cmd: func(w *worker.Worker, _ given) ([]domain.Event, error) {
				return w.ReplaceTags(map[string]string{"team": "netops"})
			},
			want: map[string]outcome{
				gNew: NF, gProvisioning: N, gPending: N, gStarting: N, gRunning: N, gStopping: N, gStopped: N,
				gTerminating: X, gTerminated: X, gFailed: N, gRemoved: X, gRegistering: N, gLabPending: N,
			},
		},
		{
			name: "ReplaceTags/ManagedBy-other-value",
			cmd: func(w *worker.Worker, _ given) ([]domain.Event, error) {
				return w.ReplaceTags(map[string]string{"team": "a", worker.TagManagedBy: "someone-else"})
			},
			want: map[string]outcome{
				gNew: NF, gProvisioning: INV, gPending: INV, gStarting: INV, gRunning: INV, gStopping: INV,
				gStopped: INV, gTerminating: X, gTerminated: X, gFailed: INV, gRemoved: X,
				gRegistering: INV, gLabPending: INV,
			},
		},
		{
			name: "ReplaceTags/aws-prefix",
			cmd: func(w *worker.Worker, _ given) ([]domain.Event, error) {
				return w.ReplaceTags(map[string]string{"aws:x": "1"})
			},
			want: map[string]outcome{
				gNew: NF, gProvisioning: INV, gPending: INV, gStarting: INV, gRunning: INV, gStopping: INV,
				gStopped: INV, gTerminating: X, gTerminated: X, gFailed: INV, gRemoved: X,
				gRegistering: INV, gLabPending: INV,
			},
		},
		{
			name: "SetDetailedMonitoring/true",
			cmd:  func(w *worker.Worker, _ given) ([]domain.Event, error) { return w.SetDetailedMonitoring(true) },
			want: map[string]outcome{
				gNew: NF, gProvisioning: monitoring, gPending: monitoring, gStarting: monitoring, gRunning: monitoring,
				gStopping: monitoring, gStopped: monitoring, gTerminating: X, gTerminated: X, gFailed: monitoring,
				gRemoved: X, gRegistering: monitoring, gLabPending: monitoring,
			},
		},
		{
			name: "SetDetailedMonitoring/false-unchanged",
			cmd:  func(w *worker.Worker, _ given) ([]domain.Event, error) { return w.SetDetailedMonitoring(false) },
			want: map[string]outcome{
				gNew: NF, gProvisioning: N, gPending: N, gStarting: N, gRunning: N, gStopping: N, gStopped: N,
				gTerminating: X, gTerminated: X, gFailed: N, gRemoved: X, gRegistering: N, gLabPending: N,
			},
		},
		{
			name: "EnableIdleDetection/global-timeout",
			cmd:  func(w *worker.Worker, _ given) ([]domain.Event, error) { return w.EnableIdleDetection(0) },
			want: map[string]outcome{
				gNew: NF, gProvisioning: idleOn, gPending: idleOn, gStarting: idleOn, gRunning: idleOn,
				gStopping: idleOn, gStopped: idleOn, gTerminating: idleOn, gTerminated: X, gFailed: idleOn,
				gRemoved: X, gRegistering: idleOn, gLabPending: idleOn,
			},
		},
		{
			name: "EnableIdleDetection/1m",
			cmd:  func(w *worker.Worker, _ given) ([]domain.Event, error) { return w.EnableIdleDetection(time.Minute) },
			want: map[string]outcome{
				gNew: NF, gProvisioning: INV, gPending: INV, gStarting: INV, gRunning: INV, gStopping: INV,
				gStopped: INV, gTerminating: INV, gTerminated: X, gFailed: INV, gRemoved: X,
				gRegistering: INV, gLabPending: INV,
			},
		},
		{
			name: "DisableIdleDetection/already-disabled",
			cmd:  func(w *worker.Worker, _ given) ([]domain.Event, error) { return w.DisableIdleDetection() },
			want: map[string]outcome{
				gNew: NF, gProvisioning: N, gPending: N, gStarting: N, gRunning: N, gStopping: N, gStopped: N,
				gTerminating: N, gTerminated: X, gFailed: N, gRemoved: X, gRegistering: N, gLabPending: N,
			},
		},
		{
			name: "DisableIdleDetection/enabled",
			idle: true,
			cmd:  func(w *worker.Worker, _ given) ([]domain.Event, error) { return w.DisableIdleDetection() },
			want: map[string]outcome{
				gNew: NF, gProvisioning: E(worker.IdleDetectionDisabled{}), gPending: E(worker.IdleDetectionDisabled{}),
				gStarting: E(worker.IdleDetectionDisabled{}), gRunning: E(worker.IdleDetectionDisabled{}),
				gStopping: E(worker.IdleDetectionDisabled{}), gStopped: E(worker.IdleDetectionDisabled{}),
				gTerminating: E(worker.IdleDetectionDisabled{}), gTerminated: X, gFailed: E(worker.IdleDetectionDisabled{}),
				gRemoved: X, gRegistering: E(worker.IdleDetectionDisabled{}), gLabPending: E(worker.IdleDetectionDisabled{}),
			},
		},
		{
			name: "ObserveService/available",
			cmd: func(w *worker.Worker, _ given) ([]domain.Event, error) {
				return w.ObserveService(worker.ServiceAvailable, "2.9.0", true)
			},
			want: map[string]outcome{
				gNew: NF, gProvisioning: N, gPending: service, gStarting: service, gRunning: service,
				gStopping: service, gStopped: N, gTerminating: N, gTerminated: N, gFailed: N, gRemoved: X,
				gRegistering: service, gLabPending: service,
			},
		},
		{
			name: "ObserveLicense/registered",
			cmd: func(w *worker.Worker, _ given) ([]domain.Event, error) {
				return w.ObserveLicense(worker.LicenseRegistered)
			},
			want: map[string]outcome{
				gNew: NF, gProvisioning: N, gPending: license, gStarting: license, gRunning: license,
				gStopping: license, gStopped: N, gTerminating: N, gTerminated: N, gFailed: N, gRemoved: X,
				gRegistering: license, gLabPending: license,
			},
		},
		{
			name: "RequestLicenseRegistration",
			cmd: func(w *worker.Worker, _ given) ([]domain.Event, error) {
				return w.RequestLicenseRegistration(false, "fp", "sealed")
			},
			want: map[string]outcome{
				gNew: NF, gProvisioning: X, gPending: X, gStarting: X, gRunning: licenseAsk, gStopping: X, gStopped: X,
				gTerminating: X, gTerminated: X, gFailed: X, gRemoved: X, gRegistering: X, gLabPending: licenseAsk,
			},
		},
		{
			name: "RequestLicenseDeregistration",
			cmd:  func(w *worker.Worker, _ given) ([]domain.Event, error) { return w.RequestLicenseDeregistration() },
			want: map[string]outcome{
				gNew: NF, gProvisioning: X, gPending: X, gStarting: X, gRunning: deregister, gStopping: X, gStopped: X,
				gTerminating: X, gTerminated: X, gFailed: X, gRemoved: X, gRegistering: X, gLabPending: deregister,
			},
		},
		{
			name: "RecordLicenseRegistrationCompleted",
			cmd: func(w *worker.Worker, _ given) ([]domain.Event, error) {
				return w.RecordLicenseRegistrationCompleted(worker.LicenseRegistered, "ACME Networks", "CML-Training")
			},
			want: map[string]outcome{
				gNew: NF, gProvisioning: N, gPending: N, gStarting: N, gRunning: N, gStopping: N, gStopped: N,
				gTerminating: N, gTerminated: N, gFailed: N, gRemoved: X,
				gRegistering: E(worker.LicenseRegistrationCompleted{
					Status: worker.LicenseRegistered, SmartAccount: "ACME Networks", VirtualAccount: "CML-Training",
				}),
				gLabPending: N,
			},
		},
		{
			name: "ObserveActivity/newer",
			cmd:  func(w *worker.Worker, _ given) ([]domain.Event, error) { return w.ObserveActivity(later, "ui") },
			want: map[string]outcome{
				gNew: NF, gProvisioning: activity, gPending: activity, gStarting: activity, gRunning: activity,
				gStopping: activity, gStopped: activity, gTerminating: activity, gTerminated: N, gFailed: activity,
				gRemoved: X, gRegistering: activity, gLabPending: activity,
			},
		},
		{
			name: "StopIfIdle/10-days-idle",
			idle: true,
			cmd: func(w *worker.Worker, g given) ([]domain.Event, error) {
				events, _, err := w.StopIfIdle(g.last().Add(10*24*time.Hour), idlePolicy())
				return events, err
			},
			want: map[string]outcome{
				gNew: NF, gProvisioning: N, gPending: N, gStarting: N, gRunning: idleStop(10 * 24 * time.Hour),
				gStopping: N, gStopped: N, gTerminating: N, gTerminated: N, gFailed: N, gRemoved: N,
				// A licence operation or a lab action in progress blocks an idle stop.
				gRegistering: N, gLabPending: N,
			},
		},
		{
			name: "RequestLabAction/req-2",
			cmd: func(w *worker.Worker, _ given) ([]domain.Event, error) {
				return w.RequestLabAction(worker.LabActionRequest{RequestID: "req-2", Action: worker.LabStart, LabID: "lab1"})
			},
			want: map[string]outcome{
				gNew: NF, gProvisioning: X, gPending: X, gStarting: X, gRunning: lab2, gStopping: X, gStopped: X,
				gTerminating: X, gTerminated: X, gFailed: X, gRemoved: X, gRegistering: lab2, gLabPending: lab2,
			},
		},
		{
			name: "RequestLabAction/req-1-again",
			cmd: func(w *worker.Worker, _ given) ([]domain.Event, error) {
				return w.RequestLabAction(worker.LabActionRequest{RequestID: "req-1", Action: worker.LabStart, LabID: "lab1"})
			},
			want: map[string]outcome{
				gNew: NF, gProvisioning: X, gPending: X, gStarting: X, gRunning: lab1, gStopping: X, gStopped: X,
				gTerminating: X, gTerminated: X, gFailed: X, gRemoved: X, gRegistering: lab1, gLabPending: N,
			},
		},
		{
			name: "RecordLabActionCompleted/req-1",
			cmd: func(w *worker.Worker, _ given) ([]domain.Event, error) {
				return w.RecordLabActionCompleted("req-1", "")
			},
			want: map[string]outcome{
				gNew: NF, gProvisioning: N, gPending: N, gStarting: N, gRunning: N, gStopping: N, gStopped: N,
				gTerminating: N, gTerminated: N, gFailed: N, gRemoved: X, gRegistering: N,
				gLabPending: E(worker.LabActionCompleted{RequestID: "req-1"}),
			},
		},
		{
			name: "RecordLabActionCompleted/unknown-request",
			cmd: func(w *worker.Worker, _ given) ([]domain.Event, error) {
				return w.RecordLabActionCompleted("req-9", "")
			},
			want: map[string]outcome{
				gNew: NF, gProvisioning: N, gPending: N, gStarting: N, gRunning: N, gStopping: N, gStopped: N,
				gTerminating: N, gTerminated: N, gFailed: N, gRemoved: X, gRegistering: N, gLabPending: N,
			},
		},
	}
}

// TestGivens pins the givens the matrix is built on, so that a change in
// Apply shows up here rather than as a puzzling matrix failure.
func TestGivens(t *testing.T) {
	t.Parallel()
	tests := []struct {
		given    string
		status   worker.Status
		intent   worker.Intent
		ec2      worker.EC2State
		instance string
		check    func(t *testing.T, s worker.State)
	}{
		{given: gProvisioning, status: worker.StatusProvisioning, intent: worker.IntentLaunch},
		{given: gPending, status: worker.StatusPending, intent: worker.IntentLaunch, instance: instanceID},
		{given: gStarting, status: worker.StatusPending, intent: worker.IntentStart, ec2: worker.EC2Stopped, instance: instanceID},
		{given: gRunning, status: worker.StatusRunning, ec2: worker.EC2Running, instance: instanceID},
		{given: gStopping, status: worker.StatusStopping, intent: worker.IntentStop, ec2: worker.EC2Running, instance: instanceID},
		{given: gStopped, status: worker.StatusStopped, ec2: worker.EC2Stopped, instance: instanceID},
		{given: gTerminating, status: worker.StatusTerminating, intent: worker.IntentTerminate, ec2: worker.EC2Running, instance: instanceID},
		{given: gTerminated, status: worker.StatusTerminated, ec2: worker.EC2Terminated, instance: instanceID},
		{given: gFailed, status: worker.StatusFailed},
		{given: gRemoved, status: worker.StatusRemoved, ec2: worker.EC2Running, instance: instanceID},
		{
			given: gRegistering, status: worker.StatusRunning, ec2: worker.EC2Running, instance: instanceID,
			check: func(t *testing.T, s worker.State) { assert.Equal(t, worker.LicenseOpRegister, s.LicenseOperation) },
		},
		{
			given: gLabPending, status: worker.StatusRunning, ec2: worker.EC2Running, instance: instanceID,
			check: func(t *testing.T, s worker.State) {
				assert.Equal(t, map[string]worker.PendingLabAction{
					"req-1": {Action: worker.LabStart, LabID: "lab1", RequestedAt: at(3)},
				}, s.PendingLabActions)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.given, func(t *testing.T) {
			t.Parallel()
			g := newGiven(t, tt.given, false)
			w := g.worker(t)
			assert.True(t, w.Exists())
			assert.Equal(t, int64(len(g.events)-1), w.Version())
			s := g.state
			assert.Equal(t, workerID, s.ID)
			assert.Equal(t, tt.status, s.Status)
			assert.Equal(t, tt.intent, s.Intent)
			assert.Equal(t, tt.ec2, s.EC2State)
			assert.Equal(t, tt.instance, s.InstanceID)
			assert.False(t, s.IdleDetectionEnabled)
			assert.False(t, s.DetailedMonitoring)
			if tt.check != nil {
				tt.check(t, s)
			}
		})
	}
	t.Run(gNew, func(t *testing.T) {
		t.Parallel()
		w := newGiven(t, gNew, false).worker(t)
		assert.False(t, w.Exists())
		assert.Equal(t, int64(-1), w.Version())
	})
}

func TestTransitionMatrix(t *testing.T) {
	t.Parallel()
	rows := matrix()
	names := map[string]bool{}
	for _, row := range rows {
		require.False(t, names[row.name], "row %q is listed twice", row.name)
		names[row.name] = true
		require.Len(t, row.want, len(givenNames), "row %q must list every given", row.name)
		for _, g := range givenNames {
			_, ok := row.want[g]
			require.True(t, ok, "row %q does not list given %q", row.name, g)
		}
	}
	for _, row := range rows {
		for _, name := range givenNames {
			t.Run(row.name+"/"+name, func(t *testing.T) {
				t.Parallel()
				want := row.want[name]
				g := newGiven(t, name, row.idle)
				w := g.worker(t)

				events, err := row.cmd(w, g)

				assert.Equal(t, g.state, w.State(), "a command must not change the worker")
				checkOutcome(t, want, g, events, err)
				if want.kind != kindEvents || t.Failed() {
					return
				}
				// The events apply to the given...
				next := g.worker(t)
				apply(t, next, g.last().Add(time.Second), events...)
				assert.Equal(t, g.worker(t).Version()+int64(len(events)), next.Version())
				if row.notIdempotent {
					return
				}
				// ...and the same command again records nothing more.
				again, err := row.cmd(next, g)
				assert.Empty(t, types(again), "second %s recorded again", row.name)
				if err != nil {
					assert.Truef(t, isRefusal(err), "second %s: unexpected error %s", row.name, describe(err))
				}
			})
		}
	}
}

// isRefusal: a repeated command may be refused as illegal or as a duplicate.
func isRefusal(err error) bool {
	var te *domain.TransitionError
	return errors.As(err, &te) || errors.Is(err, domain.ErrAlreadyExists)
}

func checkOutcome(t *testing.T, want outcome, g given, events []domain.Event, err error) {
	t.Helper()
	switch want.kind {
	case kindEvents:
		require.NoError(t, err, "want %v, got error %s", types(want.events), describe(err))
		assert.Equal(t, types(want.events), types(events), "event types")
		assert.Equal(t, want.events, events, "events")
	case kindNone:
		assert.NoError(t, err, "want no event and no error, got %s", describe(err))
		assert.Empty(t, types(events), "want no event")
	case kindIllegal:
		assert.Empty(t, types(events))
		requireTransitionError(t, err, g.state.Status)
	case kindNotFound:
		assert.Empty(t, types(events))
		assert.ErrorIs(t, err, domain.ErrNotFound, "got %s", describe(err))
	case kindExists:
		assert.Empty(t, types(events))
		assert.ErrorIs(t, err, domain.ErrAlreadyExists, "got %s", describe(err))
	case kindInvalid:
		assert.Empty(t, types(events))
		problems(t, err)
		assert.NotErrorIs(t, err, domain.ErrIllegalTransition)
	default:
		t.Fatalf("unknown outcome kind %d", want.kind)
	}
}

// TestObserveActivityNotNewer: the same or an older activity time records
// nothing, on every given that has seen activity.
func TestObserveActivityNotNewer(t *testing.T) {
	t.Parallel()
	for _, name := range givenNames {
		if name == gNew || name == gRemoved || name == gTerminated {
			continue
		}
		for _, tc := range []struct {
			name string
			when time.Time
		}{
			{"same", later},
			{"older", later.Add(-time.Second)},
			{"much-older", t0.Add(-time.Hour)},
		} {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				g := newGiven(t, name, false)
				w := g.worker(t)
				apply(t, w, later, worker.ActivityObserved{LastActivityAt: later, Category: "ui"})

				events, err := w.ObserveActivity(tc.when, "api")

				require.NoError(t, err)
				assert.Empty(t, types(events))
			})
		}
	}
}
