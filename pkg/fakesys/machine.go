// Package fakesys loads machine descriptions (the fixture schema of
// testdata/fixtures/README.md) and materializes them as sysfs and devfs trees
// laid out exactly like the kernel's, so every part of railnet can run on a
// mocked node.
package fakesys

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Machine is one fixture file.
type Machine struct {
	SchemaVersion int        `json:"schemaVersion"`
	Name          string     `json:"name"`
	Description   string     `json:"description"`
	Source        string     `json:"source"`
	NUMA          []NUMANode `json:"numa"`
	Roots         []Root     `json:"roots"`
	Expected      Expected   `json:"expected"`

	// Optional: loaded kernel modules (/sys/module/<name>); absent, the
	// tree has no /sys/module at all. RDMANetnsMode "shared"|"exclusive"
	// is ib_core's netns_mode parameter.
	Modules       []string `json:"modules,omitempty"`
	RDMANetnsMode string   `json:"rdmaNetnsMode,omitempty"`
}

// NUMANode is an online NUMA node and its CPUs (kernel cpulist format).
type NUMANode struct {
	ID   int    `json:"id"`
	CPUs string `json:"cpus"`
}

// Root is a PCI host bridge (root complex).
type Root struct {
	Domain   string `json:"domain,omitempty"`
	Bus      string `json:"bus"`
	NUMA     *int   `json:"numa"`
	Note     string `json:"note,omitempty"`
	Children []Node `json:"children"`
}

// Node is one PCI function of the tree.
type Node struct {
	BDF             string  `json:"bdf"`
	Type            string  `json:"type"`
	Vendor          string  `json:"vendor"`
	Device          string  `json:"device"`
	Class           string  `json:"class,omitempty"`
	SubsystemVendor string  `json:"subsystemVendor,omitempty"`
	SubsystemDevice string  `json:"subsystemDevice,omitempty"`
	Driver          *string `json:"driver,omitempty"`
	Note            string  `json:"note,omitempty"`

	// bridge
	Secondary   string `json:"secondary,omitempty"`
	Subordinate string `json:"subordinate,omitempty"`
	Children    []Node `json:"children,omitempty"`

	// gpu
	Name  string `json:"name,omitempty"`
	Model string `json:"model,omitempty"`

	// nic
	Netdev    string `json:"netdev,omitempty"`
	LinkLayer string `json:"linkLayer,omitempty"`
	RDMA      string `json:"rdma,omitempty"`
	MAC       string `json:"mac,omitempty"`
	NodeGUID  string `json:"nodeGuid,omitempty"`
	PortGUID  string `json:"portGuid,omitempty"`
	MTU       int    `json:"mtu,omitempty"`
	SpeedMbps int    `json:"speedMbps,omitempty"`
	OperState string `json:"operstate,omitempty"`
	SRIOV     *SRIOV `json:"sriov,omitempty"`

	// Optional, for railnetctl doctor (absent: the files are not written).
	PCIe       *PCIeLink   `json:"pcie,omitempty"`
	ACS        *ACS        `json:"acs,omitempty"`
	IOMMUGroup *IOMMUGroup `json:"iommuGroup,omitempty"`
}

// PCIeLink is a function's PCIe link as sysfs shows it: speeds as the
// kernel prints them ("32.0 GT/s PCIe"), widths as lane counts.
type PCIeLink struct {
	Speed    string `json:"speed"`
	Width    int    `json:"width"`
	MaxSpeed string `json:"maxSpeed"`
	MaxWidth int    `json:"maxWidth"`
}

// ACS is the Access Control Services extended capability (ID 0x000D) of a
// port: which redirect/forwarding controls are enabled. It is written into
// the function's binary config space.
type ACS struct {
	RequestRedirect    bool `json:"requestRedirect"`
	CompletionRedirect bool `json:"completionRedirect"`
	UpstreamForwarding bool `json:"upstreamForwarding"`
}

// IOMMUGroup puts the function in /sys/kernel/iommu_groups/<id> of a type
// (DMA, DMA-FQ, identity, blocked).
type IOMMUGroup struct {
	ID   int    `json:"id"`
	Type string `json:"type"`
}

// SRIOV is a PF's SR-IOV capability; VFs are generated from it.
type SRIOV struct {
	TotalVFs    int    `json:"totalVfs"`
	NumVFs      int    `json:"numVfs"`
	VFDevice    string `json:"vfDevice"`
	VFOffset    int    `json:"vfOffset"`
	VFStride    int    `json:"vfStride"`
	VFDriver    string `json:"vfDriver,omitempty"`
	VFNetdev    string `json:"vfNetdev,omitempty"`
	VFRdma      string `json:"vfRdma,omitempty"`
	VFMac       string `json:"vfMac,omitempty"`
	VFNodeGUID  string `json:"vfNodeGuid,omitempty"`
	VFMtu       int    `json:"vfMtu,omitempty"`
	VFOperState string `json:"vfOperstate,omitempty"`
	VFSpeedMbps int    `json:"vfSpeedMbps,omitempty"`
}

// Expected holds the results that must follow from the tree.
type Expected struct {
	GPUNic    map[string]map[string]string `json:"gpuNic"`
	Inventory ExpectedInventory            `json:"inventory"`
	Notes     string                       `json:"notes"`
}

// ExpectedInventory counts what discovery must find.
type ExpectedInventory struct {
	GPUs        int `json:"gpus"`
	PFs         int `json:"pfs"`
	VFs         int `json:"vfs"`
	Netdevs     int `json:"netdevs"`
	RDMADevices int `json:"rdmaDevices"`
}

// maxFixtureSize bounds what Parse reads; the largest real fixture is ~60 KiB.
const maxFixtureSize = 16 << 20

// Parse decodes and validates a machine description. Unknown keys, trailing
// data and every broken invariant are errors naming the offending field.
func Parse(data []byte) (*Machine, error) {
	if len(data) > maxFixtureSize {
		return nil, fmt.Errorf("fixture is %d bytes, more than the %d allowed", len(data), maxFixtureSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var m Machine
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("decode fixture: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("decode fixture: data after the top-level object")
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Load reads a fixture file; its name must match the file name.
func Load(path string) (*Machine, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if want := strings.TrimSuffix(filepath.Base(path), ".json"); m.Name != want {
		return nil, fmt.Errorf("%s: name: %q does not match the file name %q", path, m.Name, want)
	}
	return m, nil
}
