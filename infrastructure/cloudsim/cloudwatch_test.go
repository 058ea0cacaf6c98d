package cloudsim

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	cwtypes "github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"
	"github.com/stretchr/testify/require"
)

func sdkQuery(id, namespace, metric, instanceID string, period int32, stat string) cwtypes.MetricDataQuery {
	return cwtypes.MetricDataQuery{
		Id: aws.String(id),
		MetricStat: &cwtypes.MetricStat{
			Metric: &cwtypes.Metric{Namespace: aws.String(namespace), MetricName: aws.String(metric),
				Dimensions: []cwtypes.Dimension{{Name: aws.String("InstanceId"), Value: aws.String(instanceID)}}},
			Period: aws.Int32(period), Stat: aws.String(stat),
		},
	}
}

func cpuQuery(id, instanceID string, period int32, stat string) cwtypes.MetricDataQuery {
	return sdkQuery(id, "AWS/EC2", "CPUUtilization", instanceID, period, stat)
}

func memQuery(id, instanceID string, period int32) cwtypes.MetricDataQuery {
	return sdkQuery(id, "CWAgent", "mem_used_percent", instanceID, period, "Average")
}

// seedRunning launches one running instance out of band.
func (h *harness) seedRunning(t *testing.T, image string, detailed bool) string {
	t.Helper()
	ins, err := h.sim.Console().Launch(testRegion, ConsoleLaunch{ImageID: image, Running: true, DetailedMonitoring: detailed})
	require.NoError(t, err)
	return ins[0].ID
}

func minutes(n int) time.Duration { return time.Duration(n) * time.Minute }

func TestGetMetricData(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{})
	ctx := context.Background()
	detailed := h.seedRunning(t, cmlImage, true)  // 60 s samples, memory
	basic := h.seedRunning(t, cmlImage, false)    // 300 s samples, memory
	noAgent := h.seedRunning(t, plainImage, true) // 60 s samples, no memory
	h.clock.Advance(minutes(30))

	get := func(t *testing.T, scan cwtypes.ScanBy, start, end time.Time, qs ...cwtypes.MetricDataQuery) map[string]cwtypes.MetricDataResult {
		t.Helper()
		out, err := h.cw.GetMetricData(ctx, &cloudwatch.GetMetricDataInput{
			MetricDataQueries: qs, StartTime: aws.Time(start), EndTime: aws.Time(end), ScanBy: scan,
		})
		require.NoError(t, err)
		require.Nil(t, out.NextToken)
		res := map[string]cwtypes.MetricDataResult{}
		for _, r := range out.MetricDataResults {
			require.Len(t, r.Values, len(r.Timestamps))
			res[aws.ToString(r.Id)] = r
		}
		return res
	}
	window := func(t *testing.T, scan cwtypes.ScanBy, qs ...cwtypes.MetricDataQuery) map[string]cwtypes.MetricDataResult {
		return get(t, scan, t0, t0.Add(minutes(31)), qs...)
	}

	t.Run("samples per resolution, newest first", func(t *testing.T) {
		res := window(t, "", cpuQuery("a", detailed, 60, "Average"), cpuQuery("b", basic, 60, "Average"),
			cpuQuery("c", noAgent, 60, "Average"), memQuery("am", detailed, 60), memQuery("cm", noAgent, 60))
		tests := []struct {
			id     string
			points int
			newest time.Time
		}{
			{"a", 30, t0.Add(minutes(29))}, // published once their minute is over
			{"b", 6, t0.Add(minutes(25))},  // basic monitoring: every 5 minutes
			{"c", 30, t0.Add(minutes(29))},
			{"am", 30, t0.Add(minutes(29))},
			{"cm", 0, time.Time{}}, // no CloudWatch agent, no memory
		}
		for _, tc := range tests {
			r := res[tc.id]
			require.Len(t, r.Timestamps, tc.points, tc.id)
			require.Equal(t, cwtypes.StatusCodeComplete, r.StatusCode)
			if tc.points == 0 {
				continue
			}
			require.Equal(t, tc.newest, r.Timestamps[0].UTC(), tc.id)
			require.True(t, slices.IsSortedFunc(r.Timestamps, func(a, b time.Time) int { return b.Compare(a) }), "descending")
			for _, v := range r.Values {
				require.True(t, v > 0 && v <= 100, "%s: value %v", tc.id, v)
			}
		}
		require.Equal(t, "CPUUtilization", aws.ToString(res["a"].Label))
	})

	t.Run("ascending is the same data reversed", func(t *testing.T) {
		desc := window(t, cwtypes.ScanByTimestampDescending, cpuQuery("a", detailed, 60, "Average"))["a"]
		asc := window(t, cwtypes.ScanByTimestampAscending, cpuQuery("a", detailed, 60, "Average"))["a"]
		slices.Reverse(asc.Timestamps)
		slices.Reverse(asc.Values)
		require.Equal(t, desc.Timestamps, asc.Timestamps)
		require.Equal(t, desc.Values, asc.Values)
	})

	t.Run("statistics over longer periods", func(t *testing.T) {
		res := window(t, cwtypes.ScanByTimestampAscending, cpuQuery("m", detailed, 60, "Average"),
			cpuQuery("avg", detailed, 300, "Average"), cpuQuery("n", detailed, 300, "SampleCount"),
			cpuQuery("max", detailed, 300, "Maximum"), cpuQuery("sum", detailed, 300, "Sum"))
		minute := res["m"].Values
		require.Len(t, res["avg"].Values, 6)
		for b := range 6 {
			five := minute[b*5 : b*5+5]
			var sum float64
			for _, v := range five {
				sum += v
			}
			require.InDelta(t, sum/5, res["avg"].Values[b], 1e-9)
			require.InDelta(t, sum, res["sum"].Values[b], 1e-9)
			require.Equal(t, slices.Max(five), res["max"].Values[b])
			require.Equal(t, 5.0, res["n"].Values[b])
			require.Equal(t, t0.Add(minutes(5*b)), res["avg"].Timestamps[b].UTC())
		}
	})

	t.Run("the time window is honoured", func(t *testing.T) {
		r := get(t, cwtypes.ScanByTimestampAscending, t0.Add(minutes(10)), t0.Add(minutes(20)), cpuQuery("a", detailed, 60, "Average"))["a"]
		require.Len(t, r.Timestamps, 10)
		require.Equal(t, t0.Add(minutes(10)), r.Timestamps[0].UTC())
		require.Equal(t, t0.Add(minutes(19)), r.Timestamps[9].UTC())
	})

	t.Run("unknown metrics and instances have no data; ReturnData false is left out", func(t *testing.T) {
		hidden := cpuQuery("hidden", detailed, 60, "Average")
		hidden.ReturnData = aws.Bool(false)
		res := window(t, "", sdkQuery("net", "AWS/EC2", "NetworkIn", detailed, 60, "Average"),
			cpuQuery("gone", "i-0123456789abcdef0", 60, "Average"), hidden)
		require.Empty(t, res["net"].Timestamps)
		require.Empty(t, res["gone"].Timestamps)
		require.NotContains(t, res, "hidden")
	})

	t.Run("a stopped instance has no new datapoints", func(t *testing.T) {
		require.NoError(t, h.sim.Console().Stop(detailed))
		h.clock.Advance(minutes(20))
		r := get(t, "", t0, t0.Add(minutes(60)), cpuQuery("a", detailed, 60, "Average"))["a"]
		require.Equal(t, t0.Add(minutes(29)), r.Timestamps[0].UTC())
	})
}

func TestGetMetricDataValidation(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{})
	ctx := context.Background()
	id := h.seedRunning(t, cmlImage, true)
	many := make([]cwtypes.MetricDataQuery, 501)
	for i := range many {
		many[i] = cpuQuery("q"+strconv.Itoa(i), id, 60, "Average")
	}
	expr := cwtypes.MetricDataQuery{Id: aws.String("e"), Expression: aws.String("SUM(METRICS())")}
	tests := []struct {
		name       string
		queries    []cwtypes.MetricDataQuery
		start, end time.Time
		token      string
		code       string
	}{
		{name: "500 queries is the limit", queries: many[:500]},
		{name: "501 queries", queries: many, code: "InvalidParameterValue"},
		{name: "start after end", queries: many[:1], start: t0.Add(time.Hour), end: t0, code: "InvalidParameterValue"},
		{name: "duplicate ids", queries: []cwtypes.MetricDataQuery{many[0], many[0]}, code: "InvalidParameterValue"},
		{name: "upper-case id", queries: []cwtypes.MetricDataQuery{cpuQuery("Q", id, 60, "Average")}, code: "InvalidParameterValue"},
		{name: "odd period", queries: []cwtypes.MetricDataQuery{cpuQuery("q", id, 7, "Average")}, code: "InvalidParameterValue"},
		{name: "unknown statistic", queries: []cwtypes.MetricDataQuery{cpuQuery("q", id, 60, "Median")}, code: "InvalidParameterValue"},
		{name: "expressions", queries: []cwtypes.MetricDataQuery{expr}, code: "InvalidParameterValue"},
		{name: "bad token", queries: many[:1], token: "nonsense", code: "InvalidNextToken"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start, end := tc.start, tc.end
			if start.IsZero() {
				start, end = t0.Add(-time.Hour), t0.Add(time.Hour)
			}
			in := &cloudwatch.GetMetricDataInput{MetricDataQueries: tc.queries, StartTime: aws.Time(start), EndTime: aws.Time(end)}
			if tc.token != "" {
				in.NextToken = aws.String(tc.token)
			}
			_, err := h.cw.GetMetricData(ctx, in)
			require.Equal(t, tc.code, apiCode(t, err))
		})
	}
}

func TestGetMetricDataPaging(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{MetricsPageSize: 7})
	ctx := context.Background()
	a, b := h.seedRunning(t, cmlImage, true), h.seedRunning(t, cmlImage, true)
	h.clock.Advance(minutes(31)) // 31 published points per series (t0 to t0+30m)
	in := &cloudwatch.GetMetricDataInput{
		MetricDataQueries: []cwtypes.MetricDataQuery{cpuQuery("a", a, 60, "Average"), memQuery("b", b, 60)},
		StartTime:         aws.Time(t0), EndTime: aws.Time(t0.Add(time.Hour)), ScanBy: cwtypes.ScanByTimestampDescending,
	}
	merged := map[string][]time.Time{}
	calls := 0
	pager := cloudwatch.NewGetMetricDataPaginator(h.cw, in)
	for pager.HasMorePages() {
		page, err := pager.NextPage(ctx)
		require.NoError(t, err)
		calls++
		n := 0
		for _, r := range page.MetricDataResults {
			n += len(r.Timestamps)
			merged[aws.ToString(r.Id)] = append(merged[aws.ToString(r.Id)], r.Timestamps...)
			if pager.HasMorePages() && len(r.Timestamps) > 0 && aws.ToString(r.Id) == "b" {
				require.Equal(t, cwtypes.StatusCodePartialData, r.StatusCode)
			}
		}
		require.LessOrEqual(t, n, 7)
	}
	require.Equal(t, 9, calls, "62 datapoints in pages of 7")
	require.Equal(t, int64(9), h.sim.CallCount("cloudwatch:GetMetricData"))
	for _, id := range []string{"a", "b"} {
		require.Len(t, merged[id], 31, id)
		require.True(t, slices.IsSortedFunc(merged[id], func(x, y time.Time) int { return y.Compare(x) }), "%s stays newest first across pages", id)
		require.Equal(t, t0.Add(minutes(30)), merged[id][0].UTC())
	}

	// MaxDatapoints of the request pages too.
	h2 := newHarness(t, Options{})
	c := h2.seedRunning(t, cmlImage, true)
	h2.clock.Advance(minutes(11))
	out, err := h2.cw.GetMetricData(ctx, &cloudwatch.GetMetricDataInput{
		MetricDataQueries: []cwtypes.MetricDataQuery{cpuQuery("c", c, 60, "Average")},
		StartTime:         aws.Time(t0), EndTime: aws.Time(t0.Add(time.Hour)), MaxDatapoints: aws.Int32(4),
	})
	require.NoError(t, err)
	require.Len(t, out.MetricDataResults[0].Timestamps, 4)
	require.NotNil(t, out.NextToken)
}
