package cml

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"

	"github.com/cmlcloud/cml-cloud-manager/application"
)

// TelemetryEvents implements application.CMLClient: GET /telemetry/events,
// the controller's whole history. Timestamps without a zone are UTC; events
// whose timestamp is unreadable are left out (and counted in a log line).
func (c *Client) TelemetryEvents(ctx context.Context, endpoint string) ([]application.CMLTelemetryEvent, error) {
	req := request{method: http.MethodGet, path: "/telemetry/events", auth: true}
	resp, err := c.call(ctx, endpoint, req)
	if err != nil {
		return nil, err
	}
	events, skipped, err := decodeTelemetry(resp.body)
	if err != nil {
		return nil, decodeFailure(req.op(), resp, err)
	}
	if skipped > 0 {
		c.log.WarnContext(ctx, "CML telemetry events without a readable timestamp left out", "endpoint", endpoint, "count", skipped)
	}
	return events, nil
}

// decodeTelemetry reads the telemetry event list; skipped counts the entries
// left out (not an object, no category, unreadable timestamp).
func decodeTelemetry(body []byte) (events []application.CMLTelemetryEvent, skipped int, err error) {
	var items []json.RawMessage
	if err := decodeArray(body, &items); err != nil {
		return nil, 0, err
	}
	events = make([]application.CMLTelemetryEvent, 0, len(items))
	for _, item := range items {
		var doc struct {
			Category  text            `json:"category"`
			Timestamp timestamp       `json:"timestamp"`
			Data      json.RawMessage `json:"data"`
		}
		if decodeObject(item, &doc) != nil || doc.Category == "" || !doc.Timestamp.ok {
			skipped++
			continue
		}
		e := application.CMLTelemetryEvent{Category: string(doc.Category), Timestamp: doc.Timestamp.t}
		if data := bytes.TrimSpace(doc.Data); len(data) > 0 && string(data) != "null" {
			e.Data = json.RawMessage(data)
			var d struct {
				UserID text `json:"user_id"`
			}
			if decodeObject(data, &d) == nil {
				e.UserID = string(d.UserID)
			}
		}
		events = append(events, e)
	}
	return events, skipped, nil
}
