package api

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"
	"unicode"
)

// schemaGen derives JSON Schemas (OpenAPI 3.1 dialect) from the Go types the
// handlers decode and encode, so that the document cannot drift from the
// wire format: it follows encoding/json's rules (json tags, "-", omitempty
// and omitzero, embedded structs inlined). Named struct types become
// components referenced with $ref.
//
// Struct tags of the API's own request types refine the schema:
// `doc:"text"` describes a field, `openapi:"required"` marks a request field
// as required (response fields are required unless omitempty/omitzero), and
// `openapi:"format=uuid"`, `openapi:"pattern=..."`, `openapi:"max=N"`,
// `openapi:"min=N"`, `openapi:"maxlen=N"` add constraints.
type schemaGen struct {
	components map[string]any
	names      map[reflect.Type]string
	enums      map[reflect.Type][]string
	// renames gives some types a clearer component name than their Go name
	// (worker.State and task.State would collide).
	renames map[reflect.Type]string
	// strict marks request types: their objects reject unknown properties.
	strict map[reflect.Type]bool
}

func newSchemaGen() *schemaGen {
	return &schemaGen{
		components: map[string]any{},
		names:      map[reflect.Type]string{},
		enums:      map[reflect.Type][]string{},
		renames:    map[reflect.Type]string{},
		strict:     map[reflect.Type]bool{},
	}
}

var (
	timeType    = reflect.TypeFor[time.Time]()
	rawJSONType = reflect.TypeFor[json.RawMessage]()
)

// enum declares the values of a named string type.
func enum[T ~string](g *schemaGen, values ...T) {
	s := make([]string, len(values))
	for i, v := range values {
		s[i] = string(v)
	}
	g.enums[reflect.TypeFor[T]()] = s
}

// schema returns the schema of the type of v (a $ref for named structs).
func (g *schemaGen) schema(t reflect.Type) map[string]any {
	switch {
	case t == timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case t == rawJSONType:
		return map[string]any{"description": "Any JSON value."}
	}
	if vals, ok := g.enums[t]; ok {
		return map[string]any{"type": "string", "enum": vals}
	}
	switch t.Kind() {
	case reflect.Pointer:
		return g.schema(t.Elem())
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		s := map[string]any{"type": "integer"}
		if t.Kind() == reflect.Int64 || t.Kind() == reflect.Int {
			s["format"] = "int64"
		} else {
			s["format"] = "int32"
		}
		return s
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer", "minimum": 0}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return map[string]any{"type": "string", "contentEncoding": "base64"}
		}
		return map[string]any{"type": "array", "items": g.schema(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": g.schema(t.Elem())}
	case reflect.Interface:
		return map[string]any{}
	case reflect.Struct:
		if t.Name() == "" {
			return g.object(t)
		}
		return map[string]any{"$ref": "#/components/schemas/" + g.component(t)}
	}
	panic(fmt.Sprintf("api: no JSON schema for %s", t))
}

// component registers a named struct type and returns its component name.
func (g *schemaGen) component(t reflect.Type) string {
	if name, ok := g.names[t]; ok {
		return name
	}
	name := g.renames[t]
	if name == "" {
		name = t.Name()
		if i := strings.IndexByte(name, '['); i >= 0 { // generic instance
			name = name[:i]
		}
		name = upperFirst(name)
	}
	if _, taken := g.components[name]; taken {
		pkg := t.PkgPath()
		name = upperFirst(pkg[strings.LastIndexByte(pkg, '/')+1:]) + name
	}
	if _, taken := g.components[name]; taken {
		panic(fmt.Sprintf("api: two types want the schema name %s", name))
	}
	g.names[t] = name
	g.components[name] = nil // reserve before recursing (self-references)
	g.components[name] = g.object(t)
	return name
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	r := []rune(s)
	r[0] = unicode.ToUpper(r[0])
	return string(r)
}

// object builds the schema of a struct's JSON object.
func (g *schemaGen) object(t reflect.Type) map[string]any {
	props := map[string]any{}
	var required []string
	g.fields(t, props, &required)
	s := map[string]any{"type": "object", "properties": props}
	if len(required) > 0 {
		slices.Sort(required)
		s["required"] = required
	}
	if g.strict[t] {
		s["additionalProperties"] = false
	}
	return s
}

func (g *schemaGen) fields(t reflect.Type, props map[string]any, required *[]string) {
	strict := g.strict[t]
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				g.fields(ft, props, required)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fs := g.schema(f.Type)
		hints := parseHints(f.Tag.Get("openapi"))
		if doc := f.Tag.Get("doc"); doc != "" || len(hints) > 0 {
			fs = refine(fs, doc, hints)
		}
		props[name] = fs
		omit := strings.Contains(opts, "omitempty") || strings.Contains(opts, "omitzero")
		switch {
		case strict && hints["required"] == "true":
			*required = append(*required, name)
		case !strict && !omit:
			*required = append(*required, name)
		}
	}
}

// parseHints reads `openapi:"required,format=uuid,max=10"`.
func parseHints(tag string) map[string]string {
	if tag == "" {
		return nil
	}
	out := map[string]string{}
	for part := range strings.SplitSeq(tag, ",") {
		k, v, found := strings.Cut(part, "=")
		if !found {
			v = "true"
		}
		out[k] = v
	}
	return out
}

// refine copies a field schema and adds the description and constraints. A
// $ref cannot carry siblings in every tool, so it is wrapped in allOf.
func refine(s map[string]any, doc string, hints map[string]string) map[string]any {
	out := map[string]any{}
	if _, isRef := s["$ref"]; isRef {
		out["allOf"] = []any{s}
	} else {
		for k, v := range s {
			out[k] = v
		}
	}
	if doc != "" {
		out["description"] = doc
	}
	for k, v := range hints {
		switch k {
		case "format", "pattern":
			out[k] = v
		case "max", "min", "maxlen", "maxitems":
			var n int64
			if _, err := fmt.Sscan(v, &n); err != nil {
				panic(fmt.Sprintf("api: bad openapi hint %s=%s", k, v))
			}
			key := map[string]string{"max": "maximum", "min": "minimum", "maxlen": "maxLength", "maxitems": "maxItems"}[k]
			out[key] = n
		}
	}
	return out
}
