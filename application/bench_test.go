package application_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// BenchmarkLoadAggregate loads a worker whose stream holds 1,000 events:
// read the stream from Postgres, decode every event through the registry,
// fold it with Apply.
func BenchmarkLoadAggregate(b *testing.B) {
	ctx := context.Background()
	bd := setup(b)
	res, err := bd.app.ImportWorker(adminCtx, application.ImportWorker{Region: "us-east-1", InstanceID: fmt.Sprintf("i-0b%015x", modelInstanceSeq.Add(1)), State: worker.EC2Running})
	if err != nil {
		b.Fatal(err)
	}
	registry := application.EventRegistry()
	// 999 more events of realistic kinds, appended in chunks.
	var batch []eventstore.EventData
	rev := uint64(0)
	for i := 1; i < 1000; i++ {
		var e domain.Event
		switch i % 3 {
		case 0:
			e = worker.TagsChanged{Tags: map[string]string{"Name": "bench", "round": fmt.Sprint(i), "ManagedBy": "cml-cloud-manager"}}
		case 1:
			e = worker.InstanceStateObserved{EC2State: worker.EC2Running, PublicIP: fmt.Sprintf("198.51.100.%d", i%250), PrivateIP: "10.0.0.5", InstanceType: "m5zn.metal", SystemStatus: "ok", InstanceStatus: "ok"}
		default:
			e = worker.ServiceStatusChanged{Status: worker.ServiceAvailable, Version: fmt.Sprintf("2.9.%d", i), Ready: true}
		}
		typ, data, err := registry.Encode(e)
		if err != nil {
			b.Fatal(err)
		}
		batch = append(batch, eventstore.EventData{ID: application.UUIDv7{}.NewID(), Type: typ, Data: data,
			Metadata: []byte(`{"actor":{"type":"system","subject":"system:bench"},"correlation_id":"c","causation_id":"c","occurred_at":"2026-11-28T09:00:00Z"}`)})
		if len(batch) == 100 || i == 999 {
			r, err := bd.store.Append(ctx, worker.Stream(res.ID), eventstore.Exact(rev), batch...)
			if err != nil {
				b.Fatal(err)
			}
			rev, batch = r.NextRevision, nil
		}
	}
	repo := application.NewRepository(bd.store, registry, worker.New, worker.Stream, bd.clock, application.UUIDv7{}, application.DefaultRetryPolicy)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		w, err := repo.Load(ctx, res.ID)
		if err != nil {
			b.Fatal(err)
		}
		if w.Version() != 999 {
			b.Fatalf("loaded revision %d", w.Version())
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "ns/event")
}
