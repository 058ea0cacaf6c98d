package esdb

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"net"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/EventStore/EventStore-Client-Go/v4/protos/serverfeatures"
	"github.com/EventStore/EventStore-Client-Go/v4/protos/shared"
	api "github.com/EventStore/EventStore-Client-Go/v4/protos/streams"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// testServer is an in-process EventStoreDB node for tests: a gRPC server
// built from the client's own generated service definitions, implementing
// what the client calls for a single-node URL (esdb://host:port?tls=false):
// ServerFeatures.GetSupportedMethods on connect (no gossip: that is for
// cluster discovery), and Streams.Read and Streams.Append. Reads cover
// streams (forwards and backwards, stream not found) and $all (forwards from
// a position, inclusive, as the server reads), and filtered $all
// subscriptions (exclusive of their start, with checkpoints every
// multiplier × window events considered and when going live, caught-up
// notice). The log's semantics are in memLog.
type testServer struct {
	log  *memLog
	addr string

	// idempotentNoPosition makes an idempotent append answer without a
	// position, as servers before IdempotentLogPosition did.
	idempotentNoPosition atomic.Bool
	// stall makes every Read wait until its caller gives up.
	stall atomic.Bool

	mu            sync.Mutex
	srv           *grpc.Server
	done          chan struct{}             // closed when srv.Serve has returned
	subscriptions chan *api.ReadReq_Options // see watchSubscriptions
}

// watchSubscriptions returns a channel that receives the options of the next
// $all subscription requests (up to n are buffered; more are dropped).
func (s *testServer) watchSubscriptions(n int) <-chan *api.ReadReq_Options {
	ch := make(chan *api.ReadReq_Options, n)
	s.mu.Lock()
	s.subscriptions = ch
	s.mu.Unlock()
	return ch
}

func (s *testServer) recordSubscription(o *api.ReadReq_Options) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case s.subscriptions <- o: // never proceeds on a nil channel
	default:
	}
}

// startTestServer starts a server on a free local port; t.Cleanup stops it.
func startTestServer(t testing.TB) *testServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("test server: listen: %v", err)
	}
	s := &testServer{log: newMemLog(), addr: lis.Addr().String()}
	s.serve(lis)
	t.Cleanup(s.stop)
	return s
}

// URL is the connection string of the server.
func (s *testServer) URL() string {
	return "esdb://" + s.addr + "?tls=false"
}

func (s *testServer) serve(lis net.Listener) {
	srv := grpc.NewServer(grpc.WaitForHandlers(true))
	api.RegisterStreamsServer(srv, &streamsService{s: s})
	serverfeatures.RegisterServerFeaturesServer(srv, featuresService{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	s.mu.Lock()
	s.srv, s.done = srv, done
	s.mu.Unlock()
}

// stop closes every connection and ends every call, then waits for the
// handlers. The log survives: start brings the node back.
func (s *testServer) stop() {
	s.mu.Lock()
	srv, done := s.srv, s.done
	s.srv, s.done = nil, nil
	s.mu.Unlock()
	if srv != nil {
		srv.Stop()
		<-done
	}
}

// start serves again on the same address.
func (s *testServer) start(t testing.TB) {
	t.Helper()
	var lis net.Listener
	deadline := time.Now().Add(5 * time.Second)
	for {
		var err error
		lis, err = net.Listen("tcp", s.addr)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("test server: listen again on %s: %v", s.addr, err)
		}
		time.Sleep(10 * time.Millisecond) // polling until the port is free again
	}
	s.serve(lis)
}

// restart drops every connection and stream, then serves again at once.
func (s *testServer) restart(t testing.TB) {
	t.Helper()
	s.stop()
	s.start(t)
}

type featuresService struct {
	serverfeatures.UnimplementedServerFeaturesServer
}

func (featuresService) GetSupportedMethods(context.Context, *shared.Empty) (*serverfeatures.SupportedMethods, error) {
	const streams = "event_store.client.streams.streams"
	return &serverfeatures.SupportedMethods{
		EventStoreServerVersion: "24.10.0",
		Methods: []*serverfeatures.SupportedMethod{
			{ServiceName: streams, MethodName: "read"},
			{ServiceName: streams, MethodName: "append"},
		},
	}, nil
}

type streamsService struct {
	api.UnimplementedStreamsServer
	s *testServer
}

func invalidArgument(msg string) error { return status.Error(codes.InvalidArgument, msg) }

func (ss *streamsService) Append(srv api.Streams_AppendServer) error {
	head, err := srv.Recv()
	if err != nil {
		return err
	}
	opts := head.GetOptions()
	if opts == nil {
		return invalidArgument("the first append message must hold the options")
	}
	stream := string(opts.GetStreamIdentifier().GetStreamName())
	if stream == "" {
		return invalidArgument("empty stream name")
	}
	var exp expectation
	switch o := opts.GetExpectedStreamRevision().(type) {
	case *api.AppendReq_Options_Revision:
		exp = expectation{kind: expectRevision, revision: o.Revision}
	case *api.AppendReq_Options_NoStream:
		exp = expectation{kind: expectNoStream}
	case *api.AppendReq_Options_StreamExists:
		exp = expectation{kind: expectStreamExists}
	case *api.AppendReq_Options_Any:
		exp = expectation{kind: expectAny}
	default:
		return invalidArgument("no expected stream revision")
	}
	var events []proposed
	for {
		m, err := srv.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		pm := m.GetProposedMessage()
		if pm == nil {
			return invalidArgument("expected a proposed message")
		}
		id, err := fromProtoUUID(pm.GetId())
		if err != nil {
			return invalidArgument("event id: " + err.Error())
		}
		typ := pm.GetMetadata()["type"]
		if typ == "" {
			return invalidArgument("event type missing")
		}
		events = append(events, proposed{id: id, eventType: typ, contentType: pm.GetMetadata()["content-type"],
			data: pm.GetData(), meta: pm.GetCustomMetadata()})
	}
	out := ss.s.log.append(stream, exp, events, time.Now())
	if out.wrongVersion {
		return srv.SendAndClose(&api.AppendResp{Result: &api.AppendResp_WrongExpectedVersion_{
			WrongExpectedVersion: wrongVersionProto(exp, out.current)}})
	}
	success := &api.AppendResp_Success{}
	if len(events) == 0 {
		if out.current < 0 {
			success.CurrentRevisionOption = &api.AppendResp_Success_NoStream{NoStream: &shared.Empty{}}
		} else {
			success.CurrentRevisionOption = &api.AppendResp_Success_CurrentRevision{CurrentRevision: uint64(out.current)}
		}
		success.PositionOption = &api.AppendResp_Success_NoPosition{NoPosition: &shared.Empty{}}
	} else {
		success.CurrentRevisionOption = &api.AppendResp_Success_CurrentRevision{CurrentRevision: out.lastRevision}
		if out.idempotent && ss.s.idempotentNoPosition.Load() {
			success.PositionOption = &api.AppendResp_Success_NoPosition{NoPosition: &shared.Empty{}}
		} else {
			success.PositionOption = &api.AppendResp_Success_Position{Position: &api.AppendResp_Position{
				CommitPosition: out.position, PreparePosition: out.position}}
		}
	}
	return srv.SendAndClose(&api.AppendResp{Result: &api.AppendResp_Success_{Success: success}})
}

// wrongVersionProto fills both the current fields and the 20.6.0 ones, as
// the server does.
func wrongVersionProto(exp expectation, current int64) *api.AppendResp_WrongExpectedVersion {
	w := &api.AppendResp_WrongExpectedVersion{}
	if current < 0 {
		w.CurrentRevisionOption = &api.AppendResp_WrongExpectedVersion_CurrentNoStream{CurrentNoStream: &shared.Empty{}}
		w.CurrentRevisionOption_20_6_0 = &api.AppendResp_WrongExpectedVersion_NoStream_20_6_0{NoStream_20_6_0: &shared.Empty{}}
	} else {
		w.CurrentRevisionOption = &api.AppendResp_WrongExpectedVersion_CurrentRevision{CurrentRevision: uint64(current)}
		w.CurrentRevisionOption_20_6_0 = &api.AppendResp_WrongExpectedVersion_CurrentRevision_20_6_0{CurrentRevision_20_6_0: uint64(current)}
	}
	switch exp.kind {
	case expectRevision:
		w.ExpectedRevisionOption = &api.AppendResp_WrongExpectedVersion_ExpectedRevision{ExpectedRevision: exp.revision}
		w.ExpectedRevisionOption_20_6_0 = &api.AppendResp_WrongExpectedVersion_ExpectedRevision_20_6_0{ExpectedRevision_20_6_0: exp.revision}
	case expectNoStream:
		w.ExpectedRevisionOption = &api.AppendResp_WrongExpectedVersion_ExpectedNoStream{ExpectedNoStream: &shared.Empty{}}
	case expectStreamExists:
		w.ExpectedRevisionOption = &api.AppendResp_WrongExpectedVersion_ExpectedStreamExists{ExpectedStreamExists: &shared.Empty{}}
		w.ExpectedRevisionOption_20_6_0 = &api.AppendResp_WrongExpectedVersion_StreamExists_20_6_0{StreamExists_20_6_0: &shared.Empty{}}
	default:
		w.ExpectedRevisionOption = &api.AppendResp_WrongExpectedVersion_ExpectedAny{ExpectedAny: &shared.Empty{}}
		w.ExpectedRevisionOption_20_6_0 = &api.AppendResp_WrongExpectedVersion_Any_20_6_0{Any_20_6_0: &shared.Empty{}}
	}
	return w
}

func (ss *streamsService) Read(req *api.ReadReq, srv api.Streams_ReadServer) error {
	o := req.GetOptions()
	if o == nil {
		return invalidArgument("no read options")
	}
	if _, ok := o.GetCountOption().(*api.ReadReq_Options_Subscription); ok && o.GetAll() != nil {
		ss.s.recordSubscription(o)
	}
	if ss.s.stall.Load() {
		<-srv.Context().Done()
		return status.FromContextError(srv.Context().Err()).Err()
	}
	stringIDs := o.GetUuidOption().GetString_() != nil
	filter, interval, err := readFilter(o)
	if err != nil {
		return err
	}
	switch c := o.GetCountOption().(type) {
	case *api.ReadReq_Options_Count:
		if so := o.GetStream(); so != nil {
			return ss.readStream(srv, so, o.GetReadDirection(), c.Count, stringIDs)
		}
		if ao := o.GetAll(); ao != nil {
			return ss.readAll(srv, ao, o.GetReadDirection(), c.Count, filter, stringIDs)
		}
	case *api.ReadReq_Options_Subscription:
		if ao := o.GetAll(); ao != nil {
			return ss.subscribeAll(srv, ao, filter, interval, stringIDs)
		}
		return status.Error(codes.Unimplemented, "stream subscriptions are not part of the test server")
	}
	return invalidArgument("read options without a stream or $all")
}

// readFilter converts the request's filter; interval is the number of
// events considered between checkpoints.
func readFilter(o *api.ReadReq_Options) (*eventFilter, uint32, error) {
	fo := o.GetFilter()
	if fo == nil {
		return nil, 0, nil
	}
	f := &eventFilter{}
	var expr *api.ReadReq_Options_FilterOptions_Expression
	switch x := fo.GetFilter().(type) {
	case *api.ReadReq_Options_FilterOptions_StreamIdentifier:
		f.onStream, expr = true, x.StreamIdentifier
	case *api.ReadReq_Options_FilterOptions_EventType:
		expr = x.EventType
	default:
		return nil, 0, invalidArgument("filter without an expression")
	}
	if expr.GetRegex() != "" {
		re, err := regexp.Compile(expr.GetRegex())
		if err != nil {
			return nil, 0, invalidArgument("filter regex: " + err.Error())
		}
		f.re = re
	} else {
		f.prefixes = expr.GetPrefix()
	}
	window := uint32(32)
	if m, ok := fo.GetWindow().(*api.ReadReq_Options_FilterOptions_Max); ok && m.Max > 0 {
		window = m.Max
	}
	if fo.GetCheckpointIntervalMultiplier() == 0 {
		return nil, 0, invalidArgument("checkpoint interval multiplier must not be zero")
	}
	return f, window * fo.GetCheckpointIntervalMultiplier(), nil
}

func (ss *streamsService) readStream(srv api.Streams_ReadServer, so *api.ReadReq_Options_StreamOptions, dir api.ReadReq_Options_ReadDirection, count uint64, stringIDs bool) error {
	stream := string(so.GetStreamIdentifier().GetStreamName())
	backwards := dir == api.ReadReq_Options_Backwards
	var from uint64
	switch r := so.GetRevisionOption().(type) {
	case *api.ReadReq_Options_StreamOptions_Revision:
		from = r.Revision
	case *api.ReadReq_Options_StreamOptions_End:
		from = math.MaxUint64
	case *api.ReadReq_Options_StreamOptions_Start:
		if backwards {
			return invalidArgument("reading backwards from the start")
		}
	}
	recs, found := ss.s.log.readStream(stream, from, count, backwards, time.Now())
	if !found {
		return srv.Send(&api.ReadResp{Content: &api.ReadResp_StreamNotFound_{StreamNotFound: &api.ReadResp_StreamNotFound{
			StreamIdentifier: &shared.StreamIdentifier{StreamName: []byte(stream)}}}})
	}
	for _, r := range recs {
		if err := srv.Send(eventProto(r, stringIDs)); err != nil {
			return err
		}
	}
	return nil
}

func (ss *streamsService) readAll(srv api.Streams_ReadServer, ao *api.ReadReq_Options_AllOptions, dir api.ReadReq_Options_ReadDirection, count uint64, filter *eventFilter, stringIDs bool) error {
	if dir == api.ReadReq_Options_Backwards {
		return status.Error(codes.Unimplemented, "backwards $all reads are not part of the test server")
	}
	var i int
	switch p := ao.GetAllOption().(type) {
	case *api.ReadReq_Options_AllOptions_Position:
		i = ss.s.log.index(p.Position.GetCommitPosition(), true)
	case *api.ReadReq_Options_AllOptions_End:
		i = ss.s.log.length()
	}
	recs, _ := ss.s.log.from(i)
	sent := uint64(0)
	for _, r := range recs {
		if sent == count {
			break
		}
		if !filter.match(r) {
			continue
		}
		if err := srv.Send(eventProto(r, stringIDs)); err != nil {
			return err
		}
		sent++
	}
	return nil
}

// subscribeAll confirms, catches up from the start position (exclusive),
// sends a checkpoint and the caught-up notice when it reaches the end of the
// log, then follows it live. With a filter it sends a checkpoint after every
// interval events considered.
func (ss *streamsService) subscribeAll(srv api.Streams_ReadServer, ao *api.ReadReq_Options_AllOptions, filter *eventFilter, interval uint32, stringIDs bool) error {
	ctx := srv.Context()
	var (
		i          int
		lastPos    uint64 // of the last event considered, or the start
		hasLast    bool
		considered uint32
	)
	switch p := ao.GetAllOption().(type) {
	case *api.ReadReq_Options_AllOptions_Position:
		lastPos, hasLast = p.Position.GetCommitPosition(), true
		i = ss.s.log.index(lastPos, false)
	case *api.ReadReq_Options_AllOptions_End:
		i = ss.s.log.length()
	}
	if err := srv.Send(&api.ReadResp{Content: &api.ReadResp_Confirmation{Confirmation: &api.ReadResp_SubscriptionConfirmation{
		SubscriptionId: uuid.NewString()}}}); err != nil {
		return err
	}
	var lastCheckpoint uint64
	sentCheckpoint := false
	checkpoint := func(pos uint64) error {
		if sentCheckpoint && pos <= lastCheckpoint {
			return nil // the server never repeats or moves a checkpoint back
		}
		lastCheckpoint, sentCheckpoint = pos, true
		return srv.Send(&api.ReadResp{Content: &api.ReadResp_Checkpoint_{Checkpoint: &api.ReadResp_Checkpoint{
			CommitPosition: pos, PreparePosition: pos}}})
	}
	live := false
	for {
		recs, changed := ss.s.log.from(i)
		for _, r := range recs {
			i++
			lastPos, hasLast = r.pos, true
			if filter.match(r) {
				if err := srv.Send(eventProto(r, stringIDs)); err != nil {
					return err
				}
			}
			if filter == nil {
				continue
			}
			considered++
			if considered >= interval {
				considered = 0
				if err := checkpoint(r.pos); err != nil {
					return err
				}
			}
		}
		if !live {
			live = true
			considered = 0 // the live subscription counts from when it started
			if filter != nil && hasLast {
				if err := checkpoint(lastPos); err != nil {
					return err
				}
			}
			if err := srv.Send(&api.ReadResp{Content: &api.ReadResp_CaughtUp_{CaughtUp: &api.ReadResp_CaughtUp{}}}); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-changed:
		}
	}
}

func eventProto(r *logRecord, stringIDs bool) *api.ReadResp {
	return &api.ReadResp{Content: &api.ReadResp_Event{Event: &api.ReadResp_ReadEvent{
		Event: &api.ReadResp_ReadEvent_RecordedEvent{
			Id:               toProtoUUID(r.id, stringIDs),
			StreamIdentifier: &shared.StreamIdentifier{StreamName: []byte(r.stream)},
			StreamRevision:   r.revision,
			PreparePosition:  r.pos,
			CommitPosition:   r.pos,
			Metadata: map[string]string{
				"type":         r.eventType,
				"content-type": r.contentType,
				// .NET ticks (100 ns) since the Unix epoch
				"created": strconv.FormatInt(r.created.UnixNano()/100, 10),
			},
			CustomMetadata: r.meta,
			Data:           r.data,
		},
		Position: &api.ReadResp_ReadEvent_CommitPosition{CommitPosition: r.pos},
	}}}
}

func toProtoUUID(id uuid.UUID, asString bool) *shared.UUID {
	if asString {
		return &shared.UUID{Value: &shared.UUID_String_{String_: id.String()}}
	}
	return &shared.UUID{Value: &shared.UUID_Structured_{Structured: &shared.UUID_Structured{
		MostSignificantBits:  int64(binary.BigEndian.Uint64(id[:8])),
		LeastSignificantBits: int64(binary.BigEndian.Uint64(id[8:])),
	}}}
}

func fromProtoUUID(u *shared.UUID) (uuid.UUID, error) {
	if s := u.GetStructured(); s != nil {
		var id uuid.UUID
		binary.BigEndian.PutUint64(id[:8], uint64(s.GetMostSignificantBits()))
		binary.BigEndian.PutUint64(id[8:], uint64(s.GetLeastSignificantBits()))
		return id, nil
	}
	if s := u.GetString_(); s != "" {
		return uuid.Parse(s)
	}
	return uuid.UUID{}, errors.New("no id")
}
