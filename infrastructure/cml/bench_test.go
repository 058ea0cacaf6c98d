package cml_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/cmlcloud/cml-cloud-manager/infrastructure/cloudsim/cmlsim"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/cml"
)

// pollHours simulates hours of 5-minute polls (system_stats and licensing,
// as the metrics job makes) of every endpoint, moving the shared clock.
func pollHours(ctx context.Context, e *env, endpoints []string, hours int) error {
	for range hours * 12 {
		for _, ep := range endpoints {
			if _, err := e.client.SystemStats(ctx, ep); err != nil {
				return err
			}
			if _, err := e.client.Licensing(ctx, ep); err != nil {
				return err
			}
		}
		e.clock.Advance(5 * time.Minute)
	}
	return nil
}

func bootFleet(e *env, n int) []string {
	endpoints := make([]string, n)
	for i := range endpoints {
		endpoints[i] = e.boot(fmt.Sprintf("i-%017x", i))
	}
	return endpoints
}

// Upstream logged in on every poll of every worker (12 logins per worker per
// hour at a 5-minute poll); the cached token makes it one a day.
func TestLoginsPerWorkerPerHour(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, cmlsim.Options{EmptyControllers: true}, cml.Options{})
	const workers = 3
	endpoints := bootFleet(e, workers)

	require.NoError(t, pollHours(ctx, e, endpoints, 1))
	require.EqualValues(t, workers, e.fleet.Logins(), "the first hour: one login per worker")
	require.NoError(t, pollHours(ctx, e, endpoints, 25))
	require.EqualValues(t, 2*workers, e.fleet.Logins(), "26 hours: the 24 h token was replaced once")
	require.LessOrEqual(t, float64(e.fleet.Logins())/(workers*26), 0.1)
	require.EqualValues(t, e.client.Logins(), e.fleet.Logins())
}

// BenchmarkLoginsPerWorkerHour: one iteration is a simulated day of 5-minute
// polls over 20 workers with CML's default 24 h tokens.
func BenchmarkLoginsPerWorkerHour(b *testing.B) {
	ctx := context.Background()
	e := newEnv(b, cmlsim.Options{EmptyControllers: true}, cml.Options{})
	const workers = 20
	endpoints := bootFleet(e, workers)
	hours := 0
	for b.Loop() {
		if err := pollHours(ctx, e, endpoints, 24); err != nil {
			b.Fatal(err)
		}
		hours += 24
	}
	b.ReportMetric(float64(e.fleet.Logins())/float64(workers*hours), "logins/worker/hour")
	b.ReportMetric(float64(e.fleet.Logins())/float64(workers), "logins/worker")
	b.ReportMetric(float64(hours), "simulated-hours")
}

// fullCycle runs one monitoring cycle (system_information, system_health,
// system_stats, licensing, labs with their details) over every endpoint, at
// most concurrency controllers at a time.
func fullCycle(ctx context.Context, c *cml.Client, endpoints []string, concurrency int) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(concurrency)
	for _, ep := range endpoints {
		g.Go(func() error { return cycle(gctx, c, ep) })
	}
	return g.Wait()
}

// BenchmarkFullCycle1000: one iteration is a full monitoring cycle over
// 1,000 simulated controllers (2 demo labs each: 7 requests per controller)
// answering every request after 50 ms, with tokens already cached; the
// first (cold) cycle, logins included, is reported as cold-s.
func BenchmarkFullCycle1000(b *testing.B) {
	const controllers = 1000
	for _, concurrency := range []int{50, 100, 200} {
		b.Run(fmt.Sprintf("concurrency=%d", concurrency), func(b *testing.B) {
			ctx := context.Background()
			e := newEnv(b, cmlsim.Options{Faults: cmlsim.Faults{Latency: 50 * time.Millisecond}}, cml.Options{})
			endpoints := bootFleet(e, controllers)
			start := time.Now()
			if err := fullCycle(ctx, e.client, endpoints, concurrency); err != nil {
				b.Fatal(err)
			}
			cold := time.Since(start)
			e.fleet.ResetCounters()
			cycles := 0
			for b.Loop() {
				if err := fullCycle(ctx, e.client, endpoints, concurrency); err != nil {
					b.Fatal(err)
				}
				cycles++
			}
			var requests int64
			for _, n := range e.fleet.Calls() {
				requests += n
			}
			b.ReportMetric(cold.Seconds(), "cold-s")
			b.ReportMetric(float64(requests)/float64(cycles), "requests/cycle")
			b.ReportMetric(float64(e.fleet.Logins())/float64(cycles), "logins/cycle")
		})
	}
}
