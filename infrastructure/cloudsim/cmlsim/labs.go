package cmlsim

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"go.yaml.in/yaml/v3"
)

// Lab states (CML has only these three) and node states.
const (
	labDefined = "DEFINED_ON_CORE"
	labStarted = "STARTED"
	labStopped = "STOPPED"

	nodeDefined = "DEFINED_ON_CORE"
	nodeQueued  = "QUEUED"
	nodeStarted = "STARTED"
	nodeBooted  = "BOOTED"
	nodeStopped = "STOPPED"
)

// errLabActive refuses to wipe or delete a lab whose nodes run.
var errLabActive = errors.New("lab is active")

type lab struct {
	id, title, description, notes string
	owner                         user
	created, modified             time.Time
	yaml                          string
	nodes                         []*node
	links                         int
}

type node struct {
	id, label, definition string
	cpus, ramMB           int
	state                 string
	startAt, bootAt       time.Time
	startedBy             string
}

func (n *node) active() bool {
	return n.state == nodeQueued || n.state == nodeStarted || n.state == nodeBooted
}

// state derives the lab state from its nodes: any active node makes it
// STARTED, else any stopped node STOPPED, else DEFINED_ON_CORE.
func (l *lab) state() string {
	stopped := false
	for _, n := range l.nodes {
		if n.active() {
			return labStarted
		}
		if n.state == nodeStopped {
			stopped = true
		}
	}
	if stopped {
		return labStopped
	}
	return labDefined
}

// converged reports whether every node reached the target of the last
// action (BOOTED in a started lab).
func (l *lab) converged() bool {
	if l.state() != labStarted {
		return true
	}
	for _, n := range l.nodes {
		if n.state != nodeBooted {
			return false
		}
	}
	return true
}

// topology is the part of a CML topology file the simulator reads.
type topology struct {
	Lab *struct {
		Version     string `yaml:"version"`
		Title       string `yaml:"title"`
		Description string `yaml:"description"`
		Notes       string `yaml:"notes"`
	} `yaml:"lab"`
	Nodes []struct {
		ID             string `yaml:"id"`
		Label          string `yaml:"label"`
		NodeDefinition string `yaml:"node_definition"`
		CPUs           int    `yaml:"cpus"`
		RAM            int    `yaml:"ram"`
	} `yaml:"nodes"`
	Links []struct {
		ID string `yaml:"id"`
		N1 string `yaml:"n1"`
		N2 string `yaml:"n2"`
	} `yaml:"links"`
}

// nodeResources are the defaults of a few node definitions (CPUs, RAM MiB).
var nodeResources = map[string][2]int{
	"iosv": {1, 768}, "iosvl2": {1, 768}, "iol-xe": {1, 1024}, "ioll2-xe": {1, 1024},
	"csr1000v": {1, 3072}, "cat8000v": {1, 4096}, "nxosv9000": {2, 8192}, "asav": {1, 2048},
	"alpine": {1, 512}, "ubuntu": {1, 2048}, "server": {1, 256}, "desktop": {1, 1024},
	"external_connector": {0, 0}, "unmanaged_switch": {0, 0},
}

// parseTopology reads a YAML (or JSON) topology and checks what CML checks
// before an import: lab.version, unique node ids with a definition, links
// between existing nodes.
func parseTopology(body []byte) (topology, error) {
	var t topology
	if len(bytes.TrimSpace(body)) == 0 {
		return t, errors.New("the topology is empty")
	}
	if err := yaml.Unmarshal(body, &t); err != nil {
		return t, fmt.Errorf("the topology is not valid YAML: %w", err)
	}
	if t.Lab == nil || t.Lab.Version == "" {
		return t, errors.New("lab.version is required")
	}
	ids := make(map[string]bool, len(t.Nodes))
	for i, n := range t.Nodes {
		switch {
		case n.ID == "":
			return t, fmt.Errorf("nodes[%d] has no id", i)
		case ids[n.ID]:
			return t, fmt.Errorf("node id %q is used twice", n.ID)
		case n.NodeDefinition == "":
			return t, fmt.Errorf("node %q has no node_definition", n.ID)
		}
		ids[n.ID] = true
	}
	for i, l := range t.Links {
		if !ids[l.N1] || !ids[l.N2] {
			return t, fmt.Errorf("links[%d] joins unknown nodes %q and %q", i, l.N1, l.N2)
		}
	}
	return t, nil
}

// importLab creates a lab from a parsed topology. Callers hold c.mu.
func (c *Controller) importLab(t topology, yamlText, title string, owner user, now time.Time) *lab {
	if title == "" {
		title = t.Lab.Title
	}
	if title == "" {
		title = "Lab at " + now.UTC().Format("Mon 15:04")
	}
	l := &lab{
		id: c.newID(), title: title, description: t.Lab.Description, notes: t.Lab.Notes,
		owner: owner, created: now, modified: now, yaml: yamlText, links: len(t.Links),
	}
	for _, tn := range t.Nodes {
		res, ok := nodeResources[tn.NodeDefinition]
		if !ok {
			res = [2]int{1, 1024}
		}
		n := &node{id: c.newID(), label: tn.Label, definition: tn.NodeDefinition, cpus: res[0], ramMB: res[1], state: nodeDefined}
		if tn.CPUs > 0 {
			n.cpus = tn.CPUs
		}
		if tn.RAM > 0 {
			n.ramMB = tn.RAM
		}
		if n.label == "" {
			n.label = tn.ID
		}
		l.nodes = append(l.nodes, n)
	}
	c.labs[l.id] = l
	c.labOrder = append(c.labOrder, l.id)
	c.record(Event{Category: "import_lab", Timestamp: now, UserID: owner.id,
		Data: map[string]any{"lab_id": l.id, "node_count": len(l.nodes), "link_count": l.links}})
	return l
}

// startLab queues every node that is not active; they start and boot over
// NodeBootDelay. Starting a started lab changes nothing. Callers hold c.mu.
func (c *Controller) startLab(l *lab, by user, now time.Time) {
	var starting []*node
	for _, n := range l.nodes {
		if !n.active() {
			starting = append(starting, n)
		}
	}
	if len(starting) == 0 {
		return
	}
	l.modified = now
	c.record(Event{Category: "start_lab", Timestamp: now, UserID: by.id,
		Data: map[string]any{"lab_id": l.id, "node_count": len(l.nodes)}})
	delay := c.fleet.opts.NodeBootDelay
	for _, n := range starting {
		n.state = nodeQueued
		n.startAt, n.bootAt, n.startedBy = now.Add(delay/5), now.Add(delay), by.id
		c.record(Event{Category: "queue_node", Timestamp: now, UserID: by.id,
			Data: map[string]any{"lab_id": l.id, "node_id": n.id, "node_definition": n.definition}})
	}
	c.advance(now) // a zero NodeBootDelay boots at once
}

// stopLab stops every active node. Callers hold c.mu.
func (c *Controller) stopLab(l *lab, by user, now time.Time) {
	var stopping []*node
	for _, n := range l.nodes {
		if n.active() {
			stopping = append(stopping, n)
		}
	}
	if len(stopping) == 0 {
		return
	}
	l.modified = now
	c.record(Event{Category: "stop_lab", Timestamp: now, UserID: by.id,
		Data: map[string]any{"lab_id": l.id, "node_count": len(l.nodes)}})
	for _, n := range stopping {
		n.state = nodeStopped
		c.record(Event{Category: "stop_node", Timestamp: now, UserID: by.id,
			Data: map[string]any{"lab_id": l.id, "node_id": n.id, "node_definition": n.definition}})
	}
}

// wipeLab returns every node to DEFINED_ON_CORE; the lab must be stopped.
// Callers hold c.mu.
func (c *Controller) wipeLab(l *lab, by user, now time.Time) error {
	if l.state() == labStarted {
		return errLabActive
	}
	l.modified = now
	c.record(Event{Category: "wipe_lab", Timestamp: now, UserID: by.id,
		Data: map[string]any{"lab_id": l.id, "node_count": len(l.nodes)}})
	for _, n := range l.nodes {
		if n.state == nodeStopped {
			c.record(Event{Category: "wipe_node", Timestamp: now, UserID: by.id,
				Data: map[string]any{"lab_id": l.id, "node_id": n.id, "node_definition": n.definition}})
		}
		n.state = nodeDefined
	}
	return nil
}

// deleteLab removes a wiped lab. Callers hold c.mu.
func (c *Controller) deleteLab(l *lab) error {
	if l.state() != labDefined {
		return errLabActive
	}
	delete(c.labs, l.id)
	for i, id := range c.labOrder {
		if id == l.id {
			c.labOrder = append(c.labOrder[:i], c.labOrder[i+1:]...)
			break
		}
	}
	return nil
}

const demoOSPF = `lab:
  version: 0.3.0
  title: OSPF triangle
  description: Three IOSv routers running OSPF area 0.
  notes: Seeded by the CML simulator.
nodes:
  - id: n0
    label: r1
    node_definition: iosv
    x: 0
    y: 0
  - id: n1
    label: r2
    node_definition: iosv
    x: 200
    y: 0
  - id: n2
    label: r3
    node_definition: iosv
    x: 100
    y: 160
links:
  - id: l0
    n1: n0
    n2: n1
  - id: l1
    n1: n1
    n2: n2
  - id: l2
    n1: n2
    n2: n0
`

const demoAlpine = `lab:
  version: 0.3.0
  title: Alpine pair
  description: Two Alpine hosts on an unmanaged switch.
nodes:
  - id: n0
    label: host-a
    node_definition: alpine
  - id: n1
    label: host-b
    node_definition: alpine
  - id: n2
    label: switch
    node_definition: unmanaged_switch
links:
  - id: l0
    n1: n0
    n2: n2
  - id: l1
    n1: n1
    n2: n2
`

// seedDemoLabs creates the demo labs of a first boot: a running OSPF lab
// and a defined Alpine lab, both owned by the demo user. Callers hold c.mu.
func (c *Controller) seedDemoLabs(now time.Time) {
	for i, text := range []string{demoOSPF, demoAlpine} {
		t, err := parseTopology([]byte(text))
		if err != nil {
			panic(fmt.Sprintf("cmlsim: demo topology %d: %v", i, err)) // a constant of this file
		}
		l := c.importLab(t, text, "", c.demoUser, now)
		if i == 0 {
			c.startLab(l, c.demoUser, now)
		}
	}
}
