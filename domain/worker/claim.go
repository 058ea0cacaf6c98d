package worker

// InstanceClaimStreamPrefix names the streams that record which worker
// manages an EC2 instance. The stream of one instance is appended to with an
// expected revision, so that two imports of one instance racing each other
// cannot both succeed: the read model that answers "is this instance
// managed?" may lag behind the log, the claim stream cannot.
const InstanceClaimStreamPrefix = "worker_instance-"

// InstanceClaimStream returns the claim stream of an instance.
func InstanceClaimStream(region, instanceID string) string {
	return InstanceClaimStreamPrefix + region + "-" + instanceID
}

// InstanceClaimed: a worker took an instance over (an import). The claim
// holds while that worker exists and is not terminated or removed; a later
// claim by another worker is only allowed once it no longer holds.
type InstanceClaimed struct {
	Region     string `json:"region"`
	InstanceID string `json:"instance_id"`
	WorkerID   string `json:"worker_id"`
}

// EventType implements domain.Event.
func (InstanceClaimed) EventType() string { return "worker.instance_claimed.v1" }
