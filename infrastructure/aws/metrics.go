package aws

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	cwtypes "github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"

	"github.com/cmlcloud/cml-cloud-manager/application"
)

// GetMetricData limits and the metrics read per instance.
const (
	maxQueriesPerCall  = 500
	queriesPerInstance = 2
	instancesPerCall   = maxQueriesPerCall / queriesPerInstance
)

var (
	metricCPU = cwtypes.Metric{Namespace: awssdk.String("AWS/EC2"), MetricName: awssdk.String("CPUUtilization")}
	metricMem = cwtypes.Metric{Namespace: awssdk.String("CWAgent"), MetricName: awssdk.String("mem_used_percent")}
)

// Metrics returns the newest CPU and memory datapoint of each instance,
// reading Average per period from since (at most Options.MetricWindow back)
// until now. Two queries per instance, 500 per GetMetricData call, every
// NextToken page followed: 1,000 instances take 4 calls. Instances without
// any datapoint are absent from the map.
func (p *Provider) Metrics(ctx context.Context, region string, instanceIDs []string, since time.Time) (map[string]application.InstanceMetrics, error) {
	c, err := p.region(opGetMetricData, region)
	if err != nil {
		return nil, err
	}
	ids := dedupe(instanceIDs)
	out := make(map[string]application.InstanceMetrics, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	now := p.clock.Now()
	end := now.Truncate(p.metricPeriod).Add(p.metricPeriod)
	start := since
	if oldest := now.Add(-p.metricWindow); start.Before(oldest) {
		start = oldest
	}
	start = start.Truncate(p.metricPeriod)
	if !start.Before(end) {
		start = end.Add(-p.metricPeriod)
	}
	calls := 0
	for batch := range slices.Chunk(ids, instancesPerCall) {
		n, err := p.metricsBatch(ctx, c, batch, start, end, out)
		calls += n
		if err != nil {
			return nil, err
		}
	}
	p.log.DebugContext(ctx, "metrics read", slog.String("region", region), slog.Int("instances", len(ids)),
		slog.Int("with_data", len(out)), slog.Int("calls", calls))
	return out, nil
}

// metricsBatch reads the metrics of up to instancesPerCall instances with
// one GetMetricData query set, following NextToken, and merges the newest
// datapoint of each series into out. It returns the number of calls made.
func (p *Provider) metricsBatch(ctx context.Context, c *regionClients, ids []string, start, end time.Time, out map[string]application.InstanceMetrics) (int, error) {
	period := awssdk.Int32(int32(p.metricPeriod / time.Second))
	queries := make([]cwtypes.MetricDataQuery, 0, len(ids)*queriesPerInstance)
	for i, id := range ids {
		dims := []cwtypes.Dimension{{Name: awssdk.String("InstanceId"), Value: awssdk.String(id)}}
		for _, q := range []struct {
			prefix string
			metric cwtypes.Metric
		}{{"c", metricCPU}, {"m", metricMem}} {
			metric := q.metric
			metric.Dimensions = dims
			queries = append(queries, cwtypes.MetricDataQuery{
				Id:         awssdk.String(q.prefix + strconv.Itoa(i)),
				ReturnData: awssdk.Bool(true),
				MetricStat: &cwtypes.MetricStat{Metric: &metric, Period: period, Stat: awssdk.String("Average")},
			})
		}
	}
	type newest struct {
		t time.Time
		v float64
	}
	best := map[string]newest{} // by query id
	calls := 0
	pager := cloudwatch.NewGetMetricDataPaginator(c.cw, &cloudwatch.GetMetricDataInput{
		MetricDataQueries: queries,
		StartTime:         awssdk.Time(start),
		EndTime:           awssdk.Time(end),
		ScanBy:            cwtypes.ScanByTimestampDescending,
	})
	for pager.HasMorePages() {
		page, err := pager.NextPage(ctx)
		calls++
		if err != nil {
			return calls, classify(opGetMetricData, err)
		}
		for _, r := range page.MetricDataResults {
			id := awssdk.ToString(r.Id)
			for k, ts := range r.Timestamps {
				if k >= len(r.Values) {
					break
				}
				if b, ok := best[id]; !ok || ts.After(b.t) {
					best[id] = newest{t: ts.UTC(), v: r.Values[k]}
				}
			}
		}
	}
	for i, id := range ids {
		cpu, hasCPU := best["c"+strconv.Itoa(i)]
		mem, hasMem := best["m"+strconv.Itoa(i)]
		if !hasCPU && !hasMem {
			continue
		}
		m := application.InstanceMetrics{}
		if hasCPU {
			m.CPU, m.Timestamp = &cpu.v, cpu.t
		}
		if hasMem {
			m.Memory = &mem.v
			if mem.t.After(m.Timestamp) {
				m.Timestamp = mem.t
			}
		}
		out[id] = m
	}
	return calls, nil
}

func dedupe(ids []string) []string {
	seen := make(map[string]bool, len(ids))
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if id != "" && !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}
