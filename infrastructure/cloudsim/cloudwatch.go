package cloudsim

import (
	"hash/fnv"
	"io"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/smithy-go/encoding/cbor"
)

// CloudWatch GetMetricData over Smithy RPC v2 CBOR, the protocol of
// service/cloudwatch v1.75.7: POST /service/GraniteServiceVersion20100801/
// operation/GetMetricData with "Smithy-Protocol: rpc-v2-cbor", a CBOR map
// body whose keys are the member names, timestamps as tag 1 epoch seconds.
// The service is awsQueryCompatible, so errors also carry the legacy code in
// X-Amzn-Query-Error.

const (
	cloudWatchService     = "GraniteServiceVersion20100801"
	cloudWatchPathPrefix  = "/service/" + cloudWatchService + "/operation/"
	maxMetricDataQueries  = 500
	defaultMaxDatapoints  = 100800
	metricsNamespaceEC2   = "AWS/EC2"
	metricsNamespaceAgent = "CWAgent"
	metricCPU             = "CPUUtilization"
	metricMemory          = "mem_used_percent"
	dimensionInstanceID   = "InstanceId"
	statusComplete        = "Complete"
	statusPartialData     = "PartialData"
	scanDescending        = "TimestampDescending"
	scanAscending         = "TimestampAscending"
)

// metricQuery is one MetricDataQuery with a MetricStat.
type metricQuery struct {
	ID         string
	Label      string
	ReturnData bool
	Namespace  string
	MetricName string
	Dimensions map[string]string
	Period     time.Duration
	Stat       string
}

// metricRequest is a decoded GetMetricData input.
type metricRequest struct {
	Queries       []metricQuery
	Start, End    time.Time
	ScanBy        string
	NextToken     string
	MaxDatapoints int
}

var metricIDRE = regexp.MustCompile(`^[a-z][a-zA-Z0-9_]{0,254}$`)

func cwInvalid(format string, args ...any) *APIError {
	return apiErrorf(http.StatusBadRequest, "InvalidParameterValue", format, args...)
}

func cborString(v cbor.Value) (string, bool) {
	s, ok := v.(cbor.String)
	return string(s), ok
}

func cborInt(v cbor.Value) (int64, bool) {
	switch n := v.(type) {
	case cbor.Uint:
		if n > math.MaxInt64 {
			return 0, false
		}
		return int64(n), true
	case cbor.NegInt:
		if n == 0 || n > math.MaxInt64 {
			return 0, false
		}
		return -int64(n-1) - 1, true
	}
	return 0, false
}

// cborTime reads a timestamp: tag 1 around epoch seconds, integral or not.
func cborTime(v cbor.Value) (time.Time, bool) {
	tag, ok := v.(*cbor.Tag)
	if !ok || tag.ID != 1 {
		return time.Time{}, false
	}
	var secs float64
	switch n := tag.Value.(type) {
	case cbor.Float64:
		secs = float64(n)
	case cbor.Float32:
		secs = float64(n)
	default:
		i, ok := cborInt(tag.Value)
		if !ok {
			return time.Time{}, false
		}
		secs = float64(i)
	}
	if math.IsNaN(secs) || math.IsInf(secs, 0) || math.Abs(secs) > 1e11 {
		return time.Time{}, false
	}
	return time.UnixMilli(int64(math.Round(secs * 1000))).UTC(), true
}

// decodeGetMetricData reads and validates a GetMetricData body.
func decodeGetMetricData(body []byte) (metricRequest, *APIError) {
	var req metricRequest
	v, err := cbor.Decode(body)
	if err != nil {
		return req, apiErrorf(http.StatusBadRequest, "SerializationException", "cannot decode the CBOR body: %v", err)
	}
	m, ok := v.(cbor.Map)
	if !ok {
		return req, apiErrorf(http.StatusBadRequest, "SerializationException", "the body is not a CBOR map")
	}
	var okStart, okEnd bool
	if req.Start, okStart = cborTime(m["StartTime"]); !okStart {
		return req, apiErrorf(http.StatusBadRequest, "MissingParameter", "StartTime is required and must be a timestamp")
	}
	if req.End, okEnd = cborTime(m["EndTime"]); !okEnd {
		return req, apiErrorf(http.StatusBadRequest, "MissingParameter", "EndTime is required and must be a timestamp")
	}
	if !req.Start.Before(req.End) {
		return req, cwInvalid("The parameter StartTime must be less than the parameter EndTime.")
	}
	if s, ok := m["ScanBy"]; ok {
		req.ScanBy, _ = cborString(s)
		if req.ScanBy != scanDescending && req.ScanBy != scanAscending {
			return req, cwInvalid("ScanBy must be %s or %s", scanDescending, scanAscending)
		}
	}
	if req.ScanBy == "" {
		req.ScanBy = scanDescending
	}
	if t, ok := m["NextToken"]; ok {
		req.NextToken, _ = cborString(t)
	}
	if n, ok := m["MaxDatapoints"]; ok {
		i, ok := cborInt(n)
		if !ok || i < 1 {
			return req, cwInvalid("MaxDatapoints must be a positive integer")
		}
		req.MaxDatapoints = int(min(i, math.MaxInt32))
	}
	list, ok := m["MetricDataQueries"].(cbor.List)
	if !ok || len(list) == 0 {
		return req, apiErrorf(http.StatusBadRequest, "MissingParameter", "MetricDataQueries is required")
	}
	if len(list) > maxMetricDataQueries {
		return req, cwInvalid("The collection MetricDataQueries must not have a size greater than %d.", maxMetricDataQueries)
	}
	seen := map[string]bool{}
	for i, item := range list {
		q, err := decodeMetricQuery(item)
		if err != nil {
			err.Message = "MetricDataQueries[" + strconv.Itoa(i) + "]: " + err.Message
			return req, err
		}
		if seen[q.ID] {
			return req, cwInvalid("The values for parameter id in MetricDataQueries are not unique: %s", q.ID)
		}
		seen[q.ID] = true
		req.Queries = append(req.Queries, q)
	}
	return req, nil
}

func decodeMetricQuery(v cbor.Value) (metricQuery, *APIError) {
	q := metricQuery{ReturnData: true}
	m, ok := v.(cbor.Map)
	if !ok {
		return q, cwInvalid("a query is not a structure")
	}
	q.ID, _ = cborString(m["Id"])
	if !metricIDRE.MatchString(q.ID) {
		return q, cwInvalid("Id %q must start with a lowercase letter and hold only letters, digits and underscores", q.ID)
	}
	if l, ok := m["Label"]; ok {
		q.Label, _ = cborString(l)
	}
	if r, ok := m["ReturnData"].(cbor.Bool); ok {
		q.ReturnData = bool(r)
	}
	if _, ok := m["Expression"]; ok {
		return q, cwInvalid("the simulator does not evaluate metric math expressions")
	}
	stat, ok := m["MetricStat"].(cbor.Map)
	if !ok {
		return q, apiErrorf(http.StatusBadRequest, "MissingParameter", "a query needs a MetricStat")
	}
	metric, ok := stat["Metric"].(cbor.Map)
	if !ok {
		return q, apiErrorf(http.StatusBadRequest, "MissingParameter", "MetricStat needs a Metric")
	}
	q.Namespace, _ = cborString(metric["Namespace"])
	q.MetricName, _ = cborString(metric["MetricName"])
	if q.Namespace == "" || q.MetricName == "" {
		return q, apiErrorf(http.StatusBadRequest, "MissingParameter", "Metric needs a Namespace and a MetricName")
	}
	q.Dimensions = map[string]string{}
	if dims, ok := metric["Dimensions"].(cbor.List); ok {
		if len(dims) > 30 {
			return q, cwInvalid("a metric has at most 30 dimensions")
		}
		for _, d := range dims {
			dm, ok := d.(cbor.Map)
			if !ok {
				return q, cwInvalid("a dimension is not a structure")
			}
			name, _ := cborString(dm["Name"])
			value, _ := cborString(dm["Value"])
			if name == "" {
				return q, cwInvalid("a dimension needs a Name")
			}
			q.Dimensions[name] = value
		}
	}
	period, ok := cborInt(stat["Period"])
	if !ok || period < 1 || (period >= 60 && period%60 != 0) || (period < 60 && !slices.Contains([]int64{1, 5, 10, 20, 30}, period)) {
		return q, cwInvalid("The parameter Period must be 1, 5, 10, 20, 30 or a multiple of 60")
	}
	q.Period = time.Duration(period) * time.Second
	q.Stat, _ = cborString(stat["Stat"])
	switch q.Stat {
	case "Average", "Minimum", "Maximum", "Sum", "SampleCount":
	default:
		return q, cwInvalid("The simulator supports the statistics Average, Minimum, Maximum, Sum and SampleCount, not %q", q.Stat)
	}
	return q, nil
}

// point is one datapoint of a result series.
type point struct {
	t time.Time
	v float64
}

// unitHash maps its parts to a number in [0, 1).
func unitHash(parts ...string) float64 {
	h := fnv.New64a()
	for _, p := range parts {
		_, _ = io.WriteString(h, p)
		_, _ = h.Write([]byte{0})
	}
	return float64(h.Sum64()>>11) / (1 << 53)
}

// sampleValue is the synthetic value of a metric of an instance at t, for a
// run that started at runStart: high while booting, then a per-instance
// level with a daily swing and noise.
func sampleValue(metric, instanceID string, t, runStart time.Time) float64 {
	ts := strconv.FormatInt(t.Unix(), 10)
	noise := unitHash(metric, instanceID, ts) - 0.5
	day := 2 * math.Pi * float64(t.Unix()%86400) / 86400
	var v float64
	switch metric {
	case metricCPU:
		if t.Sub(runStart) < 5*time.Minute {
			v = 70 + 50*(noise+0.5)*0.5
		} else {
			v = 3 + 35*unitHash("cpu-level", instanceID) + 8*math.Sin(day) + 6*noise
		}
	default:
		v = 30 + 40*unitHash("mem-level", instanceID) + 4*math.Sin(day) + 2*noise
	}
	return math.Round(math.Min(100, math.Max(0.1, v))*1000) / 1000
}

// series computes the datapoints of one query, oldest first. A sample at
// time t (a multiple of the instance's resolution while it runs) is
// published once its interval is over, at t + resolution.
func series(q metricQuery, src metricSource, found bool, req metricRequest, now time.Time) []point {
	if !found || len(q.Dimensions) != 1 {
		return nil
	}
	id := q.Dimensions[dimensionInstanceID]
	switch {
	case q.Namespace == metricsNamespaceEC2 && q.MetricName == metricCPU:
	case q.Namespace == metricsNamespaceAgent && q.MetricName == metricMemory && src.agent:
	default:
		return nil
	}
	r := src.resolution
	var out []point
	var agg []float64
	var bucket time.Time
	flush := func() {
		if len(agg) > 0 {
			out = append(out, point{t: bucket, v: aggregate(q.Stat, agg)})
			agg = agg[:0]
		}
	}
	from := req.Start.Truncate(q.Period)
	for _, run := range src.runs {
		end := run.end
		if end.IsZero() {
			end = now
		}
		lo := run.start
		if lo.Before(from) {
			lo = from
		}
		t := lo.Truncate(r)
		if t.Before(lo) {
			t = t.Add(r)
		}
		for ; t.Before(end) && t.Before(req.End) && !t.Add(r).After(now); t = t.Add(r) {
			b := t.Truncate(q.Period)
			if !b.Equal(bucket) {
				flush()
				bucket = b
			}
			agg = append(agg, sampleValue(q.MetricName, id, t, run.start))
		}
	}
	flush()
	return out
}

func aggregate(stat string, vs []float64) float64 {
	switch stat {
	case "Minimum":
		return slices.Min(vs)
	case "Maximum":
		return slices.Max(vs)
	case "SampleCount":
		return float64(len(vs))
	}
	var sum float64
	for _, v := range vs {
		sum += v
	}
	if stat == "Sum" {
		return sum
	}
	return sum / float64(len(vs))
}

// serveCloudWatch answers one CloudWatch RPC v2 CBOR request for region.
func (s *Simulator) serveCloudWatch(w http.ResponseWriter, r *http.Request, region string) {
	requestID := s.requestID()
	op := strings.TrimPrefix(r.URL.Path, cloudWatchPathPrefix)
	api := serviceCloudWatch + ":" + op
	latency, ok := s.begin(r, api, func(e *APIError) { writeCloudWatchError(w, requestID, e) })
	if !ok {
		return
	}
	if op != "GetMetricData" {
		writeCloudWatchError(w, requestID, apiErrorf(http.StatusNotFound, "UnknownOperationException",
			"the simulator implements GetMetricData only, not %q", op))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4<<20))
	if err != nil {
		writeCloudWatchError(w, requestID, apiErrorf(http.StatusBadRequest, "SerializationException", "cannot read the body: %v", err))
		return
	}
	req, apiErr := decodeGetMetricData(body)
	if apiErr != nil {
		writeCloudWatchError(w, requestID, apiErr)
		return
	}
	out, apiErr := s.getMetricData(region, req)
	if !wait(r, latency) {
		return
	}
	if apiErr != nil {
		writeCloudWatchError(w, requestID, apiErr)
		return
	}
	w.Header().Set("Smithy-Protocol", "rpc-v2-cbor")
	w.Header().Set("Content-Type", "application/cbor")
	w.Header().Set("x-amzn-RequestId", requestID)
	_, _ = w.Write(cbor.Encode(out))
}

// getMetricData evaluates a request and cuts the page NextToken asks for.
func (s *Simulator) getMetricData(region string, req metricRequest) (cbor.Map, *APIError) {
	var ids []string
	for _, q := range req.Queries {
		ids = append(ids, q.Dimensions[dimensionInstanceID])
	}
	sources, now := s.world.metricSources(region, ids)
	pageSize := s.metricsPageSize
	if req.MaxDatapoints > 0 {
		pageSize = min(pageSize, req.MaxDatapoints)
	}
	offset := 0
	if req.NextToken != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(req.NextToken, "cw-"))
		if !strings.HasPrefix(req.NextToken, "cw-") || err != nil || n < 0 {
			return nil, apiErrorf(http.StatusBadRequest, "InvalidNextToken", "The service returned an invalid NextToken")
		}
		offset = n
	}
	results := cbor.List{}
	pos := 0 // index of the next datapoint in the flattened answer
	for _, q := range req.Queries {
		if !q.ReturnData {
			continue
		}
		src, found := sources[q.Dimensions[dimensionInstanceID]]
		pts := series(q, src, found, req, now)
		if req.ScanBy == scanDescending {
			slices.Reverse(pts)
		}
		lo := min(max(offset-pos, 0), len(pts))
		hi := min(max(offset+pageSize-pos, 0), len(pts))
		pos += len(pts)
		if lo == hi && offset > 0 && lo == len(pts) {
			continue // fully answered on an earlier page
		}
		ts := make(cbor.List, 0, hi-lo)
		vs := make(cbor.List, 0, hi-lo)
		for _, p := range pts[lo:hi] {
			ts = append(ts, &cbor.Tag{ID: 1, Value: cbor.Float64(float64(p.t.UnixMilli()) / 1000)})
			vs = append(vs, cbor.Float64(p.v))
		}
		label := q.Label
		if label == "" {
			label = q.MetricName
		}
		status := statusComplete
		if hi < len(pts) {
			status = statusPartialData
		}
		results = append(results, cbor.Map{
			"Id": cbor.String(q.ID), "Label": cbor.String(label), "Timestamps": ts, "Values": vs,
			"StatusCode": cbor.String(status),
		})
	}
	out := cbor.Map{"MetricDataResults": results, "Messages": cbor.List{}}
	if offset+pageSize < pos {
		out["NextToken"] = cbor.String("cw-" + strconv.Itoa(offset+pageSize))
	}
	return out, nil
}

// cloudWatchErrorShapes are the modelled error shapes of the codes the
// simulator answers with; other codes are sent as they are.
var cloudWatchErrorShapes = map[string]string{
	"InvalidParameterValue":       "InvalidParameterValueException",
	"InvalidParameterCombination": "InvalidParameterCombinationException",
	"MissingParameter":            "MissingRequiredParameterException",
	"InternalServiceError":        "InternalServiceFault",
	"Throttling":                  "ThrottlingException",
}

func writeCloudWatchError(w http.ResponseWriter, requestID string, e *APIError) {
	shape := e.Code
	if s, ok := cloudWatchErrorShapes[e.Code]; ok {
		shape = s
	}
	fault := "Sender"
	if e.Status >= 500 {
		fault = "Receiver"
	}
	w.Header().Set("Smithy-Protocol", "rpc-v2-cbor")
	w.Header().Set("Content-Type", "application/cbor")
	w.Header().Set("x-amzn-RequestId", requestID)
	w.Header().Set("X-Amzn-Query-Error", e.Code+";"+fault)
	w.WriteHeader(e.Status)
	// Most error shapes name their text "message"; InternalServiceFault
	// (a legacy query shape) names it "Message". Both are sent.
	_, _ = w.Write(cbor.Encode(cbor.Map{
		"__type":  cbor.String("com.amazonaws.cloudwatch#" + shape),
		"message": cbor.String(e.Message),
		"Message": cbor.String(e.Message),
	}))
}
