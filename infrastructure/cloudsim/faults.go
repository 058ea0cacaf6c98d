package cloudsim

import (
	"maps"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"
)

// API names used by the call counters and the fault knobs: the service
// prefix of the SigV4 scope's service ("ec2:", "cloudwatch:") and the
// action or operation, e.g. "ec2:DescribeInstances" or
// "cloudwatch:GetMetricData". They match application.CloudError.Op.
const (
	serviceEC2        = "ec2"
	serviceCloudWatch = "cloudwatch"
)

// Faults are injected failures, for one API or for all of them. A call is
// answered with a throttling error with probability ThrottleRate, else with
// a server error with probability ServerErrorRate, and every answer is
// delayed by Latency. A call that succeeds is delayed after its work is
// done, so a client that gives up (a timeout) still leaves the change made,
// as with the real EC2. The draws come from the simulator's seeded
// generator, so a sequential run with the same seed fails the same calls.
type Faults struct {
	ThrottleRate    float64
	ServerErrorRate float64
	Latency         time.Duration
}

func (f Faults) zero() bool { return f == Faults{} }

type scriptedFault struct {
	code  string
	count int
}

// faultBox holds the fault knobs and the call counters.
type faultBox struct {
	mu       sync.Mutex
	rng      *rand.Rand
	global   Faults
	perAPI   map[string]Faults
	scripted map[string]*scriptedFault // by API; "" = any API
	calls    map[string]int64
}

func newFaultBox(seed uint64) *faultBox {
	return &faultBox{
		rng:      rand.New(rand.NewPCG(seed^0x5bd1e995, seed)),
		perAPI:   map[string]Faults{},
		scripted: map[string]*scriptedFault{},
		calls:    map[string]int64{},
	}
}

// call counts one call of api and decides its fate: a latency to wait and
// possibly an error to answer with instead of doing the work.
func (b *faultBox) call(api string) (time.Duration, *APIError) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls[api]++
	for _, key := range []string{api, ""} {
		if s := b.scripted[key]; s != nil && s.count > 0 {
			s.count--
			if s.count == 0 {
				delete(b.scripted, key)
			}
			f := b.faultsOf(api)
			return f.Latency, scriptedError(api, s.code)
		}
	}
	f := b.faultsOf(api)
	if f.zero() {
		return 0, nil
	}
	throttle, fail := b.rng.Float64(), b.rng.Float64()
	switch {
	case throttle < f.ThrottleRate:
		return f.Latency, throttleError(api)
	case fail < f.ServerErrorRate:
		return f.Latency, serverError(api)
	}
	return f.Latency, nil
}

func (b *faultBox) faultsOf(api string) Faults {
	if f, ok := b.perAPI[api]; ok {
		return f
	}
	return b.global
}

func serviceOf(api string) string {
	s, _, _ := strings.Cut(api, ":")
	return s
}

func throttleError(api string) *APIError {
	if serviceOf(api) == serviceCloudWatch {
		return &APIError{Code: "Throttling", Message: "Rate exceeded", Status: http.StatusBadRequest}
	}
	return &APIError{Code: "RequestLimitExceeded", Message: "Request limit exceeded.", Status: http.StatusServiceUnavailable}
}

func serverError(api string) *APIError {
	if serviceOf(api) == serviceCloudWatch {
		return &APIError{Code: "InternalServiceError", Message: "Internal service error (simulated)", Status: http.StatusInternalServerError}
	}
	return &APIError{Code: "InternalError", Message: "An internal error has occurred (simulated)", Status: http.StatusInternalServerError}
}

// scriptedError builds the answer for an injected error code, with the HTTP
// status AWS uses for it.
func scriptedError(api, code string) *APIError {
	switch code {
	case "RequestLimitExceeded", "Throttling", "ThrottlingException":
		e := throttleError(api)
		e.Code = code
		return e
	case "InternalError", "InternalFailure", "InternalServiceError":
		e := serverError(api)
		e.Code = code
		return e
	}
	status := http.StatusBadRequest
	switch {
	case code == "ServiceUnavailable" || code == "Unavailable":
		status = http.StatusServiceUnavailable
	case code == "AuthFailure" || code == "InvalidClientTokenId" || code == "SignatureDoesNotMatch":
		status = http.StatusUnauthorized
	case code == "UnauthorizedOperation" || strings.HasPrefix(code, "AccessDenied"):
		status = http.StatusForbidden
	}
	return &APIError{Code: code, Message: "injected by the simulator", Status: status}
}

func (b *faultBox) set(api string, f Faults) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if api == "" {
		b.global = f
		return
	}
	b.perAPI[api] = f
}

func (b *faultBox) get() (Faults, map[string]Faults) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.global, maps.Clone(b.perAPI)
}

func (b *faultBox) clear() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.global = Faults{}
	clear(b.perAPI)
	clear(b.scripted)
}

func (b *faultBox) failNext(api, code string, n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n <= 0 {
		delete(b.scripted, api)
		return
	}
	b.scripted[api] = &scriptedFault{code: code, count: n}
}

func (b *faultBox) counts() map[string]int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.calls)
}

func (b *faultBox) count(api string) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if api == serviceEC2 || api == serviceCloudWatch {
		var n int64
		for k, v := range b.calls {
			if serviceOf(k) == api {
				n += v
			}
		}
		return n
	}
	if api == "" {
		var n int64
		for _, v := range b.calls {
			n += v
		}
		return n
	}
	return b.calls[api]
}

func (b *faultBox) reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	clear(b.calls)
}
