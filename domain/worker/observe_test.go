package worker_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// running is the observation of the running given, unchanged.
func runningObservation() worker.Observation {
	return worker.Observation{
		InstanceID: instanceID, State: worker.EC2Running, PublicIP: publicIP, PrivateIP: privateIP,
		InstanceType: instanceType, SystemStatus: "ok", InstanceStatus: "ok",
	}
}

func TestObserveInstanceScenarios(t *testing.T) {
	t.Parallel()
	withEndpoint := append(history(gRunning, false), worker.EndpointChanged{Endpoint: "https://" + publicIP})
	tagged := append(history(gRunning, false), worker.TagsChanged{Tags: map[string]string{
		"team": "netops", worker.TagManagedBy: worker.TagManagedByValue, worker.TagWorkerID: workerID,
	}})
	terminatingNoInstance := append(history(gFailed, false), worker.TerminationRequested{})

	tests := []struct {
		name   string
		given  []domain.Event
		when   func(o worker.Observation) worker.Observation
		then   []domain.Event
		err    error // errors.Is target when the observation is refused
		thenSt func(t *testing.T, s worker.State)
	}{
		{
			name:  "stopped without intent is an external stop",
			given: history(gRunning, false),
			when: func(o worker.Observation) worker.Observation {
				o.State, o.PublicIP, o.SystemStatus, o.InstanceStatus = worker.EC2Stopped, "", "", ""
				return o
			},
			then: []domain.Event{worker.InstanceStateObserved{
				EC2State: worker.EC2Stopped, PrivateIP: privateIP, InstanceType: instanceType, External: true,
			}},
			thenSt: func(t *testing.T, s worker.State) {
				assert.Equal(t, worker.StatusStopped, s.Status)
				assert.Equal(t, 1, s.ExternalStopCount)
				assert.Equal(t, 0, s.ManualStopCount)
				assert.Equal(t, worker.StopExternal, s.StopReason)
			},
		},
		{
			name:  "stopped after a requested stop is not external",
			given: history(gStopping, false),
			when: func(o worker.Observation) worker.Observation {
				o.State, o.PublicIP, o.SystemStatus, o.InstanceStatus = worker.EC2Stopped, "", "", ""
				return o
			},
			then: []domain.Event{worker.InstanceStateObserved{
				EC2State: worker.EC2Stopped, PrivateIP: privateIP, InstanceType: instanceType, External: false,
			}},
			thenSt: func(t *testing.T, s worker.State) {
				assert.Equal(t, worker.StatusStopped, s.Status)
				assert.Equal(t, worker.IntentNone, s.Intent)
				assert.Equal(t, 0, s.ExternalStopCount)
				assert.Equal(t, 1, s.ManualStopCount)
				assert.Equal(t, worker.StopManual, s.StopReason)
			},
		},
		{
			name:  "stopping observed after a requested stop keeps the intent",
			given: history(gStopping, false),
			when: func(o worker.Observation) worker.Observation {
				o.State = worker.EC2Stopping
				return o
			},
			then: []domain.Event{worker.InstanceStateObserved{
				EC2State: worker.EC2Stopping, PublicIP: publicIP, PrivateIP: privateIP, InstanceType: instanceType,
				SystemStatus: "ok", InstanceStatus: "ok", External: false,
			}},
			thenSt: func(t *testing.T, s worker.State) {
				assert.Equal(t, worker.StatusStopping, s.Status)
				assert.Equal(t, worker.IntentStop, s.Intent)
			},
		},
		{
			name:  "not-found on terminating without an instance ends the worker",
			given: terminatingNoInstance,
			when: func(worker.Observation) worker.Observation {
				return worker.Observation{State: worker.EC2NotFound}
			},
			then: []domain.Event{worker.InstanceStateObserved{
				EC2State: worker.EC2NotFound, InstanceType: instanceType, External: false,
			}},
			thenSt: func(t *testing.T, s worker.State) {
				assert.Equal(t, worker.StatusTerminated, s.Status)
				assert.Equal(t, worker.IntentNone, s.Intent)
				assert.False(t, s.TerminatedAt.IsZero(), "TerminatedAt")
			},
		},
		{
			name:  "not-found on terminating with an instance ends the worker",
			given: history(gTerminating, false),
			when: func(worker.Observation) worker.Observation {
				return worker.Observation{InstanceID: instanceID, State: worker.EC2NotFound}
			},
			then: []domain.Event{worker.InstanceStateObserved{
				EC2State: worker.EC2NotFound, InstanceType: instanceType, External: false,
			}},
			thenSt: func(t *testing.T, s worker.State) {
				assert.Equal(t, worker.StatusTerminated, s.Status)
				assert.False(t, s.TerminatedAt.IsZero(), "TerminatedAt")
			},
		},
		{
			name:  "shutting-down without intent is an external termination",
			given: history(gRunning, false),
			when: func(o worker.Observation) worker.Observation {
				o.State = worker.EC2ShuttingDown
				return o
			},
			then: []domain.Event{worker.InstanceStateObserved{
				EC2State: worker.EC2ShuttingDown, PublicIP: publicIP, PrivateIP: privateIP, InstanceType: instanceType,
				SystemStatus: "ok", InstanceStatus: "ok", External: true,
			}},
			thenSt: func(t *testing.T, s worker.State) { assert.Equal(t, worker.StatusTerminating, s.Status) },
		},
		{
			name:  "IP change with a new endpoint",
			given: withEndpoint,
			when: func(o worker.Observation) worker.Observation {
				o.PublicIP, o.Endpoint = "203.0.113.77", "https://203.0.113.77"
				return o
			},
			then: []domain.Event{
				worker.InstanceStateObserved{
					EC2State: worker.EC2Running, PublicIP: "203.0.113.77", PrivateIP: privateIP, InstanceType: instanceType,
					SystemStatus: "ok", InstanceStatus: "ok", External: false,
				},
				worker.EndpointChanged{Endpoint: "https://203.0.113.77"},
			},
			thenSt: func(t *testing.T, s worker.State) {
				assert.Equal(t, worker.StatusRunning, s.Status)
				assert.Equal(t, "203.0.113.77", s.PublicIP)
				assert.Equal(t, "https://203.0.113.77", s.Endpoint)
				assert.Equal(t, 1, s.StartCount, "an IP change is not a start")
			},
		},
		{
			name:  "IP change with the same endpoint (DNS name)",
			given: append(history(gRunning, false), worker.EndpointChanged{Endpoint: "https://cml-eu-1.example.net"}),
			when: func(o worker.Observation) worker.Observation {
				o.PublicIP, o.Endpoint = "203.0.113.77", "https://cml-eu-1.example.net"
				return o
			},
			then: []domain.Event{worker.InstanceStateObserved{
				EC2State: worker.EC2Running, PublicIP: "203.0.113.77", PrivateIP: privateIP, InstanceType: instanceType,
				SystemStatus: "ok", InstanceStatus: "ok", External: false,
			}},
		},
		{
			name:  "endpoint appears without any EC2 change",
			given: history(gRunning, false),
			when: func(o worker.Observation) worker.Observation {
				o.Endpoint = "https://" + publicIP
				return o
			},
			then: []domain.Event{worker.EndpointChanged{Endpoint: "https://" + publicIP}},
		},
		{
			name:  "steady repeated observation records nothing",
			given: withEndpoint,
			when: func(o worker.Observation) worker.Observation {
				o.Endpoint = "https://" + publicIP
				return o
			},
			then: nil,
		},
		{
			name:  "steady observation with unchanged tags records nothing",
			given: tagged,
			when: func(o worker.Observation) worker.Observation {
				o.Tags = map[string]string{
					"team": "netops", worker.TagManagedBy: worker.TagManagedByValue, worker.TagWorkerID: workerID,
				}
				return o
			},
			then: nil,
		},
		{
			name:  "steady observation without instance id records nothing",
			given: history(gRunning, false),
			when: func(o worker.Observation) worker.Observation {
				o.InstanceID = ""
				return o
			},
			then: nil,
		},
		{
			name:  "tags changed on the instance",
			given: tagged,
			when: func(o worker.Observation) worker.Observation {
				o.Tags = map[string]string{
					"team": "security", worker.TagManagedBy: worker.TagManagedByValue, worker.TagWorkerID: workerID,
				}
				return o
			},
			then: []domain.Event{worker.TagsChanged{External: true, Tags: map[string]string{
				"team": "security", worker.TagManagedBy: worker.TagManagedByValue, worker.TagWorkerID: workerID,
			}}},
			thenSt: func(t *testing.T, s worker.State) { assert.Equal(t, "security", s.Tags["team"]) },
		},
		{
			name:  "a different instance id is refused",
			given: history(gRunning, false),
			when: func(o worker.Observation) worker.Observation {
				o.InstanceID = otherInstanceID
				return o
			},
			err: domain.ErrIllegalTransition,
		},
		{
			name:  "pending observed on a requested start",
			given: history(gStarting, false),
			when: func(o worker.Observation) worker.Observation {
				o.State, o.PublicIP, o.SystemStatus, o.InstanceStatus = worker.EC2Pending, "", "", ""
				return o
			},
			then: []domain.Event{worker.InstanceStateObserved{
				EC2State: worker.EC2Pending, PrivateIP: privateIP, InstanceType: instanceType, External: false,
			}},
			thenSt: func(t *testing.T, s worker.State) {
				assert.Equal(t, worker.StatusPending, s.Status)
				assert.Equal(t, worker.IntentStart, s.Intent)
			},
		},
		{
			name:  "stopped observed on a requested start not done yet",
			given: history(gStarting, false),
			when: func(o worker.Observation) worker.Observation {
				o.State, o.PublicIP, o.SystemStatus, o.InstanceStatus = worker.EC2Stopped, "", "", ""
				return o
			},
			then: nil,
		},
		{
			name:  "nothing launched yet: nothing to observe",
			given: history(gProvisioning, false),
			when: func(worker.Observation) worker.Observation {
				return worker.Observation{State: worker.EC2NotFound}
			},
			then: nil,
		},
		{
			name:  "unknown EC2 state is invalid",
			given: history(gRunning, false),
			when: func(o worker.Observation) worker.Observation {
				o.State = "hibernating"
				return o
			},
			err: domain.ErrInvalid,
		},
		{
			name:  "malformed instance id is invalid",
			given: history(gRunning, false),
			when: func(o worker.Observation) worker.Observation {
				o.InstanceID = "i-xyz"
				return o
			},
			err: domain.ErrInvalid,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := fold(t, tt.given...)
			obs := tt.when(runningObservation())

			events, err := w.ObserveInstance(obs)

			if tt.err != nil {
				require.ErrorIs(t, err, tt.err)
				assert.Empty(t, types(events))
				return
			}
			require.NoError(t, err)
			assert.Equal(t, types(tt.then), types(events))
			assert.Equal(t, tt.then, events)
			apply(t, w, later, events...)
			if tt.thenSt != nil {
				tt.thenSt(t, w.State())
			}
			// The next poll seeing the same thing records nothing.
			again, err := w.ObserveInstance(obs)
			require.NoError(t, err)
			assert.Empty(t, types(again), "zero events per steady poll")
		})
	}
}

// TestSteadyFleetPolls: many polls of a steady worker record nothing.
func TestSteadyFleetPolls(t *testing.T) {
	t.Parallel()
	for _, name := range []string{gPending, gStarting, gRunning, gStopping, gStopped, gTerminating, gRegistering, gLabPending} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			g := newGiven(t, name, false)
			w := g.worker(t)
			obs := worker.Observation{
				InstanceID: instanceID, State: g.state.EC2State, PublicIP: g.state.PublicIP,
				PrivateIP: g.state.PrivateIP, SystemStatus: g.state.SystemStatus, InstanceStatus: g.state.InstanceStatus,
			}
			if obs.State == "" {
				obs.State = worker.EC2Pending
				events, err := w.ObserveInstance(obs)
				require.NoError(t, err)
				apply(t, w, later, events...)
			}
			for i := range 5 {
				events, err := w.ObserveInstance(obs)
				require.NoError(t, err)
				require.Empty(t, types(events), "poll %d", i)
			}
		})
	}
}

// Reserved tags: echoing them back is fine, changing or dropping them is not
// possible.
func TestReplaceTagsKeepsReservedTags(t *testing.T) {
	t.Parallel()
	reserved := map[string]string{worker.TagManagedBy: worker.TagManagedByValue, worker.TagWorkerID: workerID}
	given := append(history(gRunning, false), worker.TagsChanged{Tags: map[string]string{
		"team": "netops", worker.TagManagedBy: worker.TagManagedByValue, worker.TagWorkerID: workerID,
	}, External: true})

	tests := []struct {
		name string
		when map[string]string
		then []domain.Event
		err  error
	}{
		{
			name: "user tags only: reserved tags are kept",
			when: map[string]string{"team": "a"},
			then: []domain.Event{worker.TagsChanged{Tags: map[string]string{
				"team": "a", worker.TagManagedBy: worker.TagManagedByValue, worker.TagWorkerID: workerID,
			}}},
		},
		{
			name: "reserved tags echoed back unchanged",
			when: map[string]string{"team": "a", worker.TagManagedBy: worker.TagManagedByValue, worker.TagWorkerID: workerID},
			then: []domain.Event{worker.TagsChanged{Tags: map[string]string{
				"team": "a", worker.TagManagedBy: worker.TagManagedByValue, worker.TagWorkerID: workerID,
			}}},
		},
		{
			name: "the same tags without the reserved ones change nothing",
			when: map[string]string{"team": "netops"},
		},
		{
			name: "removing every user tag",
			when: map[string]string{},
			then: []domain.Event{worker.TagsChanged{Tags: reserved}},
		},
		{
			name: "ManagedBy with another value",
			when: map[string]string{worker.TagManagedBy: "terraform"},
			err:  domain.ErrInvalid,
		},
		{
			name: "worker id tag with another value",
			when: map[string]string{worker.TagWorkerID: "someone-else"},
			err:  domain.ErrInvalid,
		},
		{
			name: "AWS prefix in any case",
			when: map[string]string{"AWS:cloudformation:stack-name": "x"},
			err:  domain.ErrInvalid,
		},
		{
			name: "empty key",
			when: map[string]string{"": "x"},
			err:  domain.ErrInvalid,
		},
		{
			name: "value too long",
			when: map[string]string{"team": string(make([]byte, worker.MaxTagValueLength+1))},
			err:  domain.ErrInvalid,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := fold(t, given...)
			events, err := w.ReplaceTags(tt.when)
			if tt.err != nil {
				require.ErrorIs(t, err, tt.err)
				assert.Empty(t, types(events))
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.then, events)
		})
	}
}

func TestReplaceTagsTooMany(t *testing.T) {
	t.Parallel()
	w := fold(t, history(gRunning, false)...)
	tags := map[string]string{}
	for i := range worker.MaxTags - 2 {
		tags[time.Duration(i).String()] = "v"
	}
	events, err := w.ReplaceTags(tags)
	require.NoError(t, err, "%d user tags leave room for the two reserved ones", len(tags))
	require.Len(t, events, 1)

	tags["one-too-many"] = "v"
	_, err = w.ReplaceTags(tags)
	assert.Equal(t, []string{"tags"}, problemFields(t, err))
}
