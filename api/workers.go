package api

import (
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// WorkerPage is GET /api/workers.
type WorkerPage struct {
	Items  []application.WorkerView `json:"items"`
	Total  int                      `json:"total"`
	Limit  int                      `json:"limit"`
	Offset int                      `json:"offset"`
}

// MaxOffset bounds the offset of list queries.
const MaxOffset = 1_000_000

func (s *Server) listWorkers(c echo.Context) error {
	p := newParams(c)
	f := application.WorkerFilter{
		Region:            p.query("region", 32),
		Status:            worker.Status(p.query("status", 32)),
		IncludeTerminated: p.boolean("include_terminated"),
		Query:             p.query("q", 200),
		Limit:             p.integer("limit", application.DefaultPageSize, 1, application.MaxPageSize),
		Offset:            p.integer("offset", 0, 0, MaxOffset),
	}
	if f.Region != "" && !worker.ValidRegion(f.Region) {
		p.problems.Add("region", "%q is not an AWS region name", truncateForMessage(f.Region))
	}
	if f.Status != "" {
		if _, err := worker.ParseStatus(string(f.Status)); err != nil {
			p.problems.Add("status", "%v", err)
		}
	}
	if err := p.err(); err != nil {
		return err
	}
	ctx := c.Request().Context()
	if page, ok, err := s.app.ListWorkersJSON(ctx, f); err != nil {
		return err
	} else if ok {
		return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, page)
	}
	items, total, err := s.app.ListWorkers(ctx, f)
	if err != nil {
		return err
	}
	return writeWorkerPage(c, WorkerPage{Items: items, Total: total, Limit: f.Limit, Offset: f.Offset})
}

// writeWorkerPage writes a page of workers. When every worker carries its
// JSON encoding (the in-memory worker catalog encodes each worker once), the
// page is assembled from those bytes: a fleet listing then costs a copy, not
// an encoding of every worker on every request.
func writeWorkerPage(c echo.Context, page WorkerPage) error {
	size := 64
	for _, v := range page.Items {
		b, ok := v.EncodedJSON()
		if !ok {
			return c.JSON(http.StatusOK, page)
		}
		size += len(b) + 1
	}
	buf := make([]byte, 0, size)
	buf = append(buf, `{"items":[`...)
	for i, v := range page.Items {
		if i > 0 {
			buf = append(buf, ',')
		}
		b, _ := v.EncodedJSON()
		buf = append(buf, b...)
	}
	buf = fmt.Appendf(buf, `],"total":%d,"limit":%d,"offset":%d}`, page.Total, page.Limit, page.Offset)
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, buf)
}

// writeWorker writes one worker, from its cached encoding when it has one.
func writeWorker(c echo.Context, v application.WorkerView) error {
	if b, ok := v.EncodedJSON(); ok {
		return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, b)
	}
	return c.JSON(http.StatusOK, v)
}

func (s *Server) getWorker(c echo.Context) error {
	p := newParams(c)
	id := p.id("id")
	if err := p.err(); err != nil {
		return err
	}
	v, err := s.app.GetWorker(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return writeWorker(c, v)
}

// CreateWorkerRequest is the body of POST /api/workers.
type CreateWorkerRequest struct {
	Name                 string            `json:"name" openapi:"required,maxlen=128" doc:"Display name, also the instance's Name tag."`
	Region               string            `json:"region" openapi:"required" doc:"A managed AWS region."`
	InstanceType         string            `json:"instance_type,omitempty" doc:"EC2 instance type; default from the settings."`
	AMIID                string            `json:"ami_id,omitempty" doc:"AMI id; default: the region's AMI from the settings."`
	AMIName              string            `json:"ami_name,omitempty" doc:"AMI name, recorded for reference."`
	Tags                 map[string]string `json:"tags,omitempty" doc:"Extra instance tags, merged over the default tags."`
	DetailedMonitoring   *bool             `json:"detailed_monitoring,omitempty" doc:"Detailed CloudWatch monitoring (default true)."`
	IdleDetectionEnabled *bool             `json:"idle_detection_enabled,omitempty" doc:"Idle auto-stop (default true)."`
}

func (r CreateWorkerRequest) command() application.CreateWorker {
	return application.CreateWorker{
		Name: r.Name, Region: r.Region, InstanceType: r.InstanceType, AMIID: r.AMIID, AMIName: r.AMIName,
		Tags: r.Tags, DetailedMonitoring: r.DetailedMonitoring, IdleDetectionEnabled: r.IdleDetectionEnabled,
	}
}

func (s *Server) createWorker(c echo.Context) error {
	var body CreateWorkerRequest
	if err := bindJSON(c, MaxJSONBody, &body); err != nil {
		return err
	}
	res, err := s.app.CreateWorker(c.Request().Context(), body.command())
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, "/api/workers/"+res.ID)
	return c.JSON(http.StatusAccepted, res)
}

// workerCommand runs a command on the worker of the path: accepted (202)
// when it changed something that the background jobs carry out, else 200.
func (s *Server) workerCommand(accepted bool, run func(c echo.Context, id string) (application.Result, error)) echo.HandlerFunc {
	return func(c echo.Context) error {
		p := newParams(c)
		id := p.id("id")
		if err := p.err(); err != nil {
			return err
		}
		res, err := run(c, id)
		if err != nil {
			return err
		}
		return commandResponse(c, res, accepted)
	}
}

// commandResponse answers a command: 202 when it changed something that is
// carried out in the background, 200 otherwise (and always 200 with
// "changed": false when it changed nothing).
func commandResponse(c echo.Context, res application.Result, accepted bool) error {
	status := http.StatusOK
	if accepted && res.Changed {
		status = http.StatusAccepted
	}
	return c.JSON(status, res)
}

func (s *Server) terminateWorker(c echo.Context, id string) (application.Result, error) {
	return s.app.TerminateWorker(c.Request().Context(), id)
}

func (s *Server) removeWorker(c echo.Context, id string) (application.Result, error) {
	return s.app.RemoveWorker(c.Request().Context(), id)
}

func (s *Server) startWorker(c echo.Context, id string) (application.Result, error) {
	return s.app.StartWorker(c.Request().Context(), id)
}

func (s *Server) stopWorker(c echo.Context, id string) (application.Result, error) {
	return s.app.StopWorker(c.Request().Context(), id)
}

// TagsRequest is the body of PUT /api/workers/{id}/tags.
type TagsRequest struct {
	Tags *map[string]string `json:"tags" openapi:"required" doc:"The complete set of user tags; the product's own tags are kept."`
}

func (s *Server) replaceTags(c echo.Context, id string) (application.Result, error) {
	var body TagsRequest
	if err := bindJSON(c, MaxJSONBody, &body); err != nil {
		return application.Result{}, err
	}
	if body.Tags == nil {
		return application.Result{}, invalid("tags", "is required (an object; {} removes every user tag)")
	}
	return s.app.ReplaceWorkerTags(c.Request().Context(), id, *body.Tags)
}

// MonitoringRequest is the body of PUT /api/workers/{id}/monitoring.
type MonitoringRequest struct {
	Enabled *bool `json:"enabled" openapi:"required" doc:"Detailed (1-minute) CloudWatch monitoring."`
}

func (s *Server) setMonitoring(c echo.Context, id string) (application.Result, error) {
	var body MonitoringRequest
	if err := bindJSON(c, MaxJSONBody, &body); err != nil {
		return application.Result{}, err
	}
	if body.Enabled == nil {
		return application.Result{}, invalid("enabled", "is required")
	}
	return s.app.SetDetailedMonitoring(c.Request().Context(), id, *body.Enabled)
}

// IdleDetectionRequest is the body of PUT /api/workers/{id}/idle-detection.
type IdleDetectionRequest struct {
	Enabled        *bool  `json:"enabled" openapi:"required" doc:"Whether idle detection may stop the worker."`
	TimeoutMinutes *int64 `json:"timeout_minutes,omitempty" doc:"Per-worker idle timeout in minutes (only when enabling); absent or 0 uses the global timeout."`
}

func (r IdleDetectionRequest) check() (enabled bool, timeout time.Duration, err error) {
	if r.Enabled == nil {
		return false, 0, invalid("enabled", "is required")
	}
	if r.TimeoutMinutes != nil && *r.TimeoutMinutes != 0 {
		minM, maxM := int64(worker.MinIdleTimeout/time.Minute), int64(worker.MaxIdleTimeout/time.Minute)
		switch {
		case !*r.Enabled:
			return false, 0, invalid("timeout_minutes", "can only be set when enabling idle detection")
		case *r.TimeoutMinutes < minM || *r.TimeoutMinutes > maxM:
			return false, 0, invalid("timeout_minutes", "must be 0 (global timeout) or between "+itoa(minM)+" and "+itoa(maxM))
		}
		timeout = time.Duration(*r.TimeoutMinutes) * time.Minute
	}
	return *r.Enabled, timeout, nil
}

func (s *Server) setIdleDetection(c echo.Context, id string) (application.Result, error) {
	var body IdleDetectionRequest
	if err := bindJSON(c, MaxJSONBody, &body); err != nil {
		return application.Result{}, err
	}
	enabled, timeout, err := body.check()
	if err != nil {
		return application.Result{}, err
	}
	return s.app.SetIdleDetection(c.Request().Context(), id, enabled, timeout)
}

// LicenseRequest is the body of POST /api/workers/{id}/license.
type LicenseRequest struct {
	Token      string `json:"token" openapi:"required,maxlen=4096" doc:"Smart Licensing token; it is sealed before it is recorded and never returned."`
	Reregister bool   `json:"reregister,omitempty" doc:"Register again although a licence is registered."`
}

func (s *Server) registerLicense(c echo.Context, id string) (application.Result, error) {
	var body LicenseRequest
	if err := bindJSON(c, MaxJSONBody, &body); err != nil {
		return application.Result{}, err
	}
	return s.app.RequestLicenseRegistration(c.Request().Context(), id, body.Token, body.Reregister)
}

func (s *Server) deregisterLicense(c echo.Context, id string) (application.Result, error) {
	return s.app.RequestLicenseDeregistration(c.Request().Context(), id)
}

func (s *Server) idleStatus(c echo.Context) error {
	p := newParams(c)
	id := p.id("id")
	if err := p.err(); err != nil {
		return err
	}
	st, err := s.app.IdleStatus(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, st)
}
