package cloudsim

import (
	"encoding/xml"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/aws/smithy-go/encoding/cbor"
	"github.com/stretchr/testify/require"
)

// globRegexp is the reference semantics of an EC2 filter pattern.
func globRegexp(pattern string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString(`(?s)\A`)
	r := []rune(pattern)
	for i := 0; i < len(r); i++ {
		switch {
		case r[i] == '*':
			b.WriteString(".*")
		case r[i] == '?':
			b.WriteString(".")
		case r[i] == '\\' && i+1 < len(r):
			i++
			b.WriteString(regexp.QuoteMeta(string(r[i])))
		default:
			b.WriteString(regexp.QuoteMeta(string(r[i])))
		}
	}
	b.WriteString(`\z`)
	return regexp.MustCompile(b.String())
}

func TestGlobMatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"cisco-cml2.9-*", "cisco-cml2.9-lablet-v0.1.7", true},
		{"cisco-cml2.9-*", "cisco-cml2.8-lablet", false},
		{"*lablet*", "cisco-cml2.9-lablet-v0.1.7", true},
		{"cml?", "cml2", true},
		{"cml?", "cml", false},
		{"", "", true},
		{"*", "", true},
		{`a\*b`, "a*b", true},
		{`a\*b`, "axb", false},
		{"a*b*c", "aXbYbZc", true},
		{"a*b*c", "aXbYbZ", false},
		{"exact", "exact", true},
		{"exact", "exactly", false},
	}
	for _, tc := range tests {
		require.Equal(t, tc.want, globMatch(tc.pattern, tc.s), "%q ~ %q", tc.pattern, tc.s)
		require.Equal(t, tc.want, globRegexp(tc.pattern).MatchString(tc.s), "oracle %q ~ %q", tc.pattern, tc.s)
	}
}

func FuzzGlobMatch(f *testing.F) {
	for _, s := range [][2]string{{"cisco-*", "cisco-cml"}, {"a?c", "abc"}, {`\*`, "*"}, {"**a", "ba"}, {`x\`, `x\`}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, s string) {
		if !utf8.ValidString(pattern) || !utf8.ValidString(s) || len(pattern) > 64 || len(s) > 256 {
			return
		}
		require.Equal(t, globRegexp(pattern).MatchString(s), globMatch(pattern, s), "%q ~ %q", pattern, s)
	})
}

func FuzzEC2Query(f *testing.F) {
	for _, body := range []string{
		"Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=tag%3AManagedBy&Filter.1.Value.1=cml-cloud-manager&MaxResults=5",
		"Action=RunInstances&Version=2016-11-15&ImageId=" + cmlImage + "&MinCount=1&MaxCount=2&ClientToken=t&TagSpecification.1.ResourceType=instance&TagSpecification.1.Tag.1.Key=a&TagSpecification.1.Tag.1.Value=b",
		"Action=StopInstances&Version=2016-11-15&InstanceId.1=i-0123456789abcdef0",
		"Action=CreateTags&Version=2016-11-15&ResourceId.1=i-1&Tag.1.Key=k",
		"Action=DescribeImages&Version=2016-11-15&Filter.1.Name=name&Filter.1.Value.1=cisco-*&Owner.1=self",
		"Action=DescribeInstanceStatus&Version=2016-11-15&IncludeAllInstances=true&NextToken=sim-zz",
		"Action=MonitorInstances&Version=2016-11-15&InstanceId.01=x&InstanceId.1=",
		"%zz&&==",
	} {
		f.Add(body)
	}
	sim := New(Options{Clock: NewManualClock(t0), Logger: quietLogger()})
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := httptest.NewRecorder()
		sim.serveEC2(rec, req, testRegion)
		require.True(t, rec.Code == http.StatusOK || (rec.Code >= 400 && rec.Code < 600), "status %d", rec.Code)
		if rec.Code != http.StatusOK {
			var doc xmlErrorResponse
			require.NoError(t, xml.Unmarshal(rec.Body.Bytes(), &doc), rec.Body.String())
			require.Len(t, doc.Errors, 1)
			require.NotEmpty(t, doc.Errors[0].Code)
			return
		}
		require.NoError(t, xml.Unmarshal(rec.Body.Bytes(), new(struct{ XMLName xml.Name })), rec.Body.String())
	})
}

func FuzzGetMetricData(f *testing.F) {
	ts := func(sec float64) cbor.Value { return &cbor.Tag{ID: 1, Value: cbor.Float64(sec)} }
	query := cbor.Map{"Id": cbor.String("c0"), "MetricStat": cbor.Map{
		"Metric": cbor.Map{"Namespace": cbor.String("AWS/EC2"), "MetricName": cbor.String("CPUUtilization"),
			"Dimensions": cbor.List{cbor.Map{"Name": cbor.String("InstanceId"), "Value": cbor.String("i-0123456789abcdef0")}}},
		"Period": cbor.Uint(60), "Stat": cbor.String("Average")}}
	f.Add(cbor.Encode(cbor.Map{"MetricDataQueries": cbor.List{query}, "StartTime": ts(1.7e9), "EndTime": ts(1.7e9 + 3600),
		"ScanBy": cbor.String("TimestampDescending")}))
	f.Add(cbor.Encode(cbor.Map{"MetricDataQueries": cbor.List{query, query}, "StartTime": ts(1), "EndTime": ts(0)}))
	f.Add(cbor.Encode(cbor.Map{"MetricDataQueries": cbor.List{query}, "StartTime": &cbor.Tag{ID: 1, Value: cbor.Uint(5)},
		"EndTime": &cbor.Tag{ID: 1, Value: cbor.NegInt(3)}, "NextToken": cbor.String("cw-3"), "MaxDatapoints": cbor.Uint(2)}))
	f.Add([]byte{0xbf, 0xff})
	f.Add([]byte{0xff})
	sim := New(Options{Clock: NewManualClock(t0), Logger: quietLogger()})
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeGetMetricData(body)
		if err != nil {
			require.GreaterOrEqual(t, err.Status, 400)
			require.NotEmpty(t, err.Code)
			return
		}
		require.NotEmpty(t, req.Queries)
		require.LessOrEqual(t, len(req.Queries), maxMetricDataQueries)
		require.True(t, req.Start.Before(req.End))
		for _, q := range req.Queries {
			require.Regexp(t, metricIDRE, q.ID)
			require.Positive(t, q.Period)
		}
		out, apiErr := sim.getMetricData(testRegion, req)
		if apiErr == nil {
			_, err := cbor.Decode(cbor.Encode(out))
			require.NoError(t, err)
		}
	})
}
