package cml

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"

	"github.com/cmlcloud/cml-cloud-manager/application"
)

// Licensing implements application.CMLClient.
func (c *Client) Licensing(ctx context.Context, endpoint string) (application.CMLLicensing, error) {
	req := request{method: http.MethodGet, path: "/licensing", auth: true}
	resp, err := c.call(ctx, endpoint, req)
	if err != nil {
		return application.CMLLicensing{}, err
	}
	l, err := decodeLicensing(resp.body)
	if err != nil {
		return application.CMLLicensing{}, decodeFailure(req.op(), resp, err)
	}
	return l, nil
}

// decodeLicensing reads the nested registration and authorization states of
// GET /licensing (registration.status, not a flat registration_status) and
// keeps the whole document in Raw.
func decodeLicensing(body []byte) (application.CMLLicensing, error) {
	var doc struct {
		Registration struct {
			Status         text `json:"status"`
			SmartAccount   text `json:"smart_account"`
			VirtualAccount text `json:"virtual_account"`
		} `json:"registration"`
		Authorization struct {
			Status text `json:"status"`
		} `json:"authorization"`
		ProductLicense struct {
			Active       text `json:"active"`
			IsEnterprise flag `json:"is_enterprise"`
		} `json:"product_license"`
	}
	if err := decodeObject(body, &doc); err != nil {
		return application.CMLLicensing{}, err
	}
	var raw bytes.Buffer
	if err := json.Compact(&raw, body); err != nil {
		return application.CMLLicensing{}, err
	}
	return application.CMLLicensing{
		RegistrationStatus:  string(doc.Registration.Status),
		AuthorizationStatus: string(doc.Authorization.Status),
		SmartAccount:        string(doc.Registration.SmartAccount),
		VirtualAccount:      string(doc.Registration.VirtualAccount),
		ProductLicense:      string(doc.ProductLicense.Active),
		IsEnterprise:        doc.ProductLicense.IsEnterprise.v,
		Raw:                 json.RawMessage(raw.Bytes()),
	}, nil
}

// RegisterLicense implements application.CMLClient: POST
// /licensing/registration, accepted with 204; the registration then
// completes asynchronously (poll Licensing). A registration already in
// progress is a CloudConflict (409).
func (c *Client) RegisterLicense(ctx context.Context, endpoint, token string, reregister bool) error {
	body, err := json.Marshal(struct {
		Token      string `json:"token"`
		Reregister bool   `json:"reregister"`
	}{token, reregister})
	if err != nil {
		return err
	}
	_, err = c.call(ctx, endpoint, request{
		method: http.MethodPost, path: "/licensing/registration", auth: true,
		body: body, contentType: "application/json",
	})
	return err
}

// DeregisterLicense implements application.CMLClient: DELETE
// /licensing/deregistration answers 204 when done and 202 when CML could only
// deregister locally. A controller that is already deregistered answers 400,
// a CloudInvalid error with Code "400".
func (c *Client) DeregisterLicense(ctx context.Context, endpoint string) (application.CMLDeregistration, error) {
	resp, err := c.call(ctx, endpoint, request{method: http.MethodDelete, path: "/licensing/deregistration", auth: true})
	if err != nil {
		return application.CMLDeregistration{}, err
	}
	return application.CMLDeregistration{LocalOnly: resp.status == http.StatusAccepted}, nil
}
