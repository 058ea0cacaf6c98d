package api

import (
	"encoding/csv"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/cmlcloud/cml-cloud-manager/application"
)

func (s *Server) workerHistory(c echo.Context) error {
	p := newParams(c)
	id := p.id("id")
	q := application.HistoryQuery{
		TypePrefix: p.query("type", application.MaxTypePrefixLength),
		Cursor:     p.query("cursor", 64),
		Limit:      p.integer("limit", application.DefaultPageSize, 1, application.MaxPageSize),
	}
	if err := p.err(); err != nil {
		return err
	}
	page, err := s.history.WorkerHistory(c.Request().Context(), id, q)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, page)
}

func (s *Server) workerStateAt(c echo.Context) error {
	p := newParams(c)
	id := p.id("id")
	at := p.time("at", true)
	if err := p.err(); err != nil {
		return err
	}
	snap, err := s.history.WorkerStateAt(c.Request().Context(), id, at)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, snap)
}

// auditCSVColumns are the columns of the CSV export, in order.
var auditCSVColumns = []string{
	"position", "occurred_at", "recorded_at", "event_type", "aggregate_type", "aggregate_id", "worker_id",
	"actor_type", "actor_subject", "actor_username", "correlation_id", "causation_id", "command", "summary",
	"event_id", "data",
}

func (s *Server) audit(c echo.Context) error {
	p := newParams(c)
	q := application.AuditQuery{
		WorkerID:   p.query("worker", 64),
		Actor:      p.query("actor", 256),
		TypePrefix: p.query("type", application.MaxTypePrefixLength),
		From:       p.time("from", false),
		To:         p.time("to", false),
		Cursor:     p.query("cursor", 64),
	}
	format := p.query("format", 8)
	switch format {
	case "", "json", "csv":
	default:
		p.problems.Add("format", "must be json or csv")
	}
	csvOut := format == "csv" || (format == "" && prefersCSV(c.Request()))
	if csvOut {
		q.Limit = p.integer("limit", 0, 0, 1<<30)
	} else {
		q.Limit = p.integer("limit", application.DefaultPageSize, 1, application.MaxPageSize)
	}
	if err := p.err(); err != nil {
		return err
	}
	ctx := c.Request().Context()
	if !csvOut {
		page, err := s.history.Audit(ctx, q)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, page)
	}
	return s.exportAuditCSV(c, q)
}

// prefersCSV reports whether the Accept header asks for CSV over JSON.
func prefersCSV(r *http.Request) bool {
	accept := r.Header.Get(echo.HeaderAccept)
	return strings.Contains(accept, mimeCSV) && !strings.Contains(accept, mimeJSON)
}

// exportAuditCSV streams the export: rows are written and flushed batch by
// batch as they are read, so memory stays flat whatever the size. An error
// before the first row is a problem+json response; a later one cuts the
// stream short and is logged.
func (s *Server) exportAuditCSV(c echo.Context, q application.AuditQuery) error {
	ctx := c.Request().Context()
	res := c.Response()
	started := false
	w := csv.NewWriter(res)
	row := make([]string, len(auditCSVColumns))
	n := 0
	start := func() error {
		started = true
		h := res.Header()
		h.Set(echo.HeaderContentType, "text/csv; charset=utf-8")
		h.Set(echo.HeaderContentDisposition, `attachment; filename="audit-`+time.Now().UTC().Format("20060102T150405Z")+`.csv"`)
		h.Set(echo.HeaderCacheControl, "no-store")
		res.WriteHeader(http.StatusOK)
		return w.Write(auditCSVColumns)
	}
	err := s.history.ExportAudit(ctx, q, func(e application.AuditEntry) error {
		if !started {
			if err := start(); err != nil {
				return err
			}
		}
		row[0], row[1], row[2] = e.Position, e.OccurredAt.Format(time.RFC3339Nano), e.RecordedAt.Format(time.RFC3339Nano)
		row[3], row[4], row[5], row[6] = e.EventType, e.AggregateType, e.AggregateID, e.WorkerID
		row[7], row[8], row[9] = e.Actor.Type, csvSafe(e.Actor.Subject), csvSafe(e.Actor.Username)
		row[10], row[11], row[12], row[13] = csvSafe(e.CorrelationID), csvSafe(e.CausationID), e.Command, csvSafe(e.Summary)
		row[14], row[15] = e.EventID, csvSafe(string(e.Data))
		if err := w.Write(row); err != nil {
			return err
		}
		if n++; n%application.ExportBatch == 0 {
			w.Flush()
			if err := w.Error(); err != nil {
				return err
			}
			res.Flush()
		}
		return nil
	})
	if err != nil {
		return err // before the first row: a problem; after: logged by the error handler
	}
	if !started {
		if err := start(); err != nil {
			return err
		}
	}
	w.Flush()
	return w.Error()
}

// csvSafe neutralises a cell that a spreadsheet would run as a formula
// (CSV injection): values starting with = + - @ or a control character get
// a leading apostrophe.
func csvSafe(s string) string {
	if s == "" {
		return s
	}
	switch s[0] {
	case '=', '+', '-', '@', '\t', '\r', '\n':
		return "'" + s
	}
	return s
}
