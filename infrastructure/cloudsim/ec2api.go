package cloudsim

import (
	"bytes"
	"encoding/xml"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// The EC2 Query API: form-encoded requests (Action=...&Version=2016-11-15),
// XML answers in the 2016-11-15 namespace, EC2-style error documents.

const ec2APIVersion = "2016-11-15"

// maxListItems bounds the entries of one indexed parameter list.
const maxListItems = 1000

// queryForm reads the indexed parameters of an EC2 Query request.
type queryForm url.Values

func (f queryForm) get(key string) string { return url.Values(f).Get(key) }

func (f queryForm) has(key string) bool {
	_, ok := f[key]
	return ok
}

// indices returns, in order, the distinct N of the keys prefix.N or
// prefix.N.<anything>.
func (f queryForm) indices(prefix string) []int {
	seen := map[int]bool{}
	for k := range f {
		rest, ok := strings.CutPrefix(k, prefix+".")
		if !ok {
			continue
		}
		num, _, _ := strings.Cut(rest, ".")
		n, err := strconv.Atoi(num)
		if err != nil || n < 1 || num[0] == '0' {
			continue
		}
		seen[n] = true
	}
	out := make([]int, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Ints(out)
	if len(out) > maxListItems {
		out = out[:maxListItems]
	}
	return out
}

// list returns the values of prefix.1, prefix.2, ... in index order.
func (f queryForm) list(prefix string) []string {
	var out []string
	for _, n := range f.indices(prefix) {
		if v, ok := f[prefix+"."+strconv.Itoa(n)]; ok && len(v) > 0 {
			out = append(out, v[0])
		}
	}
	return out
}

func (f queryForm) filters(prefix string) ([]filter, *APIError) {
	var out []filter
	for _, n := range f.indices(prefix) {
		p := prefix + "." + strconv.Itoa(n)
		name := f.get(p + ".Name")
		if name == "" {
			return nil, apiErrorf(http.StatusBadRequest, "InvalidParameterValue", "%s.Name is missing", p)
		}
		out = append(out, filter{name: name, values: f.list(p + ".Value")})
	}
	return out, nil
}

func (f queryForm) integer(key string) (int, *APIError) {
	v := f.get(key)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, invalidParameter("Invalid value '%s' for %s", v, key)
	}
	return n, nil
}

func (f queryForm) boolean(key string) (bool, *APIError) {
	switch v := f.get(key); v {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	default:
		return false, invalidParameter("Invalid value '%s' for %s, expecting true or false", v, key)
	}
}

func (f queryForm) pageQuery(ids []string) (pageQuery, *APIError) {
	filters, err := f.filters("Filter")
	if err != nil {
		return pageQuery{}, err
	}
	maxResults, err := f.integer("MaxResults")
	if err != nil {
		return pageQuery{}, err
	}
	return pageQuery{ids: ids, filters: filters, maxResults: maxResults, nextToken: f.get("NextToken")}, nil
}

// ec2Actions are the supported actions. Anything else is InvalidAction.
var ec2Actions = map[string]func(*Simulator, string, queryForm) (ec2Response, *APIError){
	"RunInstances":           (*Simulator).ec2RunInstances,
	"DescribeInstances":      (*Simulator).ec2DescribeInstances,
	"DescribeInstanceStatus": (*Simulator).ec2DescribeInstanceStatus,
	"StartInstances":         (*Simulator).ec2StateChange,
	"StopInstances":          (*Simulator).ec2StateChange,
	"TerminateInstances":     (*Simulator).ec2StateChange,
	"CreateTags":             (*Simulator).ec2CreateTags,
	"DeleteTags":             (*Simulator).ec2DeleteTags,
	"MonitorInstances":       (*Simulator).ec2Monitoring,
	"UnmonitorInstances":     (*Simulator).ec2Monitoring,
	"DescribeImages":         (*Simulator).ec2DescribeImages,
}

// serveEC2 answers one EC2 Query API request for region.
func (s *Simulator) serveEC2(w http.ResponseWriter, r *http.Request, region string) {
	requestID := s.requestID()
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	if err := r.ParseForm(); err != nil {
		writeEC2Error(w, requestID, invalidParameter("cannot read the request: %v", err))
		return
	}
	form := queryForm(r.Form)
	action := form.get("Action")
	if action == "" {
		writeEC2Error(w, requestID, apiErrorf(http.StatusBadRequest, "MissingAction", "The request must contain the parameter Action"))
		return
	}
	api := serviceEC2 + ":" + action
	latency, ok := s.begin(r, api, func(e *APIError) { writeEC2Error(w, requestID, e) })
	if !ok {
		return
	}
	if v := form.get("Version"); v != ec2APIVersion {
		writeEC2Error(w, requestID, apiErrorf(http.StatusBadRequest, "NoSuchVersion",
			"An invalid or out-of-date value was specified for the Version parameter: %q", v))
		return
	}
	handle, known := ec2Actions[action]
	if !known {
		writeEC2Error(w, requestID, apiErrorf(http.StatusBadRequest, "InvalidAction",
			"The action %s is not valid for this web service.", action))
		return
	}
	if dry, _ := form.boolean("DryRun"); dry {
		writeEC2Error(w, requestID, apiErrorf(http.StatusPreconditionFailed, "DryRunOperation",
			"Request would have succeeded, but DryRun flag is set."))
		return
	}
	resp, apiErr := handle(s, region, form)
	if !wait(r, latency) {
		return
	}
	if apiErr != nil {
		writeEC2Error(w, requestID, apiErr)
		return
	}
	writeEC2(w, requestID, resp)
}

func writeEC2(w http.ResponseWriter, requestID string, resp ec2Response) {
	resp.stamp(requestID)
	var buf bytes.Buffer
	buf.WriteString(xml.Header)
	if err := xml.NewEncoder(&buf).Encode(resp); err != nil {
		writeEC2Error(w, requestID, apiErrorf(http.StatusInternalServerError, "InternalError", "encode the answer: %v", err))
		return
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.Header().Set("x-amzn-RequestId", requestID)
	_, _ = w.Write(buf.Bytes())
}

func writeEC2Error(w http.ResponseWriter, requestID string, e *APIError) {
	var buf bytes.Buffer
	buf.WriteString(xml.Header)
	_ = xml.NewEncoder(&buf).Encode(xmlErrorResponse{
		Errors: []xmlError{{Code: e.Code, Message: e.Message}}, RequestID: requestID,
	})
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.Header().Set("x-amzn-RequestId", requestID)
	w.WriteHeader(e.Status)
	_, _ = w.Write(buf.Bytes())
}

func (s *Simulator) ec2RunInstances(region string, f queryForm) (ec2Response, *APIError) {
	q := runRequest{
		ImageID: f.get("ImageId"), InstanceType: f.get("InstanceType"), SubnetID: f.get("SubnetId"),
		KeyName: f.get("KeyName"), ClientToken: f.get("ClientToken"), SecurityGroupIDs: f.list("SecurityGroupId"),
	}
	var err *APIError
	if !f.has("MinCount") || !f.has("MaxCount") {
		return nil, apiErrorf(http.StatusBadRequest, "MissingParameter", "The request must contain the parameters MinCount and MaxCount")
	}
	if q.MinCount, err = f.integer("MinCount"); err != nil {
		return nil, err
	}
	if q.MaxCount, err = f.integer("MaxCount"); err != nil {
		return nil, err
	}
	if q.Monitoring, err = f.boolean("Monitoring.Enabled"); err != nil {
		return nil, err
	}
	if len(f.list("SecurityGroup")) > 0 {
		return nil, invalidParameter("the simulator supports security groups by id (SecurityGroupId) only")
	}
	for _, n := range f.indices("TagSpecification") {
		p := "TagSpecification." + strconv.Itoa(n)
		switch rt := f.get(p + ".ResourceType"); rt {
		case "instance":
			if q.Tags == nil {
				q.Tags = map[string]string{}
			}
			for _, m := range f.indices(p + ".Tag") {
				t := p + ".Tag." + strconv.Itoa(m)
				q.Tags[f.get(t+".Key")] = f.get(t + ".Value")
			}
		case "volume", "network-interface", "spot-instances-request":
		default:
			return nil, invalidParameter("'%s' is not a valid taggable resource type for this operation.", rt)
		}
	}
	res, err := s.world.runInstances(region, q)
	if err != nil {
		return nil, err
	}
	out := &xmlRunInstancesResponse{xmlReservation: xmlReservation{ReservationID: res.ID, OwnerID: OwnerID, Groups: []xmlGroup{}}}
	for _, in := range res.Instances {
		out.Instances = append(out.Instances, toXMLInstance(in))
	}
	return out, nil
}

func (s *Simulator) ec2DescribeInstances(region string, f queryForm) (ec2Response, *APIError) {
	q, err := f.pageQuery(f.list("InstanceId"))
	if err != nil {
		return nil, err
	}
	ins, next, err := s.world.describeInstances(region, q)
	if err != nil {
		return nil, err
	}
	return &xmlDescribeInstancesResponse{Reservations: reservations(ins), NextToken: next}, nil
}

func (s *Simulator) ec2DescribeInstanceStatus(region string, f queryForm) (ec2Response, *APIError) {
	q, err := f.pageQuery(f.list("InstanceId"))
	if err != nil {
		return nil, err
	}
	all, err := f.boolean("IncludeAllInstances")
	if err != nil {
		return nil, err
	}
	ins, next, err := s.world.describeInstanceStatus(region, q, all)
	if err != nil {
		return nil, err
	}
	out := &xmlDescribeInstanceStatusResponse{NextToken: next}
	for _, in := range ins {
		out.Statuses = append(out.Statuses, xmlInstanceStatus{
			InstanceID: in.ID, AvailabilityZone: in.AvailabilityZone, State: xmlStateOf(in.State),
			SystemStatus: statusSummary(in.SystemStatus), InstanceStatus: statusSummary(in.InstanceStatus),
		})
	}
	return out, nil
}

func (s *Simulator) ec2StateChange(region string, f queryForm) (ec2Response, *APIError) {
	action := f.get("Action")
	op := map[string]string{"StartInstances": "start", "StopInstances": "stop", "TerminateInstances": "terminate"}[action]
	changes, err := s.world.changeStates(region, f.list("InstanceId"), op)
	if err != nil {
		return nil, err
	}
	out := &xmlStateChangeResponse{XMLName: xml.Name{Local: action + "Response"}}
	for _, c := range changes {
		out.Instances = append(out.Instances, xmlStateChange{
			InstanceID: c.ID, CurrentState: xmlStateOf(c.Current), PreviousState: xmlStateOf(c.Previous),
		})
	}
	return out, nil
}

func (f queryForm) tagChanges() []tagChange {
	var out []tagChange
	for _, n := range f.indices("Tag") {
		p := "Tag." + strconv.Itoa(n)
		t := tagChange{Key: f.get(p + ".Key")}
		if f.has(p + ".Value") {
			v := f.get(p + ".Value")
			t.Value = &v
		}
		out = append(out, t)
	}
	return out
}

func (s *Simulator) ec2CreateTags(region string, f queryForm) (ec2Response, *APIError) {
	if err := s.world.createTags(region, f.list("ResourceId"), f.tagChanges()); err != nil {
		return nil, err
	}
	return &xmlReturnResponse{XMLName: xml.Name{Local: "CreateTagsResponse"}, Return: true}, nil
}

func (s *Simulator) ec2DeleteTags(region string, f queryForm) (ec2Response, *APIError) {
	if err := s.world.deleteTags(region, f.list("ResourceId"), f.tagChanges()); err != nil {
		return nil, err
	}
	return &xmlReturnResponse{XMLName: xml.Name{Local: "DeleteTagsResponse"}, Return: true}, nil
}

func (s *Simulator) ec2Monitoring(region string, f queryForm) (ec2Response, *APIError) {
	action := f.get("Action")
	changes, err := s.world.setMonitoring(region, f.list("InstanceId"), action == "MonitorInstances")
	if err != nil {
		return nil, err
	}
	out := &xmlMonitoringResponse{XMLName: xml.Name{Local: action + "Response"}}
	for _, c := range changes {
		out.Instances = append(out.Instances, xmlInstanceMonitoring{InstanceID: c.ID, Monitoring: xmlMonitoring{State: c.State}})
	}
	return out, nil
}

func (s *Simulator) ec2DescribeImages(region string, f queryForm) (ec2Response, *APIError) {
	filters, err := f.filters("Filter")
	if err != nil {
		return nil, err
	}
	maxResults, err := f.integer("MaxResults")
	if err != nil {
		return nil, err
	}
	imgs, next, err := s.world.describeImages(region, imageQuery{
		ids: f.list("ImageId"), owners: f.list("Owner"), filters: filters,
		maxResults: maxResults, nextToken: f.get("NextToken"),
	})
	if err != nil {
		return nil, err
	}
	out := &xmlDescribeImagesResponse{NextToken: next}
	for _, img := range imgs {
		out.Images = append(out.Images, toXMLImage(img))
	}
	return out, nil
}
