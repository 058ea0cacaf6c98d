// Package domain holds what every aggregate of CML Cloud Manager shares: the
// Event contract and the Registry that maps stable, versioned event type names
// to Go types. The aggregates live in sub-packages (worker, settings, task).
//
// The domain does no I/O and reads no clock: time and identifiers are passed in.
package domain

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
)

// Event is a fact that happened to an aggregate. EventType returns its stable,
// versioned name (for example "worker.created.v1"); the name, not the Go type,
// is what is stored, so Go types may be renamed freely.
type Event interface {
	EventType() string
}

// Upcaster turns the stored JSON of an old event version into the JSON of a
// newer one. It returns the new type name and data; the registry applies
// upcasters until it reaches a registered type.
type Upcaster func(data json.RawMessage) (newType string, newData json.RawMessage, err error)

// ErrUnknownEventType is returned when a type name is neither registered nor
// upcastable.
var ErrUnknownEventType = errors.New("unknown event type")

// Registry maps event type names to Go types. The zero value is not usable;
// use NewRegistry. A Registry is safe for concurrent reads once built.
type Registry struct {
	types     map[string]reflect.Type
	upcasters map[string]Upcaster
}

// NewRegistry returns a registry holding the given event prototypes. Each
// prototype is a zero value of an event struct (not a pointer). It panics on a
// duplicate name, which is a programming error found by the first test run.
func NewRegistry(prototypes ...Event) *Registry {
	r := &Registry{types: map[string]reflect.Type{}, upcasters: map[string]Upcaster{}}
	for _, p := range prototypes {
		r.Register(p)
	}
	return r
}

// Register adds an event prototype (a value, not a pointer).
func (r *Registry) Register(prototype Event) {
	t := reflect.TypeOf(prototype)
	if t.Kind() == reflect.Pointer {
		panic(fmt.Sprintf("domain: register %s as a value, not a pointer", t))
	}
	name := prototype.EventType()
	if name == "" {
		panic(fmt.Sprintf("domain: %s has an empty event type", t))
	}
	if _, dup := r.types[name]; dup {
		panic(fmt.Sprintf("domain: event type %q registered twice", name))
	}
	r.types[name] = t
}

// RegisterUpcaster declares how to read an old type name. The old name must not
// also be a registered type.
func (r *Registry) RegisterUpcaster(oldType string, up Upcaster) {
	if _, dup := r.types[oldType]; dup {
		panic(fmt.Sprintf("domain: %q is registered as a current type; it cannot also be upcast", oldType))
	}
	r.upcasters[oldType] = up
}

// Types returns the registered type names, sorted.
func (r *Registry) Types() []string {
	names := make([]string, 0, len(r.types))
	for n := range r.types {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// New returns a zero value of the named type, without upcasting.
func (r *Registry) New(eventType string) (Event, bool) {
	t, ok := r.types[eventType]
	if !ok {
		return nil, false
	}
	return reflect.New(t).Elem().Interface().(Event), true
}

// Encode returns the event's type name and JSON data.
func (r *Registry) Encode(e Event) (string, []byte, error) {
	name := e.EventType()
	t, ok := r.types[name]
	if !ok {
		return "", nil, fmt.Errorf("encode %q: %w", name, ErrUnknownEventType)
	}
	if reflect.TypeOf(e) != t {
		return "", nil, fmt.Errorf("encode %q: got Go type %T, registered %s", name, e, t)
	}
	data, err := json.Marshal(e)
	if err != nil {
		return "", nil, fmt.Errorf("encode %q: %w", name, err)
	}
	return name, data, nil
}

// maxUpcasts bounds an upcaster chain so that a cycle is an error, not a hang.
const maxUpcasts = 16

// Decode turns stored JSON into the current Go event, applying upcasters for
// old versions. Unknown fields are rejected so that a fixture or a stored event
// that no longer matches its type is noticed.
func (r *Registry) Decode(eventType string, data []byte) (Event, error) {
	name, raw := eventType, json.RawMessage(data)
	for i := 0; ; i++ {
		if t, ok := r.types[name]; ok {
			ptr := reflect.New(t)
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.DisallowUnknownFields()
			if err := dec.Decode(ptr.Interface()); err != nil {
				return nil, fmt.Errorf("decode %q: %w", name, err)
			}
			if _, err := dec.Token(); err != io.EOF {
				return nil, fmt.Errorf("decode %q: data after the JSON object", name)
			}
			return ptr.Elem().Interface().(Event), nil
		}
		up, ok := r.upcasters[name]
		if !ok {
			return nil, fmt.Errorf("decode %q: %w", name, ErrUnknownEventType)
		}
		if i >= maxUpcasts {
			return nil, fmt.Errorf("decode %q: upcaster chain longer than %d", eventType, maxUpcasts)
		}
		next, nextRaw, err := up(raw)
		if err != nil {
			return nil, fmt.Errorf("upcast %q: %w", name, err)
		}
		name, raw = next, nextRaw
	}
}
