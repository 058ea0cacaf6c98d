package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/riverqueue/river"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// TagsArgs is an ec2_tags job: make the instance's tags equal the worker's
// (after worker.tags_changed requested here), always keeping the product's
// reserved tags, which the reconciliation finds instances by (an imported
// instance gets them this way).
type TagsArgs struct {
	Cause
}

// Kind implements river.JobArgs.
func (TagsArgs) Kind() string { return string(application.JobEC2Tags) }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (TagsArgs) InsertOpts() river.InsertOpts {
	return reactorInsertOpts(QueueCloud, lifecycleMaxAttempts)
}

type tagsWorker struct {
	river.WorkerDefaults[TagsArgs]
	rt *runtime
}

func (w *tagsWorker) NextRetry(job *river.Job[TagsArgs]) time.Time {
	return w.rt.nextRetry(job.Attempt)
}

func (w *tagsWorker) Timeout(*river.Job[TagsArgs]) time.Duration { return lifecycleTimeout }

// Work applies the worker's current tags (the latest request wins, so an
// older job that runs late applies the newest tags too). There is no outcome
// event: the reconciliation observes the instance's tags afterwards.
func (w *tagsWorker) Work(ctx context.Context, job *river.Job[TagsArgs]) error {
	rt, id := w.rt, job.Args.WorkerID
	ctx = causeContext(ctx, application.JobEC2Tags, job.Args.Cause)
	st, err := rt.deps.App.WorkerState(ctx, id)
	if err != nil {
		return fmt.Errorf("ec2_tags: load worker %s: %w", id, err)
	}
	if st.Status.Terminal() || st.Status == worker.StatusTerminating {
		return nil
	}
	if st.InstanceID == "" {
		if st.Status == worker.StatusProvisioning && !rt.pastDeadline(job.CreatedAt, rt.opts.LaunchDeadline) {
			return river.JobSnooze(rt.opts.PollInterval) // the launch is in flight; tag its instance
		}
		return nil
	}
	var inst application.Instance
	err = rt.call(ctx, func(ctx context.Context) (err error) {
		inst, err = rt.deps.Cloud.DescribeInstance(ctx, st.Region, st.InstanceID)
		return err
	})
	if err == nil {
		set, remove := tagChanges(inst.Tags, desiredTags(st))
		if len(set) == 0 && len(remove) == 0 {
			return nil
		}
		err = rt.call(ctx, func(ctx context.Context) error {
			return rt.deps.Cloud.SetTags(ctx, st.Region, st.InstanceID, set, remove)
		})
		if err == nil {
			rt.log.InfoContext(ctx, "jobs: instance tags applied", slog.String("worker_id", id),
				slog.Int("set", len(set)), slog.Int("removed", len(remove)))
			return nil
		}
	}
	if application.IsCloudNotFound(err) {
		return nil // the reconciliation records the instance's end
	}
	return rt.failure(ctx, job.JobRow, err, func(code, message string) error {
		// No event records a tagging failure: the worker keeps the requested
		// tags, the instance its own, and the next reconciliation shows the
		// instance's as an external change.
		rt.log.ErrorContext(ctx, "jobs: cannot tag the instance", slog.String("worker_id", id),
			slog.String("code", code), slog.String("error", message))
		return nil
	})
}

// desiredTags are the worker's tags plus the reserved ones, and the
// worker's name as the Name tag when the worker's tags have none (as at
// launch).
func desiredTags(st worker.State) map[string]string {
	out := maps.Clone(st.Tags)
	if out == nil {
		out = map[string]string{}
	}
	if _, ok := out[nameTag]; !ok && st.Name != "" {
		out[nameTag] = st.Name
	}
	out[worker.TagManagedBy] = worker.TagManagedByValue
	out[worker.TagWorkerID] = st.ID
	return out
}

// nameTag is the EC2 console's name of an instance.
const nameTag = "Name"

// tagChanges returns the tags to create or overwrite and the keys to delete
// to turn current into desired. AWS-reserved keys (aws:*) are never touched.
func tagChanges(current, desired map[string]string) (set map[string]string, remove []string) {
	set = map[string]string{}
	for k, v := range desired {
		if cur, ok := current[k]; !ok || cur != v {
			set[k] = v
		}
	}
	for k := range current {
		if _, keep := desired[k]; !keep && !strings.HasPrefix(strings.ToLower(k), "aws:") {
			remove = append(remove, k)
		}
	}
	slices.Sort(remove)
	return set, remove
}
