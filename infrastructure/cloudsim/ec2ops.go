package cloudsim

import (
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The EC2 operations of the simulated world, shared by the Query API and
// the out-of-band Console. Each takes the world's lock and first applies
// the state changes that are due.

// runRequest is what RunInstances (or an out-of-band launch) asks for.
type runRequest struct {
	ImageID          string
	InstanceType     string
	SubnetID         string
	KeyName          string
	ClientToken      string
	SecurityGroupIDs []string
	MinCount         int
	MaxCount         int
	Monitoring       bool
	Tags             map[string]string
	Running          bool // out-of-band seeding: start in running instead of pending
}

func (q runRequest) fingerprint() string {
	keys := slices.Sorted(maps.Keys(q.Tags))
	var b strings.Builder
	fmt.Fprintf(&b, "%s|%s|%s|%s|%v|%d|%d|%t|", q.ImageID, q.InstanceType, q.SubnetID, q.KeyName,
		q.SecurityGroupIDs, q.MinCount, q.MaxCount, q.Monitoring)
	for _, k := range keys {
		fmt.Fprintf(&b, "%q=%q;", k, q.Tags[k])
	}
	return b.String()
}

var (
	amiIDRE          = regexp.MustCompile(`^ami-[0-9a-f]{8}([0-9a-f]{9})?$`)
	instanceIDRE     = regexp.MustCompile(`^i-[0-9a-f]{8}([0-9a-f]{9})?$`)
	subnetIDRE       = regexp.MustCompile(`^subnet-[0-9a-f]{8}([0-9a-f]{9})?$`)
	securityGroupRE  = regexp.MustCompile(`^sg-[0-9a-f]{8}([0-9a-f]{9})?$`)
	instanceTypeRE   = regexp.MustCompile(`^[a-z][a-z0-9-]*\.[a-z0-9]+$`)
	reservedTagKeyRE = regexp.MustCompile(`(?i)^aws:`)
)

// reservation is the result of a RunInstances call.
type reservation struct {
	ID        string
	Instances []Instance
}

func checkTags(tags map[string]string) *APIError {
	if len(tags) > 50 {
		return apiErrorf(http.StatusBadRequest, "TagLimitExceeded", "the maximum number of tags per resource is 50")
	}
	for k, v := range tags {
		switch {
		case k == "" || len([]rune(k)) > 128:
			return invalidParameter("Tag key must be between 1 and 128 characters: %q", k)
		case reservedTagKeyRE.MatchString(k):
			return invalidParameter("Tag keys starting with 'aws:' are reserved for internal use")
		case len([]rune(v)) > 256:
			return invalidParameter("Tag value for key %q exceeds 256 characters", k)
		}
	}
	return nil
}

func (w *world) runInstances(regionName string, q runRequest) (reservation, *APIError) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.advance()
	r := w.region(regionName)
	switch {
	case q.ImageID == "":
		return reservation{}, apiErrorf(http.StatusBadRequest, "MissingParameter", "The request must contain the parameter ImageId")
	case !amiIDRE.MatchString(q.ImageID):
		return reservation{}, apiErrorf(http.StatusBadRequest, "InvalidAMIID.Malformed", "Invalid id: %q (expecting \"ami-...\")", q.ImageID)
	case q.MinCount < 1 || q.MaxCount < 1:
		return reservation{}, invalidParameter("MinCount and MaxCount must be at least 1")
	case q.MinCount > q.MaxCount:
		return reservation{}, invalidParameter("MinCount (%d) is greater than MaxCount (%d)", q.MinCount, q.MaxCount)
	case q.MaxCount > 1000:
		return reservation{}, invalidParameter("MaxCount may not exceed 1000")
	case q.InstanceType != "" && (len(q.InstanceType) > 64 || !instanceTypeRE.MatchString(q.InstanceType)):
		return reservation{}, invalidParameter("Invalid value '%s' for InstanceType.", q.InstanceType)
	case q.SubnetID != "" && !subnetIDRE.MatchString(q.SubnetID):
		return reservation{}, apiErrorf(http.StatusBadRequest, "InvalidSubnetID.Malformed", "The subnet ID '%s' is malformed", q.SubnetID)
	case len(q.ClientToken) > 64:
		return reservation{}, invalidParameter("ClientToken may have at most 64 characters")
	}
	for _, g := range q.SecurityGroupIDs {
		if !securityGroupRE.MatchString(g) {
			return reservation{}, apiErrorf(http.StatusBadRequest, "InvalidGroupId.Malformed", "Invalid id: %q (expecting \"sg-...\")", g)
		}
	}
	if err := checkTags(q.Tags); err != nil {
		return reservation{}, err
	}
	img, ok := r.images[q.ImageID]
	if !ok {
		return reservation{}, apiErrorf(http.StatusBadRequest, "InvalidAMIID.NotFound", "The image id '[%s]' does not exist", q.ImageID)
	}
	if q.ClientToken != "" {
		if rec, ok := r.tokens[q.ClientToken]; ok {
			if rec.fingerprint != q.fingerprint() {
				return reservation{}, apiErrorf(http.StatusBadRequest, "IdempotentParameterMismatch",
					"The client token %q was already used with different parameters", q.ClientToken)
			}
			res := reservation{ID: rec.reservationID}
			for _, id := range rec.instanceIDs {
				if in, ok := w.byID[id]; ok {
					res.Instances = append(res.Instances, w.snapshot(in, now))
				}
			}
			return res, nil
		}
	}
	count := q.MaxCount
	if w.limit > 0 {
		active := 0
		for _, in := range r.instances {
			if in.State != StateTerminated && in.State != StateShuttingDown {
				active++
			}
		}
		if active+q.MinCount > w.limit {
			return reservation{}, apiErrorf(http.StatusBadRequest, "InstanceLimitExceeded",
				"You have requested more instances (%d) than your current instance limit of %d allows", active+q.MinCount, w.limit)
		}
		count = min(count, w.limit-active)
	}
	if q.InstanceType == "" {
		q.InstanceType = "m1.small"
	}
	subnet := q.SubnetID
	if subnet == "" {
		subnet = "subnet-" + ImageID(regionName, "default-subnet")[4:]
	}
	groups := slices.Clone(q.SecurityGroupIDs)
	if len(groups) == 0 {
		groups = []string{"sg-" + ImageID(regionName, "default-sg")[4:]}
	}
	res := reservation{ID: w.hexID("r-")}
	rec := clientTokenRecord{fingerprint: q.fingerprint(), reservationID: res.ID}
	for i := range count {
		w.seq++
		id := w.hexID("i-")
		for w.byID[id] != nil {
			id = w.hexID("i-")
		}
		in := &instance{seq: w.seq, Instance: Instance{
			ID: id, Region: regionName, ReservationID: res.ID, ImageID: q.ImageID,
			InstanceType: q.InstanceType, KeyName: q.KeyName, SubnetID: subnet,
			VpcID: "vpc-" + ImageID(regionName, "default-vpc")[4:], AvailabilityZone: regionName + "a",
			SecurityGroupIDs: groups, ClientToken: q.ClientToken, LaunchIndex: i,
			PrivateIP: r.newPrivateIP(), Tags: maps.Clone(q.Tags), Monitoring: monitoringDisabled,
			CloudWatchAgent: img.CloudWatchAgent,
		}}
		if in.Tags == nil {
			in.Tags = map[string]string{}
		}
		if q.Monitoring {
			in.Monitoring = monitoringPending
			in.monitoringNext = &transition{at: now.Add(w.timings.MonitoringChange), to: monitoringEnabled}
		}
		w.setState(in, StatePending, now)
		if q.Running {
			w.setState(in, StateRunning, now)
			if q.Monitoring {
				in.Monitoring, in.monitoringNext = monitoringEnabled, nil
			}
		}
		w.byID[in.ID] = in
		r.instances[in.ID] = in
		r.order = append(r.order, in)
		rec.instanceIDs = append(rec.instanceIDs, in.ID)
		res.Instances = append(res.Instances, w.snapshot(in, now))
	}
	if q.ClientToken != "" {
		r.tokens[q.ClientToken] = rec
	}
	return res, nil
}

// filter is one EC2 filter: the resource matches when the named attribute
// matches any of the values (globs).
type filter struct {
	name   string
	values []string
}

// instanceAttr returns the values of a filterable instance attribute, or
// false for a filter name DescribeInstances does not know.
func instanceAttr(in *Instance, name string) ([]string, bool) {
	switch name {
	case "instance-id":
		return []string{in.ID}, true
	case "image-id":
		return []string{in.ImageID}, true
	case "instance-state-name":
		return []string{in.State}, true
	case "instance-state-code":
		return []string{strconv.Itoa(stateCodes[in.State])}, true
	case "instance-type":
		return []string{in.InstanceType}, true
	case "availability-zone":
		return []string{in.AvailabilityZone}, true
	case "subnet-id":
		return []string{in.SubnetID}, true
	case "vpc-id":
		return []string{in.VpcID}, true
	case "key-name":
		return []string{in.KeyName}, true
	case "reservation-id":
		return []string{in.ReservationID}, true
	case "client-token":
		return []string{in.ClientToken}, true
	case "monitoring-state":
		return []string{in.Monitoring}, true
	case "private-ip-address":
		return []string{in.PrivateIP}, true
	case "ip-address":
		return []string{in.PublicIP}, true
	case "instance.group-id":
		return in.SecurityGroupIDs, true
	case "tag-key":
		return slices.Collect(maps.Keys(in.Tags)), true
	case "tag-value":
		return slices.Collect(maps.Values(in.Tags)), true
	}
	if key, ok := strings.CutPrefix(name, "tag:"); ok && key != "" {
		if v, ok := in.Tags[key]; ok {
			return []string{v}, true
		}
		return nil, true
	}
	return nil, false
}

func statusAttr(s *Instance, name string) ([]string, bool) {
	switch name {
	case "instance-state-name":
		return []string{s.State}, true
	case "instance-state-code":
		return []string{strconv.Itoa(stateCodes[s.State])}, true
	case "availability-zone":
		return []string{s.AvailabilityZone}, true
	case "system-status.status":
		return []string{s.SystemStatus}, true
	case "instance-status.status":
		return []string{s.InstanceStatus}, true
	}
	return nil, false
}

func matchFilters(s *Instance, filters []filter, attr func(*Instance, string) ([]string, bool)) (bool, *APIError) {
	for _, f := range filters {
		vals, ok := attr(s, f.name)
		if !ok {
			return false, invalidParameter("The filter '%s' is invalid", f.name)
		}
		if !globAny(f.values, vals...) {
			return false, nil
		}
	}
	return true, nil
}

// pageQuery is the common part of the paged Describe calls.
type pageQuery struct {
	ids        []string
	filters    []filter
	maxResults int // 0: everything
	nextToken  string
}

func encodePageToken(seq int64) string { return "sim-" + strconv.FormatInt(seq, 36) }

func decodePageToken(tok string) (int64, *APIError) {
	if tok == "" {
		return 0, nil
	}
	s, ok := strings.CutPrefix(tok, "sim-")
	n, err := strconv.ParseInt(s, 36, 64)
	if !ok || err != nil || n < 0 {
		return 0, apiErrorf(http.StatusBadRequest, "InvalidNextToken", "The specified token %q is invalid", tok)
	}
	return n, nil
}

// namedInstances is selectInstances for the actions that need at least one
// instance id (start, stop, terminate, monitor).
func (w *world) namedInstances(r *regionState, ids []string) ([]*instance, *APIError) {
	if len(ids) == 0 {
		return nil, apiErrorf(http.StatusBadRequest, "MissingParameter", "The request must contain the parameter InstanceId")
	}
	return w.selectInstances(r, ids)
}

// selectInstances resolves explicit ids (all must exist in the region) or
// every instance of the region, in launch order. Call with mu held.
func (w *world) selectInstances(r *regionState, ids []string) ([]*instance, *APIError) {
	if len(ids) == 0 {
		return slices.Clone(r.order), nil
	}
	var malformed, missing []string
	seen := map[string]bool{}
	var out []*instance
	for _, id := range ids {
		if !instanceIDRE.MatchString(id) {
			malformed = append(malformed, id)
			continue
		}
		in, ok := r.instances[id]
		if !ok {
			missing = append(missing, id)
			continue
		}
		if !seen[id] {
			seen[id] = true
			out = append(out, in)
		}
	}
	if len(malformed) > 0 {
		return nil, apiErrorf(http.StatusBadRequest, "InvalidInstanceID.Malformed", "Invalid id: %q", malformed[0])
	}
	if len(missing) == 1 {
		return nil, apiErrorf(http.StatusBadRequest, "InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", missing[0])
	}
	if len(missing) > 1 {
		return nil, apiErrorf(http.StatusBadRequest, "InvalidInstanceID.NotFound", "The instance IDs '%s' do not exist", strings.Join(missing, ", "))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out, nil
}

func checkPaging(q pageQuery, minResults int) *APIError {
	if q.maxResults == 0 {
		return nil
	}
	if len(q.ids) > 0 {
		return apiErrorf(http.StatusBadRequest, "InvalidParameterCombination",
			"The parameter instancesSet cannot be used with the parameter maxResults")
	}
	if q.maxResults < minResults || q.maxResults > 1000 {
		return invalidParameter("Value ( %d ) for parameter maxResults is invalid. Expecting a value between %d and 1000.", q.maxResults, minResults)
	}
	return nil
}

// page applies filters, the token and the page size to candidates already
// in launch order.
func (w *world) page(cands []*instance, q pageQuery, now time.Time, keep func(*Instance) (bool, *APIError)) ([]Instance, string, *APIError) {
	after, err := decodePageToken(q.nextToken)
	if err != nil {
		return nil, "", err
	}
	var out []Instance
	var lastSeq int64
	for _, in := range cands {
		if in.seq <= after {
			continue
		}
		s := w.snapshot(in, now)
		ok, err := keep(&s)
		if err != nil {
			return nil, "", err
		}
		if !ok {
			continue
		}
		if q.maxResults > 0 && len(out) == q.maxResults {
			return out, encodePageToken(lastSeq), nil
		}
		out = append(out, s)
		lastSeq = in.seq
	}
	return out, "", nil
}

func (w *world) describeInstances(regionName string, q pageQuery) ([]Instance, string, *APIError) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.advance()
	if err := checkPaging(q, 5); err != nil {
		return nil, "", err
	}
	cands, err := w.selectInstances(w.region(regionName), q.ids)
	if err != nil {
		return nil, "", err
	}
	return w.page(cands, q, now, func(s *Instance) (bool, *APIError) {
		return matchFilters(s, q.filters, instanceAttr)
	})
}

func (w *world) describeInstanceStatus(regionName string, q pageQuery, includeAll bool) ([]Instance, string, *APIError) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.advance()
	if err := checkPaging(q, 5); err != nil {
		return nil, "", err
	}
	cands, err := w.selectInstances(w.region(regionName), q.ids)
	if err != nil {
		return nil, "", err
	}
	return w.page(cands, q, now, func(s *Instance) (bool, *APIError) {
		if !includeAll && s.State != StateRunning {
			return false, nil
		}
		return matchFilters(s, q.filters, statusAttr)
	})
}

// stateChange is one entry of a Start/Stop/TerminateInstances answer.
type stateChange struct {
	ID       string
	Previous string
	Current  string
}

// changeStates applies op ("start", "stop", "terminate") to every instance
// or, when one of them is in a state op cannot leave, to none.
func (w *world) changeStates(regionName string, ids []string, op string) ([]stateChange, *APIError) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.advance()
	ins, err := w.namedInstances(w.region(regionName), ids)
	if err != nil {
		return nil, err
	}
	for _, in := range ins {
		if err := checkTransition(in, op); err != nil {
			return nil, err
		}
	}
	out := make([]stateChange, 0, len(ins))
	for _, in := range ins {
		prev := in.State
		w.applyTransition(in, op, now)
		out = append(out, stateChange{ID: in.ID, Previous: prev, Current: in.State})
	}
	return out, nil
}

func checkTransition(in *instance, op string) *APIError {
	refuse := func(verb string) *APIError {
		return apiErrorf(http.StatusBadRequest, "IncorrectInstanceState",
			"The instance '%s' is not in a state from which it can be %s.", in.ID, verb)
	}
	switch op {
	case "start":
		switch in.State {
		case StateStopping, StateShuttingDown, StateTerminated:
			return refuse("started")
		}
	case "stop":
		switch in.State {
		case StatePending, StateShuttingDown, StateTerminated:
			return refuse("stopped")
		}
	case "terminate":
	default:
		return apiErrorf(http.StatusBadRequest, "InvalidAction", "unknown state change %q", op)
	}
	return nil
}

// applyTransition performs an allowed op; states where op is a no-op stay.
func (w *world) applyTransition(in *instance, op string, now time.Time) {
	switch {
	case op == "start" && in.State == StateStopped:
		w.setState(in, StatePending, now)
	case op == "stop" && in.State == StateRunning:
		w.setState(in, StateStopping, now)
	case op == "terminate" && in.State != StateShuttingDown && in.State != StateTerminated:
		w.setState(in, StateShuttingDown, now)
	}
}

// tagChange is one Tag.N of CreateTags/DeleteTags; a nil Value in a delete
// removes the key whatever its value.
type tagChange struct {
	Key   string
	Value *string
}

func (w *world) createTags(regionName string, ids []string, tags []tagChange) *APIError {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.advance()
	if len(ids) == 0 || len(tags) == 0 {
		return apiErrorf(http.StatusBadRequest, "MissingParameter", "The request must contain the parameters ResourceId and Tag")
	}
	ins, err := w.taggable(w.region(regionName), ids)
	if err != nil {
		return err
	}
	set := map[string]string{}
	for _, t := range tags {
		v := ""
		if t.Value != nil {
			v = *t.Value
		}
		set[t.Key] = v
	}
	if err := checkTags(set); err != nil {
		return err
	}
	for _, in := range ins {
		merged := maps.Clone(in.Tags)
		maps.Copy(merged, set)
		if len(merged) > 50 {
			return apiErrorf(http.StatusBadRequest, "TagLimitExceeded", "the maximum number of tags per resource is 50")
		}
	}
	for _, in := range ins {
		maps.Copy(in.Tags, set)
	}
	return nil
}

func (w *world) deleteTags(regionName string, ids []string, tags []tagChange) *APIError {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.advance()
	if len(ids) == 0 {
		return apiErrorf(http.StatusBadRequest, "MissingParameter", "The request must contain the parameter ResourceId")
	}
	ins, err := w.taggable(w.region(regionName), ids)
	if err != nil {
		return err
	}
	for _, t := range tags {
		if reservedTagKeyRE.MatchString(t.Key) {
			return invalidParameter("Tag keys starting with 'aws:' are reserved for internal use")
		}
	}
	for _, in := range ins {
		if len(tags) == 0 { // no Tag.N: delete every tag
			clear(in.Tags)
		}
		for _, t := range tags {
			if v, ok := in.Tags[t.Key]; ok && (t.Value == nil || *t.Value == v) {
				delete(in.Tags, t.Key)
			}
		}
	}
	return nil
}

// taggable resolves tag targets: instances only in this simulator.
func (w *world) taggable(r *regionState, ids []string) ([]*instance, *APIError) {
	for _, id := range ids {
		if !strings.HasPrefix(id, "i-") {
			return nil, apiErrorf(http.StatusBadRequest, "InvalidID", "The ID '%s' is not valid", id)
		}
	}
	return w.selectInstances(r, ids)
}

// monitoringChange is one entry of a Monitor/UnmonitorInstances answer.
type monitoringChange struct {
	ID    string
	State string
}

func (w *world) setMonitoring(regionName string, ids []string, enable bool) ([]monitoringChange, *APIError) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.advance()
	ins, err := w.namedInstances(w.region(regionName), ids)
	if err != nil {
		return nil, err
	}
	for _, in := range ins {
		if in.State == StateTerminated || in.State == StateShuttingDown {
			return nil, apiErrorf(http.StatusBadRequest, "IncorrectInstanceState",
				"The instance '%s' is not in a state from which monitoring can be changed.", in.ID)
		}
	}
	out := make([]monitoringChange, 0, len(ins))
	for _, in := range ins {
		switch {
		case enable && (in.Monitoring == monitoringDisabled || in.Monitoring == monitoringDisabling):
			in.Monitoring = monitoringPending
			in.monitoringNext = &transition{at: now.Add(w.timings.MonitoringChange), to: monitoringEnabled}
		case !enable && (in.Monitoring == monitoringEnabled || in.Monitoring == monitoringPending):
			in.Monitoring = monitoringDisabling
			in.monitoringNext = &transition{at: now.Add(w.timings.MonitoringChange), to: monitoringDisabled}
		}
		out = append(out, monitoringChange{ID: in.ID, State: in.Monitoring})
	}
	return out, nil
}

// imageQuery is a DescribeImages request.
type imageQuery struct {
	ids        []string
	owners     []string
	filters    []filter
	maxResults int
	nextToken  string
}

func imageAttr(img *Image, name string) ([]string, bool) {
	switch name {
	case "name":
		return []string{img.Name}, true
	case "image-id":
		return []string{img.ID}, true
	case "description":
		return []string{img.Description}, true
	case "state":
		return []string{"available"}, true
	case "owner-id":
		return []string{OwnerID}, true
	case "architecture":
		return []string{"x86_64"}, true
	case "is-public":
		return []string{"false"}, true
	}
	return nil, false
}

func (w *world) describeImages(regionName string, q imageQuery) ([]Image, string, *APIError) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.advance()
	r := w.region(regionName)
	if q.maxResults != 0 && (len(q.ids) > 0 || q.maxResults < 6 || q.maxResults > 1000) {
		return nil, "", invalidParameter("MaxResults must be between 6 and 1000 and cannot be used with ImageId")
	}
	var cands []*Image
	if len(q.ids) > 0 {
		for _, id := range q.ids {
			if !amiIDRE.MatchString(id) {
				return nil, "", apiErrorf(http.StatusBadRequest, "InvalidAMIID.Malformed", "Invalid id: %q (expecting \"ami-...\")", id)
			}
			img, ok := r.images[id]
			if !ok {
				return nil, "", apiErrorf(http.StatusBadRequest, "InvalidAMIID.NotFound", "The image id '[%s]' does not exist", id)
			}
			cands = append(cands, img)
		}
	} else {
		cands = slices.Collect(maps.Values(r.images))
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].ID < cands[j].ID })
	for _, o := range q.owners {
		if o != "self" && o != OwnerID {
			return nil, "", nil // nothing of another owner is simulated
		}
	}
	var out []Image
	for _, img := range cands {
		if q.nextToken != "" && img.ID <= q.nextToken {
			continue
		}
		ok := true
		for _, f := range q.filters {
			vals, known := imageAttr(img, f.name)
			if !known {
				return nil, "", invalidParameter("The filter '%s' is invalid", f.name)
			}
			if !globAny(f.values, vals...) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		if q.maxResults > 0 && len(out) == q.maxResults {
			return out, out[len(out)-1].ID, nil
		}
		out = append(out, *img)
	}
	return out, "", nil
}

// metricSource is what CloudWatch needs to know about an instance.
type metricSource struct {
	runs       []interval
	agent      bool
	resolution time.Duration // 60 s with detailed monitoring, 300 s without
}

// metricSources returns what CloudWatch needs of the named instances of a
// region; unknown ids are absent.
func (w *world) metricSources(regionName string, ids []string) (map[string]metricSource, time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.advance()
	out := make(map[string]metricSource, len(ids))
	r, ok := w.regions[regionName]
	if !ok {
		return out, now
	}
	for _, id := range ids {
		in, ok := r.instances[id]
		if !ok {
			continue
		}
		src := metricSource{runs: slices.Clone(in.runs), agent: in.CloudWatchAgent, resolution: 5 * time.Minute}
		if in.Monitoring == monitoringEnabled {
			src.resolution = time.Minute
		}
		out[id] = src
	}
	return out, now
}
