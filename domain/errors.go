package domain

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors of the domain. Aggregates return typed errors that match
// these with errors.Is; the API maps them to HTTP statuses (ErrInvalid 400 or
// 422, ErrIllegalTransition and ErrAlreadyExists 409).
var (
	ErrInvalid           = errors.New("invalid input")
	ErrIllegalTransition = errors.New("illegal transition")
	ErrAlreadyExists     = errors.New("already exists")
	ErrNotFound          = errors.New("not found")
)

// Problem is one thing wrong with an input.
type Problem struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// ValidationError lists every problem found in an input, not only the first.
type ValidationError struct {
	Problems []Problem
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.Field + ": " + p.Message
	}
	return "invalid input: " + strings.Join(parts, "; ")
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// Problems collects validation problems; Err returns nil when there are none.
type Problems []Problem

// Add records a problem.
func (p *Problems) Add(field, format string, args ...any) {
	*p = append(*p, Problem{Field: field, Message: fmt.Sprintf(format, args...)})
}

// Err returns a *ValidationError holding the problems, or nil.
func (p Problems) Err() error {
	if len(p) == 0 {
		return nil
	}
	return &ValidationError{Problems: append([]Problem(nil), p...)}
}

// TransitionError says that a command is not allowed in the aggregate's current
// state. It matches ErrIllegalTransition.
type TransitionError struct {
	Command string
	// State is the aggregate's current status (for a worker) or state name.
	State  string
	Reason string
}

func (e *TransitionError) Error() string {
	msg := fmt.Sprintf("%s is not allowed when %s", e.Command, e.State)
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	return msg
}

// Is makes errors.Is(err, ErrIllegalTransition) true.
func (e *TransitionError) Is(target error) bool { return target == ErrIllegalTransition }
