package cmlsim

import (
	"regexp"
	"time"
)

// Registration states.
const (
	regNotRegistered = "NOT_REGISTERED"
	regInProgress    = "IN_PROGRESS"
	regCompleted     = "COMPLETED"
	regFailed        = "FAILED"
)

// licenseTokenPattern is CML's validation of a Smart Licensing token.
var licenseTokenPattern = regexp.MustCompile(`^[a-zA-Z\d+/%=-]{1,256}$`)

// licenseTimeLayout is how CML writes licensing times: naive, with a space.
const licenseTimeLayout = "2006-01-02 15:04:05"

type license struct {
	registration  string
	authorization string
	token         string
	attempted     time.Time
	due           time.Time
	succeeded     time.Time
}

// advance completes a registration whose delay has passed and returns the
// license_info event that records it.
func (l *license) advance(now time.Time, badToken string) (Event, bool) {
	if l.registration != regInProgress || now.Before(l.due) {
		return Event{}, false
	}
	if l.token == badToken {
		l.registration = regFailed
	} else {
		l.registration, l.authorization, l.succeeded = regCompleted, "IN_COMPLIANCE", l.due
	}
	l.token = ""
	return Event{Category: "license_info", Timestamp: l.due,
		Data: map[string]any{"registration_status": l.registration, "authorization_status": l.authorization}}, true
}

// register starts an asynchronous registration; false when one is already
// in progress.
func (l *license) register(token string, now time.Time, delay time.Duration) bool {
	if l.registration == regInProgress {
		return false
	}
	l.registration, l.token, l.attempted, l.due = regInProgress, token, now, now.Add(delay)
	return true
}

func naive(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format(licenseTimeLayout)
}

// document renders GET /licensing (reference section 4.1). Node licences in
// use are the running nodes.
func (l *license) document(c *Controller, now time.Time, nodesInUse int) map[string]any {
	registered := l.registration == regCompleted
	smart, virtual, maxNodes := any(nil), any(nil), 20
	regExpires, authExpires := any(nil), naive(now.Add(90*24*time.Hour))
	if registered {
		smart, virtual, maxNodes = "Simulated Smart Account", "Default", 500
		regExpires, authExpires = naive(l.succeeded.Add(365*24*time.Hour)), naive(l.succeeded.Add(90*24*time.Hour))
	}
	failure, success := any(nil), any(nil)
	switch l.registration {
	case regCompleted:
		failure, success = "OK", "SUCCESS"
	case regFailed:
		failure = "FAILED: the token is invalid or expired"
	}
	status := "IN_COMPLIANCE"
	if !registered {
		status = "EVAL"
	}
	return map[string]any{
		"registration": map[string]any{
			"status": l.registration, "smart_account": smart, "virtual_account": virtual,
			"expires": regExpires, "instance_name": nil,
			"register_time": map[string]any{"succeeded": naive(l.succeeded), "attempted": naive(l.attempted),
				"scheduled": nil, "status": nil, "failure": failure, "success": success},
			"renew_time": map[string]any{"succeeded": naive(l.succeeded), "attempted": naive(l.succeeded),
				"scheduled": nil, "status": nil, "failure": nil, "success": success},
		},
		"authorization": map[string]any{
			"status": l.authorization, "expires": authExpires,
			"renew_time": map[string]any{"succeeded": naive(l.succeeded), "attempted": naive(l.succeeded),
				"scheduled": nil, "status": nil, "failure": nil, "success": success},
		},
		"features": []any{
			map[string]any{"id": "regid.2019-10.com.cisco.CML_ENT_BASE,1.0_6cf2a8b7-1b1b-4f8c-9c3a-4f5a2c7d9e10",
				"name": "CML - Enterprise License", "description": "Cisco Modeling Labs - Enterprise License with 20 nodes capacity included",
				"in_use": 1, "status": status, "version": "1.0", "min": 0, "max": 1, "minEndDate": nil, "maxEndDate": nil},
			map[string]any{"id": "regid.2019-10.com.cisco.CML_NODE_COUNT,1.0_4a1f6c3e-8d2b-4e6f-a9c7-0b1d2e3f4a5b",
				"name": "CML - Expansion Node License", "description": "Cisco Modeling Labs - Expansion Node License",
				"in_use": nodesInUse, "status": status, "version": "1.0", "min": 0, "max": maxNodes, "minEndDate": nil, "maxEndDate": nil},
		},
		"reservation_mode": false,
		"transport": map[string]any{
			"default_ssms": "https://smartreceiver.cisco.com/licservice/license",
			"ssms":         "https://smartreceiver.cisco.com/licservice/license",
			"proxy":        map[string]any{"server": nil, "port": nil},
		},
		"udi":             map[string]any{"hostname": "cml-controller", "product_uuid": c.computeID},
		"product_license": map[string]any{"active": "CML_Enterprise", "is_enterprise": true},
	}
}
