package api

import (
	"errors"
	"net/http"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// LabImportRequest is the JSON form of POST /api/workers/{id}/labs.
type LabImportRequest struct {
	Title string `json:"title,omitempty" openapi:"maxlen=255" doc:"Title of the new lab; default: the topology's own."`
	YAML  string `json:"yaml" openapi:"required" doc:"The CML topology, as YAML (at most 4 MiB)."`
}

// LabActionAccepted answers a lab request: the command's result and the id
// of the request, which the lab_action_completed or lab_action_failed event
// will carry.
type LabActionAccepted struct {
	application.Result
	RequestID string           `json:"request_id"`
	Action    worker.LabAction `json:"action"`
	LabID     string           `json:"lab_id,omitempty"`
}

func (s *Server) importLab(c echo.Context) error {
	p := newParams(c)
	id := p.id("id")
	if err := p.err(); err != nil {
		return err
	}
	in := application.LabAction{Action: worker.LabImport}
	switch mt := mediaType(c.Request()); {
	case isJSONMedia(mt):
		var body LabImportRequest
		if err := bindJSON(c, MaxLabBody, &body); err != nil {
			return err
		}
		in.Title, in.YAML = body.Title, body.YAML
	case mt == mimeYAML || mt == "application/x-yaml" || mt == "text/yaml":
		in.Title = p.query("title", 255)
		if err := p.err(); err != nil {
			return err
		}
		raw, err := readBody(c, MaxLabBody)
		if err != nil {
			return err
		}
		if !utf8.Valid(raw) {
			return invalid("yaml", "must be UTF-8 text")
		}
		in.YAML = string(raw)
	default:
		return unsupportedMedia(mimeYAML, mimeJSON)
	}
	return s.labAction(c, id, in)
}

// labActionHandler serves POST .../labs/{lab}/start|stop|wipe and DELETE
// .../labs/{lab}.
func (s *Server) labActionHandler(action worker.LabAction) echo.HandlerFunc {
	return func(c echo.Context) error {
		p := newParams(c)
		id := p.id("id")
		lab := p.labID("lab")
		if err := p.err(); err != nil {
			return err
		}
		return s.labAction(c, id, application.LabAction{Action: action, LabID: lab})
	}
}

func (s *Server) labAction(c echo.Context, id string, in application.LabAction) error {
	res, requestID, err := s.app.RequestLabAction(c.Request().Context(), id, in)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, LabActionAccepted{Result: res, RequestID: requestID, Action: in.Action, LabID: in.LabID})
}

// readBodyProblem maps the error of reading a raw body.
func readBodyProblem(err error) *Problem {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return jsonProblem(err)
	}
	return NewProblem(http.StatusBadRequest, CodeBadRequest, "The body could not be read.")
}
