package application_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// TestReactionsFollowDesignSection6 checks the reactors' table: which event
// of a worker's lifecycle calls for which job.
func TestReactionsFollowDesignSection6(t *testing.T) {
	t.Parallel()
	const id = "0190c6a0-0000-7000-8000-000000000001"
	lab := worker.LabActionRequested{RequestID: "r1", Action: worker.LabImport, Title: "t", YAML: "lab: {}"}
	lic := worker.LicenseRegistrationRequested{Reregister: true, TokenFingerprint: "fp", SealedToken: "sealed"}
	for _, tc := range []struct {
		event domain.Event
		want  []application.Reaction
	}{
		{worker.Created{WorkerID: id}, []application.Reaction{{Kind: application.JobEC2Launch, WorkerID: id, Attempt: 1}}},
		{worker.ProvisioningRetried{Attempt: 3}, []application.Reaction{{Kind: application.JobEC2Launch, WorkerID: id, Attempt: 3}}},
		{worker.StartRequested{}, []application.Reaction{{Kind: application.JobEC2Start, WorkerID: id}}},
		{worker.StopRequested{Reason: worker.StopIdleTimeout}, []application.Reaction{{Kind: application.JobEC2Stop, WorkerID: id}}},
		{worker.TerminationRequested{}, []application.Reaction{{Kind: application.JobEC2Terminate, WorkerID: id}}},
		{worker.TagsChanged{Tags: map[string]string{"a": "b"}}, []application.Reaction{{Kind: application.JobEC2Tags, WorkerID: id}}},
		{worker.TagsChanged{Tags: map[string]string{"a": "b"}, External: true}, nil},
		{worker.DetailedMonitoringChanged{Enabled: true}, []application.Reaction{{Kind: application.JobEC2Monitoring, WorkerID: id, Enabled: true}}},
		{lic, []application.Reaction{{Kind: application.JobLicenseRegister, WorkerID: id, License: lic}}},
		{worker.LicenseDeregistrationRequested{}, []application.Reaction{{Kind: application.JobLicenseDeregister, WorkerID: id}}},
		{lab, []application.Reaction{{Kind: application.JobLabAction, WorkerID: id, Lab: lab}}},
		{worker.Imported{WorkerID: id}, []application.Reaction{{Kind: application.JobEC2Tags, WorkerID: id}, {Kind: application.JobWorkerRefresh, WorkerID: id}}},
		{worker.InstanceStateObserved{EC2State: worker.EC2Running}, nil},
		{worker.ActivityObserved{}, nil},
		{worker.IdleDetected{}, nil},
		{worker.Removed{}, nil},
		{worker.MetricsSampled{}, nil},
	} {
		require.Equal(t, tc.want, application.Reactions(id, tc.event), tc.event.EventType())
	}
}
