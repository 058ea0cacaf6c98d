package cloudsim

import (
	"maps"
	"net/http"
	"slices"
	"sort"
	"time"
)

// Console changes the simulated cloud out of band, the way somebody in the
// AWS console would: no API call is made, so nothing is counted and no
// fault is injected. The product only learns of the change from its next
// Describe call. Errors are *APIError.
type Console struct{ w *world }

// Console returns the out-of-band operations of the simulator.
func (s *Simulator) Console() *Console { return &Console{w: s.world} }

// ConsoleLaunch describes instances launched out of band.
type ConsoleLaunch struct {
	ImageID            string // required; see ImageID for the seeded AMIs
	InstanceType       string // default "m5zn.metal"
	SubnetID           string
	KeyName            string
	SecurityGroupIDs   []string
	Tags               map[string]string
	Count              int  // default 1
	Running            bool // skip pending: the instances are running at once
	DetailedMonitoring bool
}

// Launch starts instances in region without RunInstances, e.g. to seed a
// fleet for a benchmark or a demo.
func (c *Console) Launch(region string, l ConsoleLaunch) ([]Instance, error) {
	if !regionNameRE.MatchString(region) {
		return nil, invalidParameter("%q is not a region name", region)
	}
	if l.Count <= 0 {
		l.Count = 1
	}
	if l.InstanceType == "" {
		l.InstanceType = "m5zn.metal"
	}
	res, err := c.w.runInstances(region, runRequest{
		ImageID: l.ImageID, InstanceType: l.InstanceType, SubnetID: l.SubnetID, KeyName: l.KeyName,
		SecurityGroupIDs: l.SecurityGroupIDs, MinCount: l.Count, MaxCount: l.Count,
		Monitoring: l.DetailedMonitoring, Tags: l.Tags, Running: l.Running,
	})
	if err != nil {
		return nil, err
	}
	return res.Instances, nil
}

// change runs fn on one instance, found in any region.
func (c *Console) change(id string, fn func(in *instance, now time.Time) *APIError) error {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	now := c.w.advance()
	in, ok := c.w.byID[id]
	if !ok {
		return apiErrorf(http.StatusBadRequest, "InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
	}
	if err := fn(in, now); err != nil {
		return err
	}
	return nil
}

func (c *Console) transition(id, op string) error {
	return c.change(id, func(in *instance, now time.Time) *APIError {
		if err := checkTransition(in, op); err != nil {
			return err
		}
		c.w.applyTransition(in, op, now)
		return nil
	})
}

// Stop stops a running instance (stopping, then stopped).
func (c *Console) Stop(id string) error { return c.transition(id, "stop") }

// Start starts a stopped instance (pending with a new public IP, then
// running).
func (c *Console) Start(id string) error { return c.transition(id, "start") }

// Terminate terminates an instance (shutting-down, then terminated).
func (c *Console) Terminate(id string) error { return c.transition(id, "terminate") }

// SetTags sets and removes tags of an instance.
func (c *Console) SetTags(id string, set map[string]string, remove []string) error {
	return c.change(id, func(in *instance, _ time.Time) *APIError {
		merged := maps.Clone(in.Tags)
		maps.Copy(merged, set)
		for _, k := range remove {
			delete(merged, k)
		}
		if err := checkTags(merged); err != nil {
			return err
		}
		in.Tags = merged
		return nil
	})
}

// ChangePublicIP gives an instance that has a public IP a different one,
// as an Elastic IP association would, and returns it.
func (c *Console) ChangePublicIP(id string) (string, error) {
	var ip string
	err := c.change(id, func(in *instance, _ time.Time) *APIError {
		if in.PublicIP == "" {
			return apiErrorf(http.StatusBadRequest, "IncorrectInstanceState",
				"The instance '%s' has no public IP in state %s", in.ID, in.State)
		}
		c.w.assignPublicIP(in)
		ip = in.PublicIP
		return nil
	})
	return ip, err
}

// SetStatusChecks overrides the system and instance status checks of a
// running instance ("ok", "impaired", "insufficient-data",
// "initializing"; "" = derived) until it next boots.
func (c *Console) SetStatusChecks(id, system, instanceStatus string) error {
	valid := func(s string) bool {
		return slices.Contains([]string{"", statusOK, "impaired", "insufficient-data", statusInitializing}, s)
	}
	return c.change(id, func(in *instance, _ time.Time) *APIError {
		if !valid(system) || !valid(instanceStatus) {
			return invalidParameter("status checks must be ok, impaired, insufficient-data, initializing or empty")
		}
		if in.State != StateRunning {
			return apiErrorf(http.StatusBadRequest, "IncorrectInstanceState", "The instance '%s' is not running", in.ID)
		}
		in.systemOverride, in.instOverride = system, instanceStatus
		return nil
	})
}

// SetCloudWatchAgent says whether the instance reports memory metrics.
func (c *Console) SetCloudWatchAgent(id string, on bool) error {
	return c.change(id, func(in *instance, _ time.Time) *APIError {
		in.CloudWatchAgent = on
		return nil
	})
}

// RegisterImage adds an AMI to a region (the id comes from ImageID) and
// returns it; registering the same name again replaces its details.
func (c *Console) RegisterImage(region, name, description string, cloudWatchAgent bool) (Image, error) {
	if !regionNameRE.MatchString(region) {
		return Image{}, invalidParameter("%q is not a region name", region)
	}
	if name == "" {
		return Image{}, invalidParameter("an image needs a name")
	}
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	now := c.w.advance()
	img := &Image{ID: ImageID(region, name), Region: region, Name: name, Description: description,
		CreationDate: now.UTC().Truncate(time.Second), CloudWatchAgent: cloudWatchAgent}
	c.w.region(region).images[img.ID] = img
	return *img, nil
}

// Instances returns a snapshot of the instances of a region ("" = every
// region) in launch order, terminated ones still visible included.
func (s *Simulator) Instances(region string) []Instance {
	s.world.mu.Lock()
	defer s.world.mu.Unlock()
	now := s.world.advance()
	var all []*instance
	for _, r := range s.world.regions {
		if region == "" || r.name == region {
			all = append(all, r.order...)
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].seq < all[j].seq })
	out := make([]Instance, 0, len(all))
	for _, in := range all {
		out = append(out, s.world.snapshot(in, now))
	}
	return out
}

// Instance returns a snapshot of one instance.
func (s *Simulator) Instance(id string) (Instance, bool) {
	s.world.mu.Lock()
	defer s.world.mu.Unlock()
	now := s.world.advance()
	in, ok := s.world.byID[id]
	if !ok {
		return Instance{}, false
	}
	return s.world.snapshot(in, now), true
}

// Images returns the AMIs of a region, by id.
func (s *Simulator) Images(region string) []Image {
	if !regionNameRE.MatchString(region) {
		return nil
	}
	s.world.mu.Lock()
	defer s.world.mu.Unlock()
	r := s.world.region(region)
	out := make([]Image, 0, len(r.images))
	for _, img := range r.images {
		out = append(out, *img)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Regions returns the names of the regions the simulator knows so far.
func (s *Simulator) Regions() []string {
	s.world.mu.Lock()
	defer s.world.mu.Unlock()
	return slices.Sorted(maps.Keys(s.world.regions))
}
