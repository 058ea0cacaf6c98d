package esdb

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/google/uuid"

	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// Stream metadata, as the server reads it: the last event of the stream
// "$$<stream>", of type "$metadata", holds a JSON object whose "$maxAge" is
// the age in seconds after which the stream's events are hidden and then
// scavenged.
const (
	metadataStreamPrefix = "$$"
	metadataEventType    = "$metadata"
	maxAgeKey            = "$maxAge"
)

// metadataAttempts bounds the read-modify-write of a stream's metadata when
// another writer changes it concurrently.
const metadataAttempts = 3

// ensureRetention gives a telemetry stream its $maxAge before this process
// first writes to it. A failure is logged and the append goes ahead: the
// next append to the stream tries again.
func (s *Store) ensureRetention(ctx context.Context, stream string) {
	if s.maxAgeSeconds == 0 || !strings.HasPrefix(stream, worker.TelemetryStreamPrefix) {
		return
	}
	if _, ok := s.retained.Load(stream); ok {
		return
	}
	if err := s.setMaxAge(ctx, stream); err != nil {
		if ctx.Err() == nil {
			s.log.WarnContext(ctx, "eventstoredb: cannot set $maxAge on a telemetry stream; appending anyway",
				slog.String("stream", stream), slog.Any("error", err))
		}
		return
	}
	s.retained.Store(stream, struct{}{})
}

// setMaxAge makes the stream's metadata say $maxAge = s.maxAgeSeconds,
// keeping its other properties. It writes only when the value differs, with
// the metadata stream's revision as expectation, and starts over when
// another writer got there first.
func (s *Store) setMaxAge(ctx context.Context, stream string) error {
	metaStream := metadataStreamPrefix + stream
	for range metadataAttempts {
		props, rev, exists, err := s.readMetadata(ctx, metaStream)
		if err != nil {
			return err
		}
		if current, ok := props[maxAgeKey].(json.Number); ok && current.String() == fmt.Sprint(s.maxAgeSeconds) {
			return nil
		}
		props[maxAgeKey] = s.maxAgeSeconds
		data, err := json.Marshal(props)
		if err != nil {
			return fmt.Errorf("encode metadata of %s: %w", stream, err)
		}
		var expected esdb.ExpectedRevision = esdb.NoStream{}
		if exists {
			expected = esdb.Revision(rev)
		}
		ev := esdb.EventData{EventID: uuid.New(), EventType: metadataEventType, ContentType: esdb.ContentTypeJson, Data: data}
		err = s.call(ctx, func(ctx context.Context, c *esdb.Client) error {
			_, err := c.AppendToStream(ctx, metaStream, esdb.AppendToStreamOptions{ExpectedRevision: expected}, ev)
			return err
		})
		var e *esdb.Error
		if errors.As(err, &e) && e.Code() == esdb.ErrorCodeWrongExpectedVersion {
			continue // written meanwhile: read it again
		}
		if err != nil {
			return fmt.Errorf("write metadata of %s: %w", stream, err)
		}
		s.log.InfoContext(ctx, "eventstoredb: telemetry stream retention set",
			slog.String("stream", stream), slog.Int64("max_age_seconds", s.maxAgeSeconds))
		return nil
	}
	return fmt.Errorf("metadata of %s kept changing during %d attempts", stream, metadataAttempts)
}

// readMetadata reads the last event of a metadata stream: its properties
// (numbers as json.Number), its revision, and whether it exists.
func (s *Store) readMetadata(ctx context.Context, metaStream string) (props map[string]any, rev uint64, exists bool, err error) {
	caller := ctx
	ctx, cancel := s.readContext(ctx)
	defer cancel()
	var raw []byte
	err = s.call(ctx, func(ctx context.Context, c *esdb.Client) error {
		rs, err := c.ReadStream(ctx, metaStream, esdb.ReadStreamOptions{Direction: esdb.Backwards, From: esdb.End{}}, 1)
		if err != nil {
			return err
		}
		defer rs.Close()
		re, err := rs.Recv()
		var e *esdb.Error
		switch {
		case errors.Is(err, io.EOF), errors.As(err, &e) && e.Code() == esdb.ErrorCodeResourceNotFound:
			return nil
		case err != nil:
			return err
		}
		ev := re.OriginalEvent()
		raw, rev, exists = ev.Data, ev.EventNumber, true
		return nil
	})
	if err != nil {
		return nil, 0, false, s.readError(caller, "read "+metaStream, err)
	}
	props = map[string]any{}
	if exists && len(bytes.TrimSpace(raw)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&props); err != nil {
			return nil, 0, false, fmt.Errorf("esdb: %s does not hold a JSON object: %w", metaStream, err)
		}
		if props == nil { // the document was null
			props = map[string]any{}
		}
	}
	return props, rev, exists, nil
}
