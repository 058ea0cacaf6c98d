package cml

import (
	"context"
	"math"
	"net/http"

	"github.com/cmlcloud/cml-cloud-manager/application"
)

// SystemInformation implements application.CMLClient. It needs no login.
func (c *Client) SystemInformation(ctx context.Context, endpoint string) (application.CMLSystemInformation, error) {
	req := request{method: http.MethodGet, path: "/system_information"}
	resp, err := c.call(ctx, endpoint, req)
	if err != nil {
		return application.CMLSystemInformation{}, err
	}
	info, err := decodeSystemInformation(resp.body)
	if err != nil {
		return application.CMLSystemInformation{}, decodeFailure(req.op(), resp, err)
	}
	return info, nil
}

func decodeSystemInformation(body []byte) (application.CMLSystemInformation, error) {
	var doc struct {
		Version text `json:"version"`
		Ready   flag `json:"ready"`
	}
	if err := decodeObject(body, &doc); err != nil {
		return application.CMLSystemInformation{}, err
	}
	return application.CMLSystemInformation{Version: string(doc.Version), Ready: doc.Ready.v}, nil
}

// SystemHealth implements application.CMLClient.
func (c *Client) SystemHealth(ctx context.Context, endpoint string) (application.CMLSystemHealth, error) {
	req := request{method: http.MethodGet, path: "/system_health", auth: true}
	resp, err := c.call(ctx, endpoint, req)
	if err != nil {
		return application.CMLSystemHealth{}, err
	}
	h, err := decodeSystemHealth(resp.body)
	if err != nil {
		return application.CMLSystemHealth{}, decodeFailure(req.op(), resp, err)
	}
	return h, nil
}

func decodeSystemHealth(body []byte) (application.CMLSystemHealth, error) {
	var doc struct {
		Valid        flag `json:"valid"`
		IsLicensed   flag `json:"is_licensed"`
		IsEnterprise flag `json:"is_enterprise"`
		Computes     map[string]struct {
			AdmissionState text `json:"admission_state"`
		} `json:"computes"`
	}
	if err := decodeObject(body, &doc); err != nil {
		return application.CMLSystemHealth{}, err
	}
	h := application.CMLSystemHealth{
		Valid:        doc.Valid.v,
		IsLicensed:   doc.IsLicensed.v,
		IsEnterprise: doc.IsEnterprise.v,
		Computes:     len(doc.Computes),
	}
	for _, compute := range doc.Computes {
		if compute.AdmissionState == "READY" {
			h.ComputesReady++
		}
	}
	return h, nil
}

// SystemStats implements application.CMLClient.
func (c *Client) SystemStats(ctx context.Context, endpoint string) (application.CMLSystemStats, error) {
	req := request{method: http.MethodGet, path: "/system_stats", auth: true}
	resp, err := c.call(ctx, endpoint, req)
	if err != nil {
		return application.CMLSystemStats{}, err
	}
	s, err := decodeSystemStats(resp.body)
	if err != nil {
		return application.CMLSystemStats{}, decodeFailure(req.op(), resp, err)
	}
	return s, nil
}

type cpuStats struct {
	Count   number `json:"count"`
	Percent number `json:"percent"`
}

type usage struct {
	Used  number `json:"used"`
	Free  number `json:"free"`
	Total number `json:"total"`
}

// bytes returns the used and total bytes (used from "used", else from
// total − free); ok is false without a positive total.
func (u usage) bytes() (used, total float64, ok bool) {
	total, ok = within(u.Total, maxBytes)
	if !ok || total == 0 {
		return 0, 0, false
	}
	if v, ok := within(u.Used, maxBytes); ok {
		return v, total, true
	}
	if free, ok := within(u.Free, maxBytes); ok {
		return max(total-free, 0), total, true
	}
	return 0, 0, false
}

type domInfo struct {
	TotalNodes   number `json:"total_nodes"`
	RunningNodes number `json:"running_nodes"`
}

type resourceStats struct {
	CPU     cpuStats `json:"cpu"`
	Memory  usage    `json:"memory"`
	Disk    usage    `json:"disk"`
	DomInfo domInfo  `json:"dominfo"`
}

// statsSum adds up the resources of the computes.
type statsSum struct {
	cpus                     float64
	cpuWeighted, cpuWeight   float64
	cpuPlain                 float64
	cpuPlainN                int
	memUsed, memTotal        float64
	memOK                    bool
	diskUsed, diskTotal      float64
	diskOK                   bool
	nodesRunning, nodesTotal int
}

// Limits beyond which a reported value is taken as garbage and ignored.
const (
	maxCPUs  = 1e6
	maxBytes = 1e18 // an exabyte
	maxNodes = 1e9
)

// within returns n's value when it is reported and in [0, limit].
func within(n number, limit float64) (float64, bool) {
	if !n.ok || n.v < 0 || n.v > limit {
		return 0, false
	}
	return n.v, true
}

func (s *statsSum) add(r resourceStats) {
	count, hasCount := within(r.CPU.Count, maxCPUs)
	if hasCount {
		s.cpus += count
	}
	if p, ok := within(r.CPU.Percent, 100); ok {
		if hasCount && count > 0 {
			s.cpuWeighted += p * count
			s.cpuWeight += count
		}
		s.cpuPlain += p
		s.cpuPlainN++
	}
	if used, total, ok := r.Memory.bytes(); ok {
		s.memUsed += used
		s.memTotal += total
		s.memOK = true
	}
	if used, total, ok := r.Disk.bytes(); ok {
		s.diskUsed += used
		s.diskTotal += total
		s.diskOK = true
	}
	if n, ok := within(r.DomInfo.RunningNodes, maxNodes); ok {
		s.nodesRunning += int(n)
	}
	if n, ok := within(r.DomInfo.TotalNodes, maxNodes); ok {
		s.nodesTotal += int(n)
	}
}

func (s *statsSum) result() application.CMLSystemStats {
	out := application.CMLSystemStats{
		CPUCount:     int(s.cpus),
		MemoryTotal:  s.memTotal,
		DiskTotal:    s.diskTotal,
		NodesRunning: s.nodesRunning,
		NodesTotal:   s.nodesTotal,
	}
	switch {
	case s.cpuWeight > 0:
		out.CPUPercent = percent(s.cpuWeighted / s.cpuWeight)
	case s.cpuPlainN > 0:
		out.CPUPercent = percent(s.cpuPlain / float64(s.cpuPlainN))
	}
	if s.memOK {
		out.MemoryPercent = percent(100 * s.memUsed / s.memTotal)
	}
	if s.diskOK {
		out.DiskPercent = percent(100 * s.diskUsed / s.diskTotal)
	}
	return out
}

// percent clamps p into 0–100; NaN is no value.
func percent(p float64) *float64 {
	if math.IsNaN(p) {
		return nil
	}
	p = min(max(p, 0), 100)
	return &p
}

// decodeSystemStats sums the computes of GET /system_stats: CPU count, bytes
// used and total, nodes; percentages come from used/total (CPU: the
// CPU-count-weighted mean of the computes). Without computes it falls back to
// the "all" section.
func decodeSystemStats(body []byte) (application.CMLSystemStats, error) {
	var doc struct {
		Computes map[string]struct {
			Stats resourceStats `json:"stats"`
		} `json:"computes"`
		All resourceStats `json:"all"`
	}
	if err := decodeObject(body, &doc); err != nil {
		return application.CMLSystemStats{}, err
	}
	var sum statsSum
	if len(doc.Computes) > 0 {
		for _, compute := range doc.Computes {
			sum.add(compute.Stats)
		}
	} else {
		sum.add(doc.All)
	}
	return sum.result(), nil
}
