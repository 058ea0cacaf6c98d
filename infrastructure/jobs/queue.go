package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain"
)

var _ application.JobQueue = (*Service)(nil)

// manualThrottle is the uniqueness period of a run an admin asks for: a
// second request within it returns the first run.
const manualThrottle = 10 * time.Second

// recentJobs is how many jobs the overview lists.
const recentJobs = 50

// EnqueueRefresh implements application.JobQueue: a worker_refresh job,
// unique per worker within RefreshThrottle.
func (s *Service) EnqueueRefresh(ctx context.Context, workerID string) (application.EnqueuedJob, error) {
	res, err := s.client.Insert(ctx, RefreshArgs{WorkerID: workerID},
		&river.InsertOpts{UniqueOpts: river.UniqueOpts{ByArgs: true, ByPeriod: s.rt.opts.RefreshThrottle}})
	if err != nil {
		return application.EnqueuedJob{}, fmt.Errorf("insert worker_refresh: %w", err)
	}
	out := enqueued(res)
	out.WorkerID = workerID
	return out, nil
}

// RunNow implements application.JobQueue: one job per region for the
// per-region kinds, unique within manualThrottle.
func (s *Service) RunNow(ctx context.Context, kind application.JobKind) ([]application.EnqueuedJob, error) {
	if kind == application.JobAutoImport && !s.rt.opts.AutoImport.Enabled {
		var p domain.Problems
		p.Add("kind", "auto_import is off (AUTO_IMPORT_ENABLED)")
		return nil, p.Err()
	}
	var out []application.EnqueuedJob
	for _, p := range s.rt.periodics() {
		if p.kind != kind {
			continue
		}
		res, err := s.client.Insert(ctx, p.args(true),
			&river.InsertOpts{UniqueOpts: river.UniqueOpts{ByArgs: true, ByPeriod: manualThrottle}})
		if err != nil {
			return out, fmt.Errorf("insert %s: %w", kind, err)
		}
		e := enqueued(res)
		e.Region = p.region
		out = append(out, e)
	}
	return out, nil
}

func enqueued(res *rivertype.JobInsertResult) application.EnqueuedJob {
	return application.EnqueuedJob{
		JobID: res.Job.ID, Kind: application.JobKind(res.Job.Kind), Duplicate: res.UniqueSkippedAsDuplicate,
		State: string(res.Job.State), ScheduledAt: res.Job.ScheduledAt.UTC(),
	}
}

// Overview implements application.JobQueue: the periodic jobs with their
// current interval and latest run, the most recent jobs, and the number of
// jobs in each state.
func (s *Service) Overview(ctx context.Context) (application.JobsOverview, error) {
	out := application.JobsOverview{Counts: map[string]int{}}
	rows, err := s.pool.Query(ctx, `SELECT state::text, count(*) FROM river_job GROUP BY state`)
	if err != nil {
		return out, fmt.Errorf("count jobs: %w", err)
	}
	for rows.Next() {
		var state string
		var n int
		if err := rows.Scan(&state, &n); err != nil {
			rows.Close()
			return out, fmt.Errorf("count jobs: %w", err)
		}
		out.Counts[state] = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return out, fmt.Errorf("count jobs: %w", err)
	}
	recent, err := s.client.JobList(ctx, river.NewJobListParams().OrderBy(river.JobListOrderByID, river.SortOrderDesc).First(recentJobs))
	if err != nil {
		return out, fmt.Errorf("list recent jobs: %w", err)
	}
	for _, j := range recent.Jobs {
		out.Recent = append(out.Recent, jobInfo(j))
	}
	now := s.rt.now()
	for _, p := range s.rt.periodics() {
		interval := s.rt.currentInterval(p)
		info := application.PeriodicJobInfo{Kind: p.kind, Region: p.region, Enabled: true,
			IntervalSeconds: int64(interval / time.Second), NextRunAt: now.Truncate(interval).Add(interval).UTC()}
		last, err := s.lastRun(ctx, p)
		if err != nil {
			return out, err
		}
		info.LastRun = last
		out.Periodic = append(out.Periodic, info)
	}
	if !s.rt.opts.AutoImport.Enabled {
		out.Periodic = append(out.Periodic, application.PeriodicJobInfo{Kind: application.JobAutoImport, Region: s.rt.opts.AutoImport.Region})
	}
	return out, nil
}

// lastRun returns the newest job of a periodic kind (and region).
func (s *Service) lastRun(ctx context.Context, p periodic) (*application.JobInfo, error) {
	params := river.NewJobListParams().Kinds(string(p.kind)).OrderBy(river.JobListOrderByID, river.SortOrderDesc).First(1)
	if p.region != "" {
		params = params.Where("args->>'region' = @region", river.NamedArgs{"region": p.region})
	}
	res, err := s.client.JobList(ctx, params)
	if err != nil {
		return nil, fmt.Errorf("list %s jobs: %w", p.kind, err)
	}
	if len(res.Jobs) == 0 {
		return nil, nil
	}
	info := jobInfo(res.Jobs[0])
	return &info, nil
}

func jobInfo(j *rivertype.JobRow) application.JobInfo {
	info := application.JobInfo{
		ID: j.ID, Kind: application.JobKind(j.Kind), Queue: j.Queue, State: string(j.State),
		Attempt: j.Attempt, MaxAttempts: j.MaxAttempts, CreatedAt: j.CreatedAt.UTC(), ScheduledAt: j.ScheduledAt.UTC(),
	}
	if j.AttemptedAt != nil {
		info.AttemptedAt = j.AttemptedAt.UTC()
	}
	if j.FinalizedAt != nil {
		info.FinalizedAt = j.FinalizedAt.UTC()
	}
	var args struct {
		WorkerID string `json:"worker_id"`
		Region   string `json:"region"`
	}
	_ = json.Unmarshal(j.EncodedArgs, &args)
	info.WorkerID, info.Region = args.WorkerID, args.Region
	if n := len(j.Errors); n > 0 {
		info.LastError = j.Errors[n-1].Error
	}
	return info
}
