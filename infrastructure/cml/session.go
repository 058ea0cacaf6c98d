package cml

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/cmlcloud/cml-cloud-manager/application"
)

// maxRefreshMargin is how long before its expiry a token is replaced at most;
// shorter-lived tokens are replaced when a tenth of their lifetime is left.
const maxRefreshMargin = time.Minute

// sessionIdle is how long an unused session with no valid token is kept.
const sessionIdle = time.Hour

// session is the cached token of one controller.
type session struct {
	mu        sync.Mutex
	token     string
	refreshAt time.Time // zero: the token's lifetime is unknown; keep it until a 401
	lastUsed  time.Time
	// userID is the controller's id of the user the client logs in as (from
	// /auth_extended); "" until the first login.
	userID string
}

func (s *session) valid(now time.Time, stale string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastUsed = now
	if s.token == "" || s.token == stale {
		return "", false
	}
	if !s.refreshAt.IsZero() && !now.Before(s.refreshAt) {
		return "", false
	}
	return s.token, true
}

func (c *Client) session(endpoint string) *session {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.sessions[endpoint]
	if !ok {
		s = &session{}
		c.sessions[endpoint] = s
	}
	return s
}

// forgetIdle drops, at most once per sessionIdle, the sessions that nobody
// used for sessionIdle and that hold no valid token, so that the map does
// not grow with controllers that are gone.
func (c *Client) forgetIdle(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.Sub(c.swept) < sessionIdle {
		return
	}
	c.swept = now
	for ep, s := range c.sessions {
		if !s.mu.TryLock() {
			continue
		}
		expired := s.token == "" || (!s.refreshAt.IsZero() && !now.Before(s.refreshAt))
		if expired && now.Sub(s.lastUsed) > sessionIdle {
			delete(c.sessions, ep)
		}
		s.mu.Unlock()
	}
}

// token returns a usable token for endpoint, logging in when there is none,
// when it is about to expire, or when it equals stale (the token a 401 just
// refused). Concurrent callers share one login per endpoint.
func (c *Client) token(ctx context.Context, endpoint, stale string) (string, error) {
	s := c.session(endpoint)
	if tok, ok := s.valid(c.clock.Now(), stale); ok {
		return tok, nil
	}
	// The flight key includes the refused token, so that a caller whose
	// newer token was refused never joins a flight that would hand it back.
	key := endpoint + "\x00" + stale
	ch := c.flight.DoChan(key, func() (any, error) {
		if tok, ok := s.valid(c.clock.Now(), stale); ok {
			return tok, nil // another flight has just logged in
		}
		// The login outlives a caller that gives up: others may be waiting.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
		defer cancel()
		tok, userID, refreshAt, err := c.login(lctx, endpoint)
		if err != nil {
			return "", err
		}
		s.mu.Lock()
		s.token, s.refreshAt = tok, refreshAt
		if userID != "" {
			s.userID = userID
		}
		s.mu.Unlock()
		c.forgetIdle(c.clock.Now())
		return tok, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return "", res.Err
		}
		return res.Val.(string), nil
	case <-ctx.Done():
		return "", transportError("cml:POST /auth_extended", ctx.Err())
	}
}

// UserID returns the controller's id of the user the client is logged in
// as on endpoint, or "" before the first login there. The idle detection
// uses it to leave the product's own calls out of a person's activity.
func (c *Client) UserID(endpoint string) string {
	c.mu.Lock()
	s, ok := c.sessions[endpoint]
	c.mu.Unlock()
	if !ok {
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.userID
}

// login posts the credentials to /auth_extended (which answers the user's
// id with the token) and returns the token, the user id and when to replace
// the token.
func (c *Client) login(ctx context.Context, endpoint string) (token, userID string, refreshAt time.Time, err error) {
	req := request{method: http.MethodPost, path: "/auth_extended", contentType: "application/json"}
	req.body, _ = json.Marshal(struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}{c.username, c.password})
	target, err := apiURL(endpoint, req.path, nil)
	if err != nil {
		return "", "", time.Time{}, &application.CloudError{Kind: application.CloudInvalid, Op: req.op(), Message: err.Error(), Err: err}
	}
	c.logins.Add(1)
	if c.onLogin != nil {
		c.onLogin(endpoint)
	}
	resp, err := c.send(ctx, target, req, "")
	if err != nil {
		return "", "", time.Time{}, err
	}
	if resp.status != http.StatusOK {
		return "", "", time.Time{}, statusError(req.op(), resp)
	}
	tok, userID, err := decodeToken(resp.body)
	if err != nil {
		return "", "", time.Time{}, decodeFailure(req.op(), resp, err)
	}
	now := c.clock.Now()
	if exp, iat, ok := jwtTimes(tok); ok {
		lifetime := exp.Sub(now)
		if !iat.IsZero() && exp.After(iat) {
			lifetime = exp.Sub(iat)
		}
		refreshAt = exp.Add(-min(maxRefreshMargin, lifetime/10))
	}
	c.log.DebugContext(ctx, "CML login", "endpoint", endpoint, "user_id", userID, "refresh_at", refreshAt)
	return tok, userID, refreshAt, nil
}

// decodeToken reads the answer of /auth_extended (an object with "token"
// and the user's "id") or of /authenticate (a bare JSON string, no id).
func decodeToken(body []byte) (token, userID string, err error) {
	body = bytes.TrimSpace(body)
	if len(body) > 0 && body[0] == '{' {
		var ext struct {
			Token string `json:"token"`
			ID    string `json:"id"`
		}
		if err := json.Unmarshal(body, &ext); err != nil {
			return "", "", err
		}
		token, userID = ext.Token, strings.TrimSpace(ext.ID)
	} else if err := json.Unmarshal(body, &token); err != nil {
		return "", "", err
	}
	token = strings.TrimSpace(token)
	if token == "" || strings.ContainsAny(token, " \t\r\n") {
		return "", "", errors.New("no token in the answer")
	}
	return token, userID, nil
}

// jwtTimes reads the exp and iat claims of a JWT without verifying it (the
// controller does that); ok is false when there is no usable exp.
func jwtTimes(token string) (exp, iat time.Time, ok bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, time.Time{}, false
	}
	var claims struct {
		Exp number `json:"exp"`
		Iat number `json:"iat"`
	}
	if err := decodeObject(payload, &claims); err != nil || !claims.Exp.ok || claims.Exp.v <= 0 || claims.Exp.v > 1e11 {
		return time.Time{}, time.Time{}, false
	}
	exp = unixTime(claims.Exp.v)
	if claims.Iat.ok && claims.Iat.v > 0 && claims.Iat.v < 1e11 {
		iat = unixTime(claims.Iat.v)
	}
	return exp, iat, true
}

func unixTime(sec float64) time.Time {
	whole := int64(sec)
	return time.Unix(whole, int64((sec-float64(whole))*1e9)).UTC()
}
