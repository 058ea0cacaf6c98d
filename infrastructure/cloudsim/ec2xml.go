package cloudsim

import (
	"encoding/xml"
	"maps"
	"slices"
	"strings"
)

// XML shapes of the EC2 Query API answers, with the element names the
// aws-sdk-go-v2 ec2 deserializers read (service/ec2/deserializers.go).

const ec2Namespace = "http://ec2.amazonaws.com/doc/2016-11-15/"

// ec2TimeFormat is how EC2 writes timestamps such as launchTime.
const ec2TimeFormat = "2006-01-02T15:04:05.000Z"

// xmlEnvelope is the namespace and request id every answer carries.
type xmlEnvelope struct {
	Xmlns     string `xml:"xmlns,attr"`
	RequestID string `xml:"requestId"`
}

func (e *xmlEnvelope) stamp(requestID string) { e.Xmlns, e.RequestID = ec2Namespace, requestID }

// ec2Response is an EC2 answer document.
type ec2Response interface{ stamp(requestID string) }

type xmlState struct {
	Code int    `xml:"code"`
	Name string `xml:"name"`
}

type xmlTag struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

type xmlGroup struct {
	GroupID   string `xml:"groupId"`
	GroupName string `xml:"groupName"`
}

type xmlPlacement struct {
	AvailabilityZone string `xml:"availabilityZone"`
	Tenancy          string `xml:"tenancy"`
}

type xmlMonitoring struct {
	State string `xml:"state"`
}

type xmlInstance struct {
	InstanceID         string        `xml:"instanceId"`
	ImageID            string        `xml:"imageId"`
	State              xmlState      `xml:"instanceState"`
	PrivateDNSName     string        `xml:"privateDnsName"`
	DNSName            string        `xml:"dnsName"`
	Reason             string        `xml:"reason"`
	KeyName            string        `xml:"keyName,omitempty"`
	AMILaunchIndex     int           `xml:"amiLaunchIndex"`
	InstanceType       string        `xml:"instanceType"`
	LaunchTime         string        `xml:"launchTime"`
	Placement          xmlPlacement  `xml:"placement"`
	Monitoring         xmlMonitoring `xml:"monitoring"`
	SubnetID           string        `xml:"subnetId,omitempty"`
	VpcID              string        `xml:"vpcId,omitempty"`
	PrivateIPAddress   string        `xml:"privateIpAddress,omitempty"`
	IPAddress          string        `xml:"ipAddress,omitempty"`
	SourceDestCheck    bool          `xml:"sourceDestCheck"`
	Groups             []xmlGroup    `xml:"groupSet>item"`
	Architecture       string        `xml:"architecture"`
	RootDeviceType     string        `xml:"rootDeviceType"`
	RootDeviceName     string        `xml:"rootDeviceName"`
	VirtualizationType string        `xml:"virtualizationType"`
	ClientToken        string        `xml:"clientToken,omitempty"`
	Tags               []xmlTag      `xml:"tagSet>item"`
	Hypervisor         string        `xml:"hypervisor"`
	EbsOptimized       bool          `xml:"ebsOptimized"`
	EnaSupport         bool          `xml:"enaSupport"`
	PlatformDetails    string        `xml:"platformDetails"`
}

type xmlReservation struct {
	ReservationID string        `xml:"reservationId"`
	OwnerID       string        `xml:"ownerId"`
	Groups        []xmlGroup    `xml:"groupSet>item"`
	Instances     []xmlInstance `xml:"instancesSet>item"`
}

type xmlRunInstancesResponse struct {
	XMLName xml.Name `xml:"RunInstancesResponse"`
	xmlEnvelope
	xmlReservation
}

type xmlDescribeInstancesResponse struct {
	XMLName xml.Name `xml:"DescribeInstancesResponse"`
	xmlEnvelope
	Reservations []xmlReservation `xml:"reservationSet>item"`
	NextToken    string           `xml:"nextToken,omitempty"`
}

type xmlStatusDetail struct {
	Name   string `xml:"name"`
	Status string `xml:"status"`
}

type xmlStatusSummary struct {
	Status  string            `xml:"status"`
	Details []xmlStatusDetail `xml:"details>item"`
}

type xmlInstanceStatus struct {
	InstanceID       string           `xml:"instanceId"`
	AvailabilityZone string           `xml:"availabilityZone"`
	State            xmlState         `xml:"instanceState"`
	SystemStatus     xmlStatusSummary `xml:"systemStatus"`
	InstanceStatus   xmlStatusSummary `xml:"instanceStatus"`
}

type xmlDescribeInstanceStatusResponse struct {
	XMLName xml.Name `xml:"DescribeInstanceStatusResponse"`
	xmlEnvelope
	Statuses  []xmlInstanceStatus `xml:"instanceStatusSet>item"`
	NextToken string              `xml:"nextToken,omitempty"`
}

type xmlStateChange struct {
	InstanceID    string   `xml:"instanceId"`
	CurrentState  xmlState `xml:"currentState"`
	PreviousState xmlState `xml:"previousState"`
}

type xmlStateChangeResponse struct {
	XMLName xml.Name
	xmlEnvelope
	Instances []xmlStateChange `xml:"instancesSet>item"`
}

type xmlReturnResponse struct {
	XMLName xml.Name
	xmlEnvelope
	Return bool `xml:"return"`
}

type xmlInstanceMonitoring struct {
	InstanceID string        `xml:"instanceId"`
	Monitoring xmlMonitoring `xml:"monitoring"`
}

type xmlMonitoringResponse struct {
	XMLName xml.Name
	xmlEnvelope
	Instances []xmlInstanceMonitoring `xml:"instancesSet>item"`
}

type xmlImage struct {
	ImageID            string `xml:"imageId"`
	ImageLocation      string `xml:"imageLocation"`
	ImageState         string `xml:"imageState"`
	ImageOwnerID       string `xml:"imageOwnerId"`
	CreationDate       string `xml:"creationDate"`
	IsPublic           bool   `xml:"isPublic"`
	Architecture       string `xml:"architecture"`
	ImageType          string `xml:"imageType"`
	Name               string `xml:"name"`
	Description        string `xml:"description"`
	RootDeviceType     string `xml:"rootDeviceType"`
	RootDeviceName     string `xml:"rootDeviceName"`
	VirtualizationType string `xml:"virtualizationType"`
	Hypervisor         string `xml:"hypervisor"`
	EnaSupport         bool   `xml:"enaSupport"`
	PlatformDetails    string `xml:"platformDetails"`
}

type xmlDescribeImagesResponse struct {
	XMLName xml.Name `xml:"DescribeImagesResponse"`
	xmlEnvelope
	Images    []xmlImage `xml:"imagesSet>item"`
	NextToken string     `xml:"nextToken,omitempty"`
}

type xmlError struct {
	Code    string `xml:"Code"`
	Message string `xml:"Message"`
}

type xmlErrorResponse struct {
	XMLName   xml.Name   `xml:"Response"`
	Errors    []xmlError `xml:"Errors>Error"`
	RequestID string     `xml:"RequestID"`
}

func xmlStateOf(name string) xmlState { return xmlState{Code: stateCodes[name], Name: name} }

func xmlTags(tags map[string]string) []xmlTag {
	out := make([]xmlTag, 0, len(tags))
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		out = append(out, xmlTag{Key: k, Value: tags[k]})
	}
	return out
}

func xmlGroups(ids []string) []xmlGroup {
	out := make([]xmlGroup, 0, len(ids))
	for _, id := range ids {
		out = append(out, xmlGroup{GroupID: id, GroupName: "sim-" + id})
	}
	return out
}

func toXMLInstance(in Instance) xmlInstance {
	x := xmlInstance{
		InstanceID: in.ID, ImageID: in.ImageID, State: xmlStateOf(in.State),
		KeyName: in.KeyName, AMILaunchIndex: in.LaunchIndex, InstanceType: in.InstanceType,
		LaunchTime: in.LaunchTime.UTC().Format(ec2TimeFormat),
		Placement:  xmlPlacement{AvailabilityZone: in.AvailabilityZone, Tenancy: "default"},
		Monitoring: xmlMonitoring{State: in.Monitoring}, SubnetID: in.SubnetID, VpcID: in.VpcID,
		PrivateIPAddress: in.PrivateIP, IPAddress: in.PublicIP, SourceDestCheck: true,
		Groups: xmlGroups(in.SecurityGroupIDs), Architecture: "x86_64", RootDeviceType: "ebs",
		RootDeviceName: "/dev/sda1", VirtualizationType: "hvm", ClientToken: in.ClientToken,
		Tags: xmlTags(in.Tags), Hypervisor: "xen", EbsOptimized: true, EnaSupport: true,
		PlatformDetails: "Linux/UNIX",
	}
	if in.PrivateIP != "" {
		x.PrivateDNSName = "ip-" + strings.ReplaceAll(in.PrivateIP, ".", "-") + "." + in.Region + ".compute.internal"
	}
	if in.State == StateStopped || in.State == StateStopping || in.State == StateTerminated || in.State == StateShuttingDown {
		x.Reason = "User initiated (" + in.StateSince.UTC().Format("2006-01-02 15:04:05") + " GMT)"
	}
	return x
}

// reservations groups instances, in order, by reservation.
func reservations(ins []Instance) []xmlReservation {
	var out []xmlReservation
	index := map[string]int{}
	for _, in := range ins {
		i, ok := index[in.ReservationID]
		if !ok {
			i = len(out)
			index[in.ReservationID] = i
			out = append(out, xmlReservation{ReservationID: in.ReservationID, OwnerID: OwnerID,
				Groups: []xmlGroup{}})
		}
		out[i].Instances = append(out[i].Instances, toXMLInstance(in))
	}
	return out
}

// statusSummary is a status-check summary with its reachability detail.
func statusSummary(status string) xmlStatusSummary {
	detail := map[string]string{
		statusOK: "passed", "impaired": "failed", statusInitializing: "initializing",
		"insufficient-data": "insufficient-data",
	}[status]
	s := xmlStatusSummary{Status: status}
	if detail != "" {
		s.Details = []xmlStatusDetail{{Name: "reachability", Status: detail}}
	}
	return s
}

func toXMLImage(img Image) xmlImage {
	return xmlImage{
		ImageID: img.ID, ImageLocation: OwnerID + "/" + img.Name, ImageState: "available",
		ImageOwnerID: OwnerID, CreationDate: img.CreationDate.UTC().Format(ec2TimeFormat),
		Architecture: "x86_64", ImageType: "machine", Name: img.Name, Description: img.Description,
		RootDeviceType: "ebs", RootDeviceName: "/dev/sda1", VirtualizationType: "hvm",
		Hypervisor: "xen", EnaSupport: true, PlatformDetails: "Linux/UNIX",
	}
}
