package aws

import (
	"context"
	"fmt"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	cwtypes "github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"
	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/infrastructure/cloudsim"
)

func TestMetricsBatching(t *testing.T) {
	t.Parallel()
	tests := []struct {
		instances int
		wantCalls int64 // ceil(2 × instances / 500): two queries per instance, 500 per call
	}{
		{instances: 1, wantCalls: 1},
		{instances: 250, wantCalls: 1},
		{instances: 251, wantCalls: 2},
		{instances: 1200, wantCalls: 5}, // 2,400 queries
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.instances), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, cloudsim.Options{}, Options{})
			fleet := e.seed(t, region, cmlImage, tc.instances, true)
			e.clock.Advance(10 * time.Minute)
			got, err := e.p.Metrics(context.Background(), region, fleet, e.clock.Now().Add(-10*time.Minute))
			require.NoError(t, err)
			require.Equal(t, tc.wantCalls, e.sim.CallCount("cloudwatch:GetMetricData"))
			require.Equal(t, tc.wantCalls, e.sim.CallCount(""), "and nothing else")
			require.Len(t, got, tc.instances)
			for _, id := range fleet {
				m := got[id]
				require.NotNil(t, m.CPU, id)
				require.NotNil(t, m.Memory, id)
				require.Equal(t, t0.Add(9*time.Minute), m.Timestamp, "the newest published minute")
			}
		})
	}
}

func TestMetricsNewestDatapoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cloudsim.Options{}, Options{})
	ctx := context.Background()
	detailed := e.seed(t, region, cmlImage, 3, true)
	noAgent := e.seed(t, region, plainImage, 1, true)[0]
	basic, err := e.sim.Console().Launch(region, cloudsim.ConsoleLaunch{ImageID: cmlImage, Running: true})
	require.NoError(t, err)
	stoppedEarly := e.seed(t, region, cmlImage, 1, true)[0]
	e.clock.Advance(3 * time.Minute)
	require.NoError(t, e.sim.Console().Stop(stoppedEarly))
	e.clock.Advance(27 * time.Minute)

	// oldestFirst reads a series the other way round, so that its last value
	// is the newest: an independent answer to compare with.
	oldestFirst := func(namespace, metric, id string) (time.Time, float64, bool) {
		out, err := e.p.clients[region].cw.GetMetricData(ctx, &cloudwatch.GetMetricDataInput{
			StartTime: awssdk.Time(t0), EndTime: awssdk.Time(e.clock.Now().Add(time.Minute)), ScanBy: cwtypes.ScanByTimestampAscending,
			MetricDataQueries: []cwtypes.MetricDataQuery{{Id: awssdk.String("q"), MetricStat: &cwtypes.MetricStat{
				Metric: &cwtypes.Metric{Namespace: awssdk.String(namespace), MetricName: awssdk.String(metric),
					Dimensions: []cwtypes.Dimension{{Name: awssdk.String("InstanceId"), Value: awssdk.String(id)}}},
				Period: awssdk.Int32(60), Stat: awssdk.String("Average")}}},
		})
		require.NoError(t, err)
		r := out.MetricDataResults[0]
		if len(r.Values) == 0 {
			return time.Time{}, 0, false
		}
		require.Greater(t, len(r.Values), 1, "a series with several datapoints")
		return r.Timestamps[len(r.Timestamps)-1].UTC(), r.Values[len(r.Values)-1], true
	}

	query := append(append([]string{}, detailed...), noAgent, basic[0].ID, stoppedEarly, "i-0123456789abcdef0", detailed[0])
	got, err := e.p.Metrics(ctx, region, query, t0.Add(10*time.Minute))
	require.NoError(t, err)
	require.Len(t, got, 5, "the stopped one has no datapoint in the window, the unknown one none at all")
	require.NotContains(t, got, "i-0123456789abcdef0")

	for _, id := range append(append([]string{}, detailed...), noAgent, basic[0].ID) {
		m := got[id]
		ts, cpu, ok := oldestFirst("AWS/EC2", "CPUUtilization", id)
		require.True(t, ok)
		require.Equal(t, cpu, *m.CPU, "%s: the newest CPU datapoint", id)
		memTS, mem, ok := oldestFirst("CWAgent", "mem_used_percent", id)
		if id == noAgent {
			require.False(t, ok)
			require.Nil(t, m.Memory, "no CloudWatch agent, no memory")
			require.Equal(t, ts, m.Timestamp)
			continue
		}
		require.True(t, ok)
		require.Equal(t, mem, *m.Memory, "%s: the newest memory datapoint", id)
		require.Equal(t, memTS, m.Timestamp)
	}
	require.Equal(t, t0.Add(25*time.Minute), got[basic[0].ID].Timestamp, "basic monitoring: 5-minute datapoints")
	require.Equal(t, t0.Add(29*time.Minute), got[detailed[0]].Timestamp)

	early, err := e.p.Metrics(ctx, region, []string{stoppedEarly}, t0)
	require.NoError(t, err)
	require.Equal(t, t0.Add(2*time.Minute), early[stoppedEarly].Timestamp, "its last minute before the stop")
	none, err := e.p.Metrics(ctx, region, nil, t0)
	require.NoError(t, err)
	require.Empty(t, none)
}

func TestMetricsFollowsNextToken(t *testing.T) {
	t.Parallel()
	read := func(pageSize int) (map[string][2]float64, int64) {
		e := newEnv(t, cloudsim.Options{Seed: 42, MetricsPageSize: pageSize}, Options{})
		fleet := e.seed(t, region, cmlImage, 30, true)
		e.clock.Advance(20 * time.Minute)
		got, err := e.p.Metrics(context.Background(), region, fleet, e.clock.Now().Add(-10*time.Minute))
		require.NoError(t, err)
		out := map[string][2]float64{}
		for id, m := range got {
			require.NotNil(t, m.CPU)
			require.NotNil(t, m.Memory)
			out[id] = [2]float64{*m.CPU, *m.Memory}
		}
		return out, e.sim.CallCount("cloudwatch:GetMetricData")
	}
	whole, wholeCalls := read(0)
	paged, pagedCalls := read(50)
	require.Len(t, whole, 30)
	require.Equal(t, whole, paged, "the same newest values whether the answer is paged or not")
	require.Equal(t, int64(1), wholeCalls)
	// 30 instances × 2 series × 10 datapoints (the minutes 10 to 19: a
	// minute is published once it is over) = 600, in pages of 50.
	require.Equal(t, int64(12), pagedCalls)
}

func TestMetricsWindowAndPeriod(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cloudsim.Options{}, Options{MetricPeriod: 5 * time.Minute, MetricWindow: 30 * time.Minute})
	fleet := e.seed(t, region, cmlImage, 2, true)
	e.clock.Advance(3 * time.Hour)
	// A zero "since" is clamped to the window; the newest 5-minute bucket
	// holds the minutes published so far.
	got, err := e.p.Metrics(context.Background(), region, fleet, time.Time{})
	require.NoError(t, err)
	require.Len(t, got, 2)
	for _, m := range got {
		require.Equal(t, t0.Add(3*time.Hour-5*time.Minute), m.Timestamp)
	}
	// A "since" in the future still reads the current period.
	got, err = e.p.Metrics(context.Background(), region, fleet, e.clock.Now().Add(time.Hour))
	require.NoError(t, err)
	require.Len(t, got, 0, "the current 5-minute bucket has nothing published yet")
}
