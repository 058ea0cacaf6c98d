package aws

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/cloudsim"
)

// BenchmarkReconcileCallCount measures one reconcile + metrics cycle over
// 1,000 running managed instances in one region: DescribeManaged, then
// Metrics for the running ones. It reports the AWS API calls per cycle,
// counted by the simulator (the target is at most 10), beside the wall time.
func BenchmarkReconcileCallCount(b *testing.B) {
	const fleetSize = 1000
	e := newEnv(b, cloudsim.Options{}, Options{})
	e.seed(b, region, cmlImage, fleetSize, true)
	e.seed(b, region, cmlImage, 50, false) // someone else's instances share the region
	e.clock.Advance(10 * time.Minute)
	ctx := context.Background()
	e.sim.ResetCalls()
	cycles := 0
	for b.Loop() {
		instances, err := e.p.DescribeManaged(ctx, region)
		require.NoError(b, err)
		running := make([]string, 0, len(instances))
		for _, in := range instances {
			if in.State == worker.EC2Running {
				running = append(running, in.InstanceID)
			}
		}
		require.Len(b, running, fleetSize)
		metrics, err := e.p.Metrics(ctx, region, running, e.clock.Now().Add(-5*time.Minute))
		require.NoError(b, err)
		require.Len(b, metrics, fleetSize)
		cycles++
	}
	perCycle := func(api string) float64 { return float64(e.sim.CallCount(api)) / float64(cycles) }
	calls := perCycle("")
	b.ReportMetric(calls, "aws-calls/cycle")
	b.ReportMetric(perCycle("ec2:DescribeInstances"), "DescribeInstances/cycle")
	b.ReportMetric(perCycle("ec2:DescribeInstanceStatus"), "DescribeInstanceStatus/cycle")
	b.ReportMetric(perCycle("cloudwatch:GetMetricData"), "GetMetricData/cycle")
	require.LessOrEqual(b, calls, 10.0, "the issue's target: at most 10 AWS calls per cycle")
}
