package application

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
)

// Actor says who caused an event: a person (or API client) or a job.
type Actor struct {
	Type     string   `json:"type"` // "user" or "system"
	Subject  string   `json:"subject"`
	Username string   `json:"username,omitempty"`
	Roles    []string `json:"roles,omitempty"`
}

// ActorOf returns the actor for a principal.
func ActorOf(p rbac.Principal) Actor {
	a := Actor{Type: "user", Subject: p.Subject, Username: p.Username}
	if p.IsSystem() {
		a.Type = "system"
	}
	for _, r := range p.Roles {
		a.Roles = append(a.Roles, string(r))
	}
	return a
}

// Metadata travels with every event (DESIGN.md section 2 rule 4): who, why
// and when.
type Metadata struct {
	Actor         Actor     `json:"actor"`
	CorrelationID string    `json:"correlation_id"`
	CausationID   string    `json:"causation_id"`
	OccurredAt    time.Time `json:"occurred_at"`
	// Command names the application command that produced the event.
	Command string `json:"command,omitempty"`
}

// ParseMetadata decodes stored metadata. Unknown fields are ignored so that
// metadata can grow.
func ParseMetadata(data []byte) (Metadata, error) {
	var m Metadata
	if len(data) == 0 {
		return m, nil
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, fmt.Errorf("decode event metadata: %w", err)
	}
	return m, nil
}

type correlationKey struct{}
type causationKey struct{}

// WithCorrelationID returns a context whose commands carry this correlation
// id: the HTTP request or job that started the chain.
func WithCorrelationID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, correlationKey{}, id)
}

// CorrelationID returns the correlation id carried by ctx, or "".
func CorrelationID(ctx context.Context) string {
	id, _ := ctx.Value(correlationKey{}).(string)
	return id
}

// WithCausationID returns a context whose commands record this causation id:
// the event that caused them (reactors and jobs set it).
func WithCausationID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, causationKey{}, id)
}

// CausationID returns the causation id carried by ctx, or "".
func CausationID(ctx context.Context) string {
	id, _ := ctx.Value(causationKey{}).(string)
	return id
}
