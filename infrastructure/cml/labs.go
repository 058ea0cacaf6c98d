package cml

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"golang.org/x/sync/errgroup"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// Labs implements application.CMLClient: GET /labs?show_all=true (every lab
// of every user, for an admin), then GET /labs/{id} for each, at most
// Options.LabConcurrency at a time. A lab deleted between the two calls is
// left out; any other failure fails the whole list, so that a partial list
// is never mistaken for the controller's labs.
func (c *Client) Labs(ctx context.Context, endpoint string) ([]worker.Lab, error) {
	req := request{method: http.MethodGet, path: "/labs", query: url.Values{"show_all": {"true"}}, auth: true}
	resp, err := c.call(ctx, endpoint, req)
	if err != nil {
		return nil, err
	}
	ids, err := decodeLabIDs(resp.body)
	if err != nil {
		return nil, decodeFailure(req.op(), resp, err)
	}
	labs := make([]worker.Lab, len(ids))
	found := make([]bool, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.labConcurrency)
	for i, id := range ids {
		g.Go(func() error {
			lab, err := c.lab(gctx, endpoint, id)
			if application.IsCloudNotFound(err) {
				return nil
			}
			if err != nil {
				return err
			}
			labs[i], found[i] = lab, true
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := labs[:0]
	for i, lab := range labs {
		if found[i] {
			out = append(out, lab)
		}
	}
	return out, nil
}

func decodeLabIDs(body []byte) ([]string, error) {
	var raw []text
	if err := decodeArray(body, &raw); err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(raw))
	for _, id := range raw {
		if labIDPattern.MatchString(string(id)) {
			ids = append(ids, string(id))
		}
	}
	return ids, nil
}

func (c *Client) lab(ctx context.Context, endpoint, labID string) (worker.Lab, error) {
	path, err := labPath("cml:GET /labs/{lab_id}", labID, "")
	if err != nil {
		return worker.Lab{}, err
	}
	req := request{method: http.MethodGet, path: path, auth: true}
	resp, err := c.call(ctx, endpoint, req)
	if err != nil {
		return worker.Lab{}, err
	}
	lab, err := decodeLab(resp.body)
	if err != nil {
		return worker.Lab{}, decodeFailure(req.op(), resp, err)
	}
	if lab.ID == "" {
		lab.ID = labID
	}
	return lab, nil
}

// decodeLab maps GET /labs/{id} (LabResponse) to the domain's lab.
func decodeLab(body []byte) (worker.Lab, error) {
	var doc struct {
		ID            text            `json:"id"`
		Title         text            `json:"lab_title"`
		Description   text            `json:"lab_description"`
		State         text            `json:"state"`
		Owner         text            `json:"owner"`
		OwnerUsername text            `json:"owner_username"`
		NodeCount     number          `json:"node_count"`
		LinkCount     number          `json:"link_count"`
		Groups        json.RawMessage `json:"groups"`
		Created       timestamp       `json:"created"`
		Modified      timestamp       `json:"modified"`
	}
	if err := decodeObject(body, &doc); err != nil {
		return worker.Lab{}, err
	}
	lab := worker.Lab{
		ID:          string(doc.ID),
		Title:       string(doc.Title),
		Description: string(doc.Description),
		State:       string(doc.State),
		Owner:       string(doc.OwnerUsername),
		NodeCount:   max(0, doc.NodeCount.int()),
		LinkCount:   max(0, doc.LinkCount.int()),
		Groups:      groupNames(doc.Groups),
		CreatedAt:   doc.Created.t,
		ModifiedAt:  doc.Modified.t,
	}
	if lab.Owner == "" {
		lab.Owner = string(doc.Owner)
	}
	return lab, nil
}

// groupNames reads the pre-2.9 lab groups: objects {id, name, permission}
// (the name, else the id) or plain strings.
func groupNames(raw json.RawMessage) []string {
	var items []json.RawMessage
	if len(raw) == 0 || decodeArray(raw, &items) != nil {
		return nil
	}
	var names []string
	for _, item := range items {
		var g struct {
			ID   text `json:"id"`
			Name text `json:"name"`
		}
		var s text
		switch {
		case decodeObject(item, &g) == nil && g.Name != "":
			names = append(names, string(g.Name))
		case g.ID != "":
			names = append(names, string(g.ID))
		case s.UnmarshalJSON(item) == nil && s != "":
			names = append(names, string(s))
		}
	}
	return names
}

// LabAction implements application.CMLClient: PUT /labs/{id}/start, /stop
// or /wipe (204, or 200 on older controllers); LabDelete is DeleteLab. A
// wipe of a running lab is a CloudInvalid error (400).
func (c *Client) LabAction(ctx context.Context, endpoint, labID string, action worker.LabAction) error {
	switch action {
	case worker.LabStart, worker.LabStop, worker.LabWipe:
	case worker.LabDelete:
		return c.DeleteLab(ctx, endpoint, labID)
	default:
		return &application.CloudError{Kind: application.CloudInvalid, Op: "cml:PUT /labs/{lab_id}/" + string(action),
			Message: fmt.Sprintf("%q is not a lab action this call performs (start, stop, wipe, delete)", action)}
	}
	path, err := labPath("cml:PUT /labs/{lab_id}/"+string(action), labID, string(action))
	if err != nil {
		return err
	}
	_, err = c.call(ctx, endpoint, request{method: http.MethodPut, path: path, auth: true})
	return err
}

// DeleteLab implements application.CMLClient: DELETE /labs/{id}. CML deletes
// only stopped and wiped labs.
func (c *Client) DeleteLab(ctx context.Context, endpoint, labID string) error {
	path, err := labPath("cml:DELETE /labs/{lab_id}", labID, "")
	if err != nil {
		return err
	}
	_, err = c.call(ctx, endpoint, request{method: http.MethodDelete, path: path, auth: true})
	return err
}

// ImportLab implements application.CMLClient: POST /import?title=… with the
// YAML topology as the body; it returns the new lab's id.
func (c *Client) ImportLab(ctx context.Context, endpoint, title, topologyYAML string) (string, error) {
	req := request{method: http.MethodPost, path: "/import", auth: true,
		body: []byte(topologyYAML), contentType: "application/x-yaml"}
	if title != "" {
		req.query = url.Values{"title": {title}}
	}
	resp, err := c.call(ctx, endpoint, req)
	if err != nil {
		return "", err
	}
	var doc struct {
		ID text `json:"id"`
	}
	if err := decodeObject(resp.body, &doc); err != nil {
		return "", decodeFailure(req.op(), resp, err)
	}
	if doc.ID == "" {
		return "", decodeFailure(req.op(), resp, errors.New("no lab id in the answer"))
	}
	return string(doc.ID), nil
}

// DownloadLab implements application.CMLClient: GET /labs/{id}/download,
// whose YAML arrives either as text or as a JSON string.
func (c *Client) DownloadLab(ctx context.Context, endpoint, labID string) (string, error) {
	path, err := labPath("cml:GET /labs/{lab_id}/download", labID, "download")
	if err != nil {
		return "", err
	}
	resp, err := c.call(ctx, endpoint, request{method: http.MethodGet, path: path, auth: true,
		accept: "application/x-yaml, text/plain;q=0.9, application/json;q=0.8"})
	if err != nil {
		return "", err
	}
	return decodeDownload(resp.body), nil
}

func decodeDownload(body []byte) string {
	if trimmed := bytes.TrimSpace(body); len(trimmed) > 0 && trimmed[0] == '"' {
		var s string
		if json.Unmarshal(trimmed, &s) == nil {
			return s
		}
	}
	return string(body)
}
