package application

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// claimGrace is how long a claim holds while its worker does not exist yet:
// the import that claimed may still be appending it. A claim older than
// this whose worker never appeared was left by a crash and no longer holds.
const claimGrace = time.Minute

// claimAttempts bounds the retries of a claim that loses a race; a loser
// normally finds the winner's claim on its second read.
const claimAttempts = 5

// claimInstance records that worker workerID takes the instance over, unless
// a live worker holds it already (then *AlreadyManagedError). The claim
// stream is appended to with the revision just read, so two imports of one
// instance racing each other cannot both claim it, whatever the lag of the
// read models. A claim whose worker never came to exist (a crash between
// the claim and the import), or that is terminated or removed, no longer
// holds.
func (a *App) claimInstance(ctx context.Context, p rbac.Principal, region, instanceID, workerID string) error {
	stream := worker.InstanceClaimStream(region, instanceID)
	var lastErr error
	for range claimAttempts {
		holder, claimedAt, revision, err := a.lastClaim(ctx, stream)
		if err != nil {
			return err
		}
		if holder != "" && holder != workerID {
			w, err := a.workers.Load(ctx, holder)
			if err != nil {
				return fmt.Errorf("load the worker claiming %s: %w", instanceID, err)
			}
			pending := !w.Exists() && a.opts.Clock.Now().Sub(claimedAt) < claimGrace
			if pending || (w.Exists() && !w.State().Status.Terminal()) {
				return &AlreadyManagedError{InstanceID: instanceID, WorkerID: holder}
			}
		}
		expected := eventstore.NoStream
		if revision >= 0 {
			expected = eventstore.Exact(uint64(revision))
		}
		data, err := a.encodeOne(ctx, p, "worker.import", worker.InstanceClaimed{Region: region, InstanceID: instanceID, WorkerID: workerID})
		if err != nil {
			return err
		}
		_, err = a.opts.Store.Append(ctx, stream, expected, data)
		if errors.Is(err, eventstore.ErrWrongExpectedVersion) {
			lastErr = err
			continue
		}
		if err != nil {
			return fmt.Errorf("claim instance %s: %w", instanceID, err)
		}
		return nil
	}
	return &ConflictError{Stream: stream, Attempts: claimAttempts, Err: lastErr}
}

// lastClaim returns the worker and the time of the newest claim of a claim
// stream, and the stream's revision (-1 and "" for a stream without claims).
func (a *App) lastClaim(ctx context.Context, stream string) (workerID string, at time.Time, revision int64, err error) {
	revision = -1
	var from uint64
	for {
		recs, err := a.opts.Store.ReadStream(ctx, stream, from, readPage)
		if err != nil {
			return "", time.Time{}, 0, fmt.Errorf("read %s: %w", stream, err)
		}
		for _, rec := range recs {
			e, occurred, err := Decode(a.opts.Registry, rec)
			if err != nil {
				return "", time.Time{}, 0, err
			}
			if c, ok := e.(worker.InstanceClaimed); ok {
				workerID, at = c.WorkerID, occurred
			}
			revision = int64(rec.Revision)
		}
		if len(recs) < readPage {
			return workerID, at, revision, nil
		}
		from = recs[len(recs)-1].Revision + 1
	}
}

// encodeOne encodes one event with the metadata of a command.
func (a *App) encodeOne(ctx context.Context, p rbac.Principal, command string, e domain.Event) (eventstore.EventData, error) {
	meta := a.metadata(ctx, p, command)
	meta.OccurredAt = a.opts.Clock.Now().UTC()
	data, _, err := encodeEvents(a.opts.Registry, a.opts.IDs, meta, []domain.Event{e})
	if err != nil {
		return eventstore.EventData{}, err
	}
	return data[0], nil
}
