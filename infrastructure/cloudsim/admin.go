package cloudsim

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// The admin API under /sim/ (JSON, no authentication: it listens on
// loopback only), for demos and manual tests:
//
//	GET    /sim/                                   endpoints and routes
//	GET    /sim/instances[?region=R]               every instance
//	POST   /sim/instances                          launch out of band (adminLaunch)
//	GET    /sim/instances/{id}                     one instance
//	POST   /sim/instances/{id}/stop|start|terminate
//	POST   /sim/instances/{id}/public-ip           give it another public IP
//	PUT    /sim/instances/{id}/tags                {"set": {...}, "remove": [...]}
//	PUT    /sim/instances/{id}/status-checks       {"system": "impaired", "instance": "ok"}
//	PUT    /sim/instances/{id}/cloudwatch-agent    {"enabled": true}
//	GET    /sim/images?region=R                    the AMIs of a region
//	GET    /sim/calls, DELETE /sim/calls           call counters, reset
//	GET    /sim/faults, PUT /sim/faults, DELETE /sim/faults
//	POST   /sim/faults/next                        {"api": "ec2:RunInstances", "code": "InsufficientInstanceCapacity", "count": 1}

// adminFaults is the JSON form of Faults.
type adminFaults struct {
	ThrottleRate    float64 `json:"throttle_rate"`
	ServerErrorRate float64 `json:"server_error_rate"`
	LatencyMS       int64   `json:"latency_ms"`
}

func (a adminFaults) faults() (Faults, error) {
	if a.ThrottleRate < 0 || a.ThrottleRate > 1 || a.ServerErrorRate < 0 || a.ServerErrorRate > 1 {
		return Faults{}, errors.New("rates must be between 0 and 1")
	}
	if a.LatencyMS < 0 || a.LatencyMS > 600_000 {
		return Faults{}, errors.New("latency_ms must be between 0 and 600000")
	}
	return Faults{ThrottleRate: a.ThrottleRate, ServerErrorRate: a.ServerErrorRate,
		Latency: time.Duration(a.LatencyMS) * time.Millisecond}, nil
}

func toAdminFaults(f Faults) adminFaults {
	return adminFaults{ThrottleRate: f.ThrottleRate, ServerErrorRate: f.ServerErrorRate, LatencyMS: f.Latency.Milliseconds()}
}

type adminFaultSet struct {
	Global adminFaults            `json:"global"`
	APIs   map[string]adminFaults `json:"apis"`
}

type adminLaunch struct {
	Region             string            `json:"region"`
	ImageID            string            `json:"image_id"`
	ImageName          string            `json:"image_name"` // alternative to image_id: a seeded or registered AMI name
	InstanceType       string            `json:"instance_type"`
	SubnetID           string            `json:"subnet_id"`
	KeyName            string            `json:"key_name"`
	SecurityGroupIDs   []string          `json:"security_group_ids"`
	Tags               map[string]string `json:"tags"`
	Count              int               `json:"count"`
	Running            bool              `json:"running"`
	DetailedMonitoring bool              `json:"detailed_monitoring"`
}

func (s *Simulator) adminHandler() http.Handler {
	mux := http.NewServeMux()
	c := s.Console()
	mux.HandleFunc("GET /sim/{$}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{
			"endpoint_url": s.EndpointURL(), "cml_base_url": s.CMLBaseURL(),
			"cml_endpoint_template": s.CMLEndpointTemplate(), "regions": s.Regions(),
			"routes": []string{
				"GET /sim/instances[?region=]", "POST /sim/instances", "GET /sim/instances/{id}",
				"POST /sim/instances/{id}/stop", "POST /sim/instances/{id}/start",
				"POST /sim/instances/{id}/terminate", "POST /sim/instances/{id}/public-ip",
				"PUT /sim/instances/{id}/tags", "PUT /sim/instances/{id}/status-checks",
				"PUT /sim/instances/{id}/cloudwatch-agent", "GET /sim/images?region=",
				"GET /sim/calls", "DELETE /sim/calls", "GET /sim/faults", "PUT /sim/faults",
				"DELETE /sim/faults", "POST /sim/faults/next",
			},
		})
	})
	mux.HandleFunc("GET /sim/instances", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Instances(r.URL.Query().Get("region")))
	})
	mux.HandleFunc("POST /sim/instances", func(w http.ResponseWriter, r *http.Request) {
		var req adminLaunch
		if !readJSON(w, r, &req) {
			return
		}
		if req.ImageID == "" && req.ImageName != "" {
			req.ImageID = ImageID(req.Region, req.ImageName)
		}
		ins, err := c.Launch(req.Region, ConsoleLaunch{
			ImageID: req.ImageID, InstanceType: req.InstanceType, SubnetID: req.SubnetID, KeyName: req.KeyName,
			SecurityGroupIDs: req.SecurityGroupIDs, Tags: req.Tags, Count: req.Count, Running: req.Running,
			DetailedMonitoring: req.DetailedMonitoring,
		})
		if err != nil {
			writeAdminError(w, err)
			return
		}
		writeJSON(w, http.StatusCreated, ins)
	})
	mux.HandleFunc("GET /sim/instances/{id}", func(w http.ResponseWriter, r *http.Request) {
		in, ok := s.Instance(r.PathValue("id"))
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such instance"})
			return
		}
		writeJSON(w, http.StatusOK, in)
	})
	ops := map[string]func(string) error{"stop": c.Stop, "start": c.Start, "terminate": c.Terminate}
	mux.HandleFunc("POST /sim/instances/{id}/{op}", func(w http.ResponseWriter, r *http.Request) {
		id, op := r.PathValue("id"), r.PathValue("op")
		if op == "public-ip" {
			if _, err := c.ChangePublicIP(id); err != nil {
				writeAdminError(w, err)
				return
			}
		} else if fn, ok := ops[op]; ok {
			if err := fn(id); err != nil {
				writeAdminError(w, err)
				return
			}
		} else {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no operation %q", op)})
			return
		}
		in, _ := s.Instance(id)
		writeJSON(w, http.StatusOK, in)
	})
	mux.HandleFunc("PUT /sim/instances/{id}/tags", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Set    map[string]string `json:"set"`
			Remove []string          `json:"remove"`
		}
		if readJSON(w, r, &req) {
			s.answerChange(w, r.PathValue("id"), c.SetTags(r.PathValue("id"), req.Set, req.Remove))
		}
	})
	mux.HandleFunc("PUT /sim/instances/{id}/status-checks", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			System   string `json:"system"`
			Instance string `json:"instance"`
		}
		if readJSON(w, r, &req) {
			s.answerChange(w, r.PathValue("id"), c.SetStatusChecks(r.PathValue("id"), req.System, req.Instance))
		}
	})
	mux.HandleFunc("PUT /sim/instances/{id}/cloudwatch-agent", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Enabled bool `json:"enabled"`
		}
		if readJSON(w, r, &req) {
			s.answerChange(w, r.PathValue("id"), c.SetCloudWatchAgent(r.PathValue("id"), req.Enabled))
		}
	})
	mux.HandleFunc("GET /sim/images", func(w http.ResponseWriter, r *http.Request) {
		region := r.URL.Query().Get("region")
		if !regionNameRE.MatchString(region) {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "region is missing or not a region name"})
			return
		}
		writeJSON(w, http.StatusOK, s.Images(region))
	})
	mux.HandleFunc("GET /sim/calls", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.Calls())
	})
	mux.HandleFunc("DELETE /sim/calls", func(w http.ResponseWriter, _ *http.Request) {
		s.ResetCalls()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /sim/faults", func(w http.ResponseWriter, _ *http.Request) {
		global, per := s.Faults()
		out := adminFaultSet{Global: toAdminFaults(global), APIs: map[string]adminFaults{}}
		for k, v := range per {
			out.APIs[k] = toAdminFaults(v)
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("PUT /sim/faults", func(w http.ResponseWriter, r *http.Request) {
		var req adminFaultSet
		if !readJSON(w, r, &req) {
			return
		}
		global, err := req.Global.faults()
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		per := map[string]Faults{}
		for api, a := range req.APIs {
			f, err := a.faults()
			if err != nil || !strings.Contains(api, ":") {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("faults of %q: %v", api, err)})
				return
			}
			per[api] = f
		}
		s.ClearFaults()
		s.SetFaults("", global)
		for api, f := range per {
			s.SetFaults(api, f)
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("DELETE /sim/faults", func(w http.ResponseWriter, _ *http.Request) {
		s.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /sim/faults/next", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			API   string `json:"api"`
			Code  string `json:"code"`
			Count int    `json:"count"`
		}
		if !readJSON(w, r, &req) {
			return
		}
		if req.Code == "" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "code is required"})
			return
		}
		if req.Count == 0 {
			req.Count = 1
		}
		s.FailNext(req.API, req.Code, req.Count)
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

func (s *Simulator) answerChange(w http.ResponseWriter, id string, err error) {
	if err != nil {
		writeAdminError(w, err)
		return
	}
	in, _ := s.Instance(id)
	writeJSON(w, http.StatusOK, in)
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid JSON body: " + err.Error()})
		return false
	}
	return true
}

func writeAdminError(w http.ResponseWriter, err error) {
	status := http.StatusBadRequest
	body := map[string]string{"error": err.Error()}
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		body["code"] = apiErr.Code
		if strings.HasSuffix(apiErr.Code, ".NotFound") {
			status = http.StatusNotFound
		} else if apiErr.Code == "IncorrectInstanceState" {
			status = http.StatusConflict
		}
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
