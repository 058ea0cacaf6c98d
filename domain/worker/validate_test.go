package worker_test

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

func TestCreateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	spec := worker.CreateSpec{
		Name: "", Region: "Europe", InstanceType: "huge", AMIID: "ami-xyz", SubnetID: "net-1",
		SecurityGroupIDs: []string{"default", securityGroupID}, KeyName: strings.Repeat("k", 256),
		Tags: map[string]string{"aws:x": "1"},
	}

	events, err := worker.New().Create("", spec)

	assert.Empty(t, events)
	ps := problems(t, err)
	assert.Len(t, ps, 9, "%v", ps)
	assert.ElementsMatch(t, []string{
		"id", "name", "region", "instance_type", "ami_id", "subnet_id", "security_group_ids", "key_name", "tags",
	}, problemFields(t, err))
}

func TestCreateOptionalFields(t *testing.T) {
	t.Parallel()
	spec := worker.CreateSpec{Name: "minimal", Region: "us-gov-west-1", InstanceType: "m5zn.metal", AMIID: "ami-0123abcd"}
	events, err := worker.New().Create(workerID, spec)
	require.NoError(t, err)
	assert.Equal(t, []domain.Event{worker.Created{
		WorkerID: workerID, Name: "minimal", Region: "us-gov-west-1", InstanceType: "m5zn.metal", AMIID: "ami-0123abcd",
	}}, events)
}

func TestCreateDoesNotShareInputs(t *testing.T) {
	t.Parallel()
	spec := createSpec()
	events, err := worker.New().Create(workerID, spec)
	require.NoError(t, err)
	spec.Tags["team"] = "changed"
	spec.SecurityGroupIDs[0] = "sg-ffffffffffffffff0"
	c := events[0].(worker.Created)
	assert.Equal(t, "netops", c.Tags["team"])
	assert.Equal(t, securityGroupID, c.SecurityGroupIDs[0])

	w := worker.New()
	apply(t, w, t0, c)
	c.Tags["team"] = "changed-again"
	assert.Equal(t, "netops", w.State().Tags["team"], "Apply copies the event's tags")
	st := w.State()
	st.Tags["team"] = "changed-through-state"
	assert.Equal(t, "netops", w.State().Tags["team"], "State returns a copy")
}

func TestWorkerName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		ok   bool
	}{
		{"cml-lab-1", true},
		{"Lab für Schulung", true},
		{strings.Repeat("é", worker.MaxNameLength), true},
		{"", false},
		{"   ", false},
		{strings.Repeat("a", worker.MaxNameLength+1), false},
		{"tab\there", false},
		{"new\nline", false},
		{" leading", false},
		{"trailing ", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec := createSpec()
			spec.Name = tt.name
			_, err := worker.New().Create(workerID, spec)
			if tt.ok {
				assert.NoError(t, err)
				return
			}
			assert.Equal(t, []string{"name"}, problemFields(t, err))
		})
	}
}

func TestImportReportsEveryProblem(t *testing.T) {
	t.Parallel()
	spec := worker.ImportSpec{
		Region: "", InstanceID: "instance-1", InstanceType: "x", AMIID: "ami-1", EC2State: "weird",
	}

	events, err := worker.New().Import("", spec)

	assert.Empty(t, events)
	assert.ElementsMatch(t, []string{"id", "region", "instance_id", "instance_type", "ami_id", "ec2_state"}, problemFields(t, err))
	assert.Len(t, problems(t, err), 6)
}

func TestImportByEC2State(t *testing.T) {
	t.Parallel()
	tests := []struct {
		state  worker.EC2State
		status worker.Status // "" when refused
	}{
		{worker.EC2Pending, worker.StatusPending},
		{worker.EC2Running, worker.StatusRunning},
		{worker.EC2Stopping, worker.StatusStopping},
		{worker.EC2Stopped, worker.StatusStopped},
		{worker.EC2ShuttingDown, ""},
		{worker.EC2Terminated, ""},
		{worker.EC2NotFound, ""},
	}
	for _, tt := range tests {
		t.Run(string(tt.state), func(t *testing.T) {
			t.Parallel()
			spec := importSpec()
			spec.EC2State = tt.state
			w := worker.New()
			events, err := w.Import(workerID, spec)
			if tt.status == "" {
				assert.Empty(t, events)
				ps := problems(t, err)
				require.Len(t, ps, 1)
				assert.Equal(t, "instance_id", ps[0].Field)
				assert.Contains(t, ps[0].Message, string(tt.state))
				return
			}
			require.NoError(t, err)
			apply(t, w, t0, events...)
			assert.Equal(t, tt.status, w.Status())
			assert.Equal(t, tt.state, w.State().EC2State)
		})
	}
}

func TestImportName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		spec func(s worker.ImportSpec) worker.ImportSpec
		want string
	}{
		{"given", func(s worker.ImportSpec) worker.ImportSpec { return s }, "cml-training-2"},
		{"from the Name tag", func(s worker.ImportSpec) worker.ImportSpec {
			s.Name, s.Tags = "", map[string]string{"Name": "cml-from-tag"}
			return s
		}, "cml-from-tag"},
		{"from the instance id", func(s worker.ImportSpec) worker.ImportSpec {
			s.Name, s.Tags = "", nil
			return s
		}, "worker-" + instanceID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			events, err := worker.New().Import(workerID, tt.spec(importSpec()))
			require.NoError(t, err)
			require.Len(t, events, 1)
			assert.Equal(t, tt.want, events[0].(worker.Imported).Name)
		})
	}
}

// message returns the free-text message of an outcome event.
func message(t *testing.T, e domain.Event) string {
	t.Helper()
	switch e := e.(type) {
	case worker.ProvisioningFailed:
		return e.Message
	case worker.StartFailed:
		return e.Message
	case worker.StopFailed:
		return e.Message
	case worker.TerminationFailed:
		return e.Message
	case worker.LicenseRegistrationFailed:
		return e.Message
	case worker.LicenseDeregistrationFailed:
		return e.Message
	case worker.LicenseDeregistrationCompleted:
		return e.Message
	case worker.LabActionFailed:
		return e.Message
	}
	t.Fatalf("%T has no message", e)
	return ""
}

func TestFailureMessagesAreTruncated(t *testing.T) {
	t.Parallel()
	const limit = worker.MaxMessageLength
	deregistering := append(history(gRunning, false), worker.LicenseDeregistrationRequested{})
	recorders := []struct {
		name   string
		given  []domain.Event
		record func(w *worker.Worker, msg string) ([]domain.Event, error)
	}{
		{"provisioning failed", history(gProvisioning, false), func(w *worker.Worker, m string) ([]domain.Event, error) {
			return w.RecordProvisioningFailed("Code", m)
		}},
		{"start failed", history(gStarting, false), func(w *worker.Worker, m string) ([]domain.Event, error) {
			return w.RecordStartFailed("Code", m)
		}},
		{"stop failed", history(gStopping, false), func(w *worker.Worker, m string) ([]domain.Event, error) {
			return w.RecordStopFailed("Code", m)
		}},
		{"termination failed", history(gTerminating, false), func(w *worker.Worker, m string) ([]domain.Event, error) {
			return w.RecordTerminationFailed("Code", m)
		}},
		{"licence registration failed", history(gRegistering, false), func(w *worker.Worker, m string) ([]domain.Event, error) {
			return w.RecordLicenseRegistrationFailed("Code", m)
		}},
		{"licence deregistration failed", deregistering, func(w *worker.Worker, m string) ([]domain.Event, error) {
			return w.RecordLicenseDeregistrationFailed("Code", m)
		}},
		{"licence deregistration completed", deregistering, func(w *worker.Worker, m string) ([]domain.Event, error) {
			return w.RecordLicenseDeregistrationCompleted(m)
		}},
		{"lab action failed", history(gLabPending, false), func(w *worker.Worker, m string) ([]domain.Event, error) {
			return w.RecordLabActionFailed("req-1", "Code", m)
		}},
	}
	messages := []struct {
		name    string
		msg     string
		wantLen int
	}{
		{"short", "InsufficientInstanceCapacity in eu-west-1a", len("InsufficientInstanceCapacity in eu-west-1a")},
		{"exactly the limit", strings.Repeat("a", limit), limit},
		{"one byte over", strings.Repeat("a", limit+1), limit},
		{"2-byte character across the limit", strings.Repeat("a", limit-1) + "é", limit - 1},
		{"3-byte character across the limit", strings.Repeat("a", limit-2) + "€", limit - 2},
		{"4-byte character across the limit", strings.Repeat("a", limit-3) + "😀", limit - 3},
		{"4-byte character ending at the limit", strings.Repeat("a", limit-4) + "😀" + "tail", limit},
		{"multi-byte text", strings.Repeat("日本語", limit), limit - limit%3},
	}
	for _, r := range recorders {
		for _, m := range messages {
			t.Run(r.name+"/"+m.name, func(t *testing.T) {
				t.Parallel()
				w := fold(t, r.given...)
				events, err := r.record(w, m.msg)
				require.NoError(t, err)
				require.Len(t, events, 1)
				got := message(t, events[0])
				assert.Len(t, got, m.wantLen)
				assert.True(t, utf8.ValidString(got), "a character was split")
				assert.True(t, strings.HasPrefix(m.msg, got), "the message is a prefix of the original")
			})
		}
	}
}

func TestOutcomeCodeRequired(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		given string
		call  func(w *worker.Worker) ([]domain.Event, error)
	}{
		{"provisioning failed", gProvisioning, func(w *worker.Worker) ([]domain.Event, error) { return w.RecordProvisioningFailed("", "x") }},
		{"start failed", gStarting, func(w *worker.Worker) ([]domain.Event, error) { return w.RecordStartFailed("", "x") }},
		{"stop failed", gStopping, func(w *worker.Worker) ([]domain.Event, error) { return w.RecordStopFailed("", "x") }},
		{"termination failed", gTerminating, func(w *worker.Worker) ([]domain.Event, error) { return w.RecordTerminationFailed("", "x") }},
		{"licence registration failed", gRegistering, func(w *worker.Worker) ([]domain.Event, error) {
			return w.RecordLicenseRegistrationFailed("", "x")
		}},
		{"licence deregistration failed", gRunning, func(w *worker.Worker) ([]domain.Event, error) {
			return w.RecordLicenseDeregistrationFailed("", "x")
		}},
		{"lab action failed", gLabPending, func(w *worker.Worker) ([]domain.Event, error) { return w.RecordLabActionFailed("req-1", "", "x") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			events, err := tt.call(fold(t, history(tt.given, false)...))
			assert.Empty(t, events)
			assert.Equal(t, []string{"code"}, problemFields(t, err))
		})
	}
}

func TestInvalidCommandInputs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		given  string
		call   func(w *worker.Worker) ([]domain.Event, error)
		fields []string
	}{
		{"malformed launched instance id", gProvisioning, func(w *worker.Worker) ([]domain.Event, error) {
			return w.RecordInstanceLaunched("i-xyz")
		}, []string{"instance_id"}},
		{"unknown service status", gRunning, func(w *worker.Worker) ([]domain.Event, error) {
			return w.ObserveService("booting", "2.9.0", false)
		}, []string{"status"}},
		{"unknown licence status", gRunning, func(w *worker.Worker) ([]domain.Event, error) {
			return w.ObserveLicense("pending")
		}, []string{"status"}},
		{"unknown completed licence status", gRegistering, func(w *worker.Worker) ([]domain.Event, error) {
			return w.RecordLicenseRegistrationCompleted("pending", "", "")
		}, []string{"status"}},
		{"licence registration without token", gRunning, func(w *worker.Worker) ([]domain.Event, error) {
			return w.RequestLicenseRegistration(false, "", "")
		}, []string{"token_fingerprint", "token"}},
		{"activity without time", gRunning, func(w *worker.Worker) ([]domain.Event, error) {
			return w.ObserveActivity(time.Time{}, "ui")
		}, []string{"last_activity_at"}},
		{"lab import without YAML", gRunning, func(w *worker.Worker) ([]domain.Event, error) {
			return w.RequestLabAction(worker.LabActionRequest{RequestID: "r", Action: worker.LabImport, YAML: "  \n"})
		}, []string{"yaml"}},
		{"lab import with a lab id", gRunning, func(w *worker.Worker) ([]domain.Event, error) {
			return w.RequestLabAction(worker.LabActionRequest{RequestID: "r", Action: worker.LabImport, LabID: "lab1", YAML: "lab: {}"})
		}, []string{"lab_id"}},
		{"lab import too large", gRunning, func(w *worker.Worker) ([]domain.Event, error) {
			return w.RequestLabAction(worker.LabActionRequest{RequestID: "r", Action: worker.LabImport, YAML: strings.Repeat("x", worker.MaxLabYAMLBytes+1)})
		}, []string{"yaml"}},
		{"lab import title too long", gRunning, func(w *worker.Worker) ([]domain.Event, error) {
			return w.RequestLabAction(worker.LabActionRequest{RequestID: "r", Action: worker.LabImport, YAML: "lab: {}", Title: strings.Repeat("t", 256)})
		}, []string{"title"}},
		{"lab start without a lab id", gRunning, func(w *worker.Worker) ([]domain.Event, error) {
			return w.RequestLabAction(worker.LabActionRequest{RequestID: "r", Action: worker.LabStart})
		}, []string{"lab_id"}},
		{"lab start with YAML", gRunning, func(w *worker.Worker) ([]domain.Event, error) {
			return w.RequestLabAction(worker.LabActionRequest{RequestID: "r", Action: worker.LabWipe, LabID: "lab1", YAML: "x"})
		}, []string{"yaml"}},
		{"lab action with every problem", gRunning, func(w *worker.Worker) ([]domain.Event, error) {
			return w.RequestLabAction(worker.LabActionRequest{Action: "reboot", LabID: "bad id!", YAML: "x"})
		}, []string{"request_id", "action", "lab_id", "yaml"}},
		{"lab action validated before the status", gStopped, func(w *worker.Worker) ([]domain.Event, error) {
			return w.RequestLabAction(worker.LabActionRequest{RequestID: "r", Action: worker.LabStop})
		}, []string{"lab_id"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			events, err := tt.call(fold(t, history(tt.given, false)...))
			assert.Empty(t, events)
			assert.Equal(t, tt.fields, problemFields(t, err))
		})
	}
}

func TestLabImportRequest(t *testing.T) {
	t.Parallel()
	w := fold(t, history(gRunning, false)...)
	events, err := w.RequestLabAction(worker.LabActionRequest{
		RequestID: "req-3", Action: worker.LabImport, Title: "OSPF basics", YAML: "lab:\n  title: OSPF basics\n",
	})
	require.NoError(t, err)
	assert.Equal(t, []domain.Event{worker.LabActionRequested{
		RequestID: "req-3", Action: worker.LabImport, Title: "OSPF basics", YAML: "lab:\n  title: OSPF basics\n",
	}}, events)
}

func TestParse(t *testing.T) {
	t.Parallel()
	t.Run("status", func(t *testing.T) {
		t.Parallel()
		for _, s := range worker.Statuses {
			got, err := worker.ParseStatus(string(s))
			require.NoError(t, err)
			assert.Equal(t, s, got)
		}
		assert.Len(t, worker.Statuses, 9)
		_, err := worker.ParseStatus("hibernated")
		assert.Error(t, err)
	})
	t.Run("EC2 state", func(t *testing.T) {
		t.Parallel()
		for _, s := range []worker.EC2State{worker.EC2Pending, worker.EC2Running, worker.EC2Stopping, worker.EC2Stopped, worker.EC2ShuttingDown, worker.EC2Terminated, worker.EC2NotFound} {
			got, err := worker.ParseEC2State(string(s))
			require.NoError(t, err)
			assert.Equal(t, s, got)
		}
		_, err := worker.ParseEC2State("")
		assert.Error(t, err)
	})
	t.Run("service status", func(t *testing.T) {
		t.Parallel()
		for _, s := range []worker.ServiceStatus{worker.ServiceUnavailable, worker.ServiceAvailable, worker.ServiceDegraded} {
			got, err := worker.ParseServiceStatus(string(s))
			require.NoError(t, err)
			assert.Equal(t, s, got)
		}
		_, err := worker.ParseServiceStatus("Available")
		assert.Error(t, err)
	})
	t.Run("licence status", func(t *testing.T) {
		t.Parallel()
		for _, s := range []worker.LicenseStatus{worker.LicenseUnregistered, worker.LicenseRegistered, worker.LicenseEvaluation, worker.LicenseExpired, worker.LicenseInvalid} {
			got, err := worker.ParseLicenseStatus(string(s))
			require.NoError(t, err)
			assert.Equal(t, s, got)
		}
		_, err := worker.ParseLicenseStatus("")
		assert.Error(t, err)
	})
	t.Run("lab action", func(t *testing.T) {
		t.Parallel()
		for _, a := range []worker.LabAction{worker.LabStart, worker.LabStop, worker.LabWipe, worker.LabDelete, worker.LabImport} {
			got, err := worker.ParseLabAction(string(a))
			require.NoError(t, err)
			assert.Equal(t, a, got)
		}
		_, err := worker.ParseLabAction("export")
		assert.Error(t, err)
	})
	t.Run("terminal", func(t *testing.T) {
		t.Parallel()
		for _, s := range worker.Statuses {
			assert.Equal(t, s == worker.StatusTerminated || s == worker.StatusRemoved, s.Terminal(), s)
		}
	})
}

func TestIdentifierFormats(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		valid func(string) bool
		ok    []string
		bad   []string
	}{
		{"region", worker.ValidRegion,
			[]string{"eu-west-1", "us-east-2", "ap-southeast-10", "us-gov-west-1", "us-isob-east-1"},
			[]string{"", "Europe", "eu-west", "eu-west-123", "EU-WEST-1", "eu_west_1"}},
		{"instance type", worker.ValidInstanceType,
			[]string{"c5.2xlarge", "m5zn.metal", "t3.micro", "u-6tb1.metal"},
			[]string{"", "huge", "c5.", ".large", "C5.large", strings.Repeat("a", 60) + ".large"}},
		{"AMI id", worker.ValidAMIID,
			[]string{"ami-0123abcd", amiID},
			[]string{"", "ami-xyz", "ami-0123abc", "ami-0A1B2C3D", "ami-0123456789abcdef"}},
		{"instance id", worker.ValidInstanceID,
			[]string{"i-0123abcd", instanceID},
			[]string{"", "i-xyz", "instance-1", "i-0123456789abcdef"}},
		{"subnet id", worker.ValidSubnetID,
			[]string{"subnet-0123abcd", subnetID},
			[]string{"", "subnet-1", "net-0123abcd"}},
		{"security group id", worker.ValidSecurityGroupID,
			[]string{"sg-0123abcd", securityGroupID},
			[]string{"", "default", "sg-xyz"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, s := range tt.ok {
				assert.True(t, tt.valid(s), "%q should be valid", s)
			}
			for _, s := range tt.bad {
				assert.False(t, tt.valid(s), "%q should be invalid", s)
			}
		})
	}
}
