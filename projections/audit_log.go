package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/settings"
	"github.com/cmlcloud/cml-cloud-manager/domain/task"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// AuditLog builds audit_log: one row per lifecycle event of workers, settings
// and tasks (never the telemetry streams) with its actor, correlation,
// causation and a one-line summary.
type AuditLog struct {
	registry *domain.Registry
}

var _ = registerProjection(func(r *domain.Registry) Projection { return NewAuditLog(r) })

// NewAuditLog returns the audit_log projection.
func NewAuditLog(registry *domain.Registry) *AuditLog { return &AuditLog{registry: registry} }

// Name implements Projection.
func (*AuditLog) Name() string { return "audit_log" }

// Filter implements Projection.
func (*AuditLog) Filter() eventstore.Filter {
	return eventstore.Filter{StreamPrefixes: []string{worker.StreamPrefix, settings.StreamName, task.StreamPrefix}}
}

// Tables implements Projection.
func (*AuditLog) Tables() []string { return []string{"audit_log"} }

// Apply implements Projection: it inserts one row per event; an event already
// present (same event id) is left alone.
func (p *AuditLog) Apply(ctx context.Context, tx pgx.Tx, t Tables, batch []eventstore.RecordedEvent) ([]string, error) {
	var (
		eventIDs, streams, aggTypes, aggIDs, workerIDs, types       []string
		actorTypes, subjects, usernames, correlations, causes, cmds []string
		summaries, data                                             []string
		revs, commits, prepares                                     []int64
		occurred, recorded                                          []time.Time
	)
	for _, rec := range batch {
		aggType, aggID := splitStream(rec.Stream)
		if aggType == "" {
			continue
		}
		e, at, err := application.Decode(p.registry, rec)
		if err != nil {
			return nil, fmt.Errorf("audit_log: %w", err)
		}
		m, err := application.ParseMetadata(rec.Metadata)
		if err != nil {
			return nil, fmt.Errorf("audit_log: %s: %w", rec.ID, err)
		}
		payload := rec.Data
		if r, changed := redact(e); changed {
			if payload, err = json.Marshal(r); err != nil {
				return nil, fmt.Errorf("audit_log: encode %s: %w", rec.ID, err)
			}
		}
		wid := ""
		if aggType == "worker" {
			wid = aggID
		}
		eventIDs = append(eventIDs, rec.ID)
		streams = append(streams, rec.Stream)
		aggTypes = append(aggTypes, aggType)
		aggIDs = append(aggIDs, aggID)
		workerIDs = append(workerIDs, wid)
		types = append(types, rec.Type)
		actorTypes = append(actorTypes, m.Actor.Type)
		subjects = append(subjects, m.Actor.Subject)
		usernames = append(usernames, m.Actor.Username)
		correlations = append(correlations, m.CorrelationID)
		causes = append(causes, m.CausationID)
		cmds = append(cmds, m.Command)
		summaries = append(summaries, Summarize(e))
		data = append(data, string(payload))
		revs = append(revs, int64(rec.Revision))
		commits = append(commits, int64(rec.Position.Commit))
		prepares = append(prepares, int64(rec.Position.Prepare))
		occurred = append(occurred, at)
		recorded = append(recorded, rec.RecordedAt)
	}
	if len(eventIDs) == 0 {
		return nil, nil
	}
	q := `INSERT INTO ` + t.Ident("audit_log") + `
		(event_id, position_commit, position_prepare, stream, revision, aggregate_type, aggregate_id, worker_id,
		 event_type, occurred_at, recorded_at, actor_type, actor_subject, actor_username,
		 correlation_id, causation_id, command, summary, data)
		SELECT u.event_id, u.pc, u.pp, u.stream, u.revision, u.agg_type, u.agg_id, NULLIF(u.worker_id, '')::uuid,
		       u.event_type, u.occurred_at, u.recorded_at, u.actor_type, u.actor_subject, u.actor_username,
		       u.correlation_id, u.causation_id, u.command, u.summary, u.data
		FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::text[],
		            $9::text[], $10::timestamptz[], $11::timestamptz[], $12::text[], $13::text[], $14::text[],
		            $15::text[], $16::text[], $17::text[], $18::text[], $19::jsonb[])
		     AS u(event_id, pc, pp, stream, revision, agg_type, agg_id, worker_id, event_type, occurred_at, recorded_at,
		          actor_type, actor_subject, actor_username, correlation_id, causation_id, command, summary, data)
		ON CONFLICT (position_commit, position_prepare) DO NOTHING`
	if _, err := tx.Exec(ctx, q, eventIDs, commits, prepares, streams, revs, aggTypes, aggIDs, workerIDs,
		types, occurred, recorded, actorTypes, subjects, usernames, correlations, causes, cmds, summaries, data); err != nil {
		return nil, fmt.Errorf("audit_log: insert: %w", err)
	}
	return slices.Compact(slices.Sorted(slices.Values(aggIDs))), nil
}

// splitStream returns the aggregate type and id of a lifecycle stream, or ""
// for streams the audit log does not cover.
func splitStream(stream string) (string, string) {
	switch {
	case strings.HasPrefix(stream, worker.StreamPrefix):
		id := strings.TrimPrefix(stream, worker.StreamPrefix)
		if !application.ValidID(id) {
			return "", ""
		}
		return "worker", id
	case stream == settings.StreamName:
		return "settings", "global"
	case strings.HasPrefix(stream, task.StreamPrefix):
		return "task", strings.TrimPrefix(stream, task.StreamPrefix)
	}
	return "", ""
}

// redact removes what the audit log must not copy: the sealed licence token
// and the body of an imported lab (its size is kept). It reports whether it
// changed anything; other events are stored as they are in the log.
func redact(e domain.Event) (any, bool) {
	switch e := e.(type) {
	case worker.LicenseRegistrationRequested:
		e.SealedToken = ""
		return e, true
	case worker.LabActionRequested:
		if e.YAML != "" {
			return struct {
				worker.LabActionRequested
				YAMLBytes int `json:"yaml_bytes"`
			}{LabActionRequested: worker.LabActionRequested{RequestID: e.RequestID, Action: e.Action, LabID: e.LabID, Title: e.Title}, YAMLBytes: len(e.YAML)}, true
		}
	}
	return e, false
}

// Summarize describes an event in one line for people reading the audit log.
func Summarize(e domain.Event) string {
	switch e := e.(type) {
	case worker.Created:
		return fmt.Sprintf("Worker %q created in %s (%s, %s); launch requested", e.Name, e.Region, e.InstanceType, e.AMIID)
	case worker.Imported:
		return fmt.Sprintf("Instance %s imported as worker %q in %s (%s)", e.InstanceID, e.Name, e.Region, e.EC2State)
	case worker.InstanceLaunched:
		return fmt.Sprintf("Instance %s launched (attempt %d)", e.InstanceID, e.Attempt)
	case worker.ProvisioningFailed:
		return fmt.Sprintf("Launch failed (attempt %d): %s %s", e.Attempt, e.Code, e.Message)
	case worker.ProvisioningRetried:
		return fmt.Sprintf("Launch retried (attempt %d)", e.Attempt)
	case worker.StartRequested:
		return "Start requested"
	case worker.StartFailed:
		return "Start failed: " + e.Code + " " + e.Message
	case worker.StopRequested:
		if e.Reason == worker.StopIdleTimeout {
			return "Stop requested automatically: idle timeout"
		}
		return "Stop requested"
	case worker.StopFailed:
		return "Stop failed: " + e.Code + " " + e.Message
	case worker.TerminationRequested:
		return "Termination requested"
	case worker.TerminationFailed:
		return "Termination failed: " + e.Code + " " + e.Message
	case worker.Removed:
		return "Worker no longer managed (instance left untouched)"
	case worker.InstanceStateObserved:
		s := "EC2 reports " + string(e.EC2State)
		if e.PublicIP != "" {
			s += ", public IP " + e.PublicIP
		}
		if e.External {
			s += " (changed outside CML Cloud Manager)"
		}
		return s
	case worker.EndpointChanged:
		if e.Endpoint == "" {
			return "CML endpoint cleared"
		}
		return "CML endpoint is now " + e.Endpoint
	case worker.TagsChanged:
		keys := slices.Sorted(maps.Keys(e.Tags))
		s := "Tags set: " + strings.Join(keys, ", ")
		if e.External {
			s += " (changed outside CML Cloud Manager)"
		}
		return s
	case worker.DetailedMonitoringChanged:
		return "Detailed monitoring " + onOff(e.Enabled)
	case worker.ServiceStatusChanged:
		s := "CML service " + string(e.Status)
		if e.Version != "" {
			s += " (version " + e.Version + ")"
		}
		return s
	case worker.LicenseStatusChanged:
		return "Licence status " + string(e.Status)
	case worker.LicenseRegistrationRequested:
		s := "Licence registration requested with token " + e.TokenFingerprint
		if e.Reregister {
			s += " (re-registration)"
		}
		return s
	case worker.LicenseRegistrationCompleted:
		return "Licence registered (" + string(e.Status) + ")"
	case worker.LicenseRegistrationFailed:
		return "Licence registration failed: " + e.Code + " " + e.Message
	case worker.LicenseDeregistrationRequested:
		return "Licence deregistration requested"
	case worker.LicenseDeregistrationCompleted:
		return strings.TrimSpace("Licence deregistered " + e.Message)
	case worker.LicenseDeregistrationFailed:
		return "Licence deregistration failed: " + e.Code + " " + e.Message
	case worker.IdleDetectionEnabled:
		if e.TimeoutSeconds > 0 {
			return fmt.Sprintf("Idle detection enabled (timeout %s)", time.Duration(e.TimeoutSeconds)*time.Second)
		}
		return "Idle detection enabled (global timeout)"
	case worker.IdleDetectionDisabled:
		return "Idle detection disabled"
	case worker.ActivityObserved:
		return "Activity observed at " + e.LastActivityAt.UTC().Format(time.RFC3339)
	case worker.IdleDetected:
		return fmt.Sprintf("Idle for %s (timeout %s)", time.Duration(e.IdleSeconds)*time.Second, time.Duration(e.TimeoutSeconds)*time.Second)
	case worker.LabActionRequested:
		if e.Action == worker.LabImport {
			return fmt.Sprintf("Lab import requested (%q)", e.Title)
		}
		return fmt.Sprintf("Lab %s requested on %s", e.Action, e.LabID)
	case worker.LabActionCompleted:
		return "Lab action completed " + e.LabID
	case worker.LabActionFailed:
		return "Lab action failed: " + e.Code + " " + e.Message
	case settings.Changed:
		parts := []string{}
		for _, k := range e.Set.SetKeys() {
			parts = append(parts, string(k))
		}
		s := "Settings saved: " + strings.Join(parts, ", ")
		if len(e.Cleared) > 0 {
			cleared := make([]string, len(e.Cleared))
			for i, k := range e.Cleared {
				cleared[i] = string(k)
			}
			s += "; back to environment: " + strings.Join(cleared, ", ")
		}
		return s
	case task.Created:
		return fmt.Sprintf("Task %q created", e.Title)
	case task.Updated:
		return "Task updated"
	case task.Deleted:
		return "Task deleted"
	}
	return e.EventType()
}

func onOff(b bool) string {
	if b {
		return "enabled"
	}
	return "disabled"
}
