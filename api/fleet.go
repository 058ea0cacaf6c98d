package api

import (
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/cmlcloud/cml-cloud-manager/application"
)

// The routes that reach the cloud, a controller or the job system on the
// caller's behalf: import by look-up, refresh, metrics, labs and their
// download, and the jobs overview.

func (s *Server) importWorkers(c echo.Context) error {
	var body application.ImportRequest
	if err := bindJSON(c, MaxJSONBody, &body); err != nil {
		return err
	}
	out, err := s.fleet.Import(c.Request().Context(), body)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if len(out.Imported) > 0 {
		status = http.StatusCreated
	}
	if len(out.Imported) == 1 {
		c.Response().Header().Set(echo.HeaderLocation, "/api/workers/"+out.Imported[0].ID)
	}
	return c.JSON(status, out)
}

func (s *Server) refreshWorker(c echo.Context) error {
	p := newParams(c)
	id := p.id("id")
	if err := p.err(); err != nil {
		return err
	}
	job, err := s.jobs.RefreshWorker(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, job)
}

// maxMetricsStepSeconds bounds the step query parameter.
const maxMetricsStepSeconds = int(application.MaxMetricsRange / time.Second)

func (s *Server) workerMetrics(c echo.Context) error {
	p := newParams(c)
	id := p.id("id")
	q := application.MetricsQuery{
		From: p.time("from", false),
		To:   p.time("to", false),
		Step: time.Duration(p.integer("step", 0, 1, maxMetricsStepSeconds)) * time.Second,
	}
	if err := p.err(); err != nil {
		return err
	}
	series, err := s.telemetry.WorkerMetrics(c.Request().Context(), id, q)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, series)
}

func (s *Server) workerLabs(c echo.Context) error {
	p := newParams(c)
	id := p.id("id")
	if err := p.err(); err != nil {
		return err
	}
	labs, err := s.telemetry.WorkerLabs(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, labs)
}

func (s *Server) downloadLab(c echo.Context) error {
	p := newParams(c)
	id := p.id("id")
	lab := p.labID("lab")
	if err := p.err(); err != nil {
		return err
	}
	topology, err := s.fleet.DownloadLab(c.Request().Context(), id, lab)
	if err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set(echo.HeaderContentDisposition, `attachment; filename="`+safeFilename(lab)+`.yaml"`)
	return c.Blob(http.StatusOK, mimeYAML+"; charset=utf-8", []byte(topology))
}

// safeFilename keeps the characters of a lab id that are safe in a quoted
// Content-Disposition filename (a lab id is already restricted to these).
func safeFilename(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, s)
}

func (s *Server) systemJobs(c echo.Context) error {
	o, err := s.jobs.Jobs(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, o)
}

// RunJobAccepted answers POST /api/system/jobs/{kind}/run.
type RunJobAccepted struct {
	Jobs []application.EnqueuedJob `json:"jobs"`
}

func (s *Server) runJob(c echo.Context) error {
	kind := c.Param("kind")
	if len(kind) > 64 || strings.Trim(kind, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
		return invalid("kind", "is not a job kind")
	}
	jobs, err := s.jobs.RunJob(c.Request().Context(), kind)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, RunJobAccepted{Jobs: jobs})
}
