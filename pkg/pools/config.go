// Package pools owns the device plugin's resource pool configuration: its
// parsing (JSON or YAML), validation with errors that name the field, and
// the selection of devices from an inventory into pools, rail pools included.
package pools

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/railnet/railnet/pkg/topology"
)

// Pool kinds.
const (
	KindSRIOV = "sriov" // one device = one VF (or a PF without VFs), ID = PCI BDF
	KindRDMA  = "rdma"  // one device = one whole HCA, ID = PCI BDF (or BDF#slot when shared)
)

// Allocation paths: which API serves a pool. A device is offered through
// one of them only (a device is in one pool only).
const (
	APIDevicePlugin = "deviceplugin" // kubelet device plugin v1beta1 (extended resources)
	APIDRA          = "dra"          // DRA: ResourceSlices of the railnet.io driver
)

// DefaultPrefix is the resource name prefix.
const DefaultPrefix = "railnet.io"

// Config is the device plugin's configuration file.
type Config struct {
	ResourcePrefix string `json:"resourcePrefix,omitempty"`
	// RailPools creates one sriov pool per GPU-affinity group (rail0, ...).
	RailPools bool `json:"railPools,omitempty"`
	// RailMaxClass bounds which groups become rail pools (default PHB):
	// storage NICs that are only NODE-close to GPUs stay out.
	RailMaxClass string `json:"railMaxClass,omitempty"`
	Pools        []Pool `json:"pools,omitempty"`
}

// Pool is one advertised resource.
type Pool struct {
	Name      string    `json:"name"`
	Kind      string    `json:"kind,omitempty"`   // sriov (default) or rdma
	Shared    int       `json:"shared,omitempty"` // rdma: slots per HCA for shared-netns RDMA
	API       string    `json:"api,omitempty"`    // deviceplugin (default) or dra
	Selectors Selectors `json:"selectors"`
}

// Selectors are ANDed; within one selector, any listed value matches.
type Selectors struct {
	Vendors      []string `json:"vendors,omitempty"`
	Devices      []string `json:"devices,omitempty"`
	Drivers      []string `json:"drivers,omitempty"`
	PCIAddresses []string `json:"pciAddresses,omitempty"`
	PFNames      []string `json:"pfNames,omitempty"` // "ens1f0" or "ens1f0#0-3,6"
	LinkTypes    []string `json:"linkTypes,omitempty"`
	IsRDMA       *bool    `json:"isRdma,omitempty"`
	NUMANodes    []int    `json:"numaNodes,omitempty"`
	GPUClass     string   `json:"gpuClass,omitempty"` // nearest GPU at this class or closer
}

func (s *Selectors) empty() bool {
	return len(s.Vendors) == 0 && len(s.Devices) == 0 && len(s.Drivers) == 0 && len(s.PCIAddresses) == 0 &&
		len(s.PFNames) == 0 && len(s.LinkTypes) == 0 && s.IsRDMA == nil && len(s.NUMANodes) == 0 && s.GPUClass == ""
}

// pfName is a parsed pfNames entry.
type pfName struct {
	name string
	vfs  map[int]bool // nil: every VF
}

// maxConfigSize bounds a config file.
const maxConfigSize = 4 << 20

// Load reads and validates a config file (JSON or YAML).
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, err
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse decodes JSON or YAML strictly (unknown fields are errors) and validates.
func Parse(data []byte) (*Config, error) {
	if len(data) > maxConfigSize {
		return nil, fmt.Errorf("config is larger than %d bytes", maxConfigSize)
	}
	js := data
	if t := bytes.TrimSpace(data); len(t) == 0 || t[0] != '{' {
		var err error
		if js, err = yaml.YAMLToJSON(data); err != nil {
			return nil, fmt.Errorf("parse config: %w", err)
		}
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("parse config: data after the configuration")
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

var (
	rePoolName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$`)
	rePrefix   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+$`)
	reHexID    = regexp.MustCompile(`^(0x)?[0-9a-fA-F]{4}$`)
	reRailName = regexp.MustCompile(`^rail[0-9]+$`)
	reDNSLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`) // and at most 50 long
)

// Prefix is the resource prefix in force.
func (c *Config) Prefix() string {
	if c.ResourcePrefix == "" {
		return DefaultPrefix
	}
	return c.ResourcePrefix
}

// Validate checks the config on its own; device overlap needs an inventory
// and is checked by Resolve.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.ResourcePrefix != "" && !rePrefix.MatchString(c.ResourcePrefix) {
		bad("resourcePrefix: %q is not a DNS subdomain", c.ResourcePrefix)
	}
	if c.RailMaxClass != "" {
		if _, err := topology.ParseClass(c.RailMaxClass); err != nil {
			bad("railMaxClass: %v", err)
		}
	}
	if len(c.Pools) == 0 && !c.RailPools {
		bad("pools: no pools and railPools is off: nothing to advertise")
	}
	seen := map[string]int{}
	for i := range c.Pools {
		p := &c.Pools[i]
		f := fmt.Sprintf("pools[%d]", i)
		if !rePoolName.MatchString(p.Name) || len(p.Name) > 50 {
			bad("%s.name: %q must be lower-case letters, digits, '-', '_' or '.' (at most 50)", f, p.Name)
		}
		if j, dup := seen[p.Name]; dup {
			bad("%s.name: %q is also pools[%d].name", f, p.Name, j)
		}
		seen[p.Name] = i
		if c.RailPools && reRailName.MatchString(p.Name) {
			bad("%s.name: %q is reserved for rail pools (railPools is on)", f, p.Name)
		}
		switch p.Kind {
		case "", KindSRIOV:
			if p.Shared != 0 {
				bad("%s.shared: only rdma pools can be shared", f)
			}
		case KindRDMA:
			if p.Shared < 0 || p.Shared > 1000 {
				bad("%s.shared: %d, want 0-1000", f, p.Shared)
			}
		default:
			bad("%s.kind: %q, want sriov or rdma", f, p.Kind)
		}
		switch p.API {
		case "", APIDevicePlugin:
		case APIDRA:
			// The pool name is part of a ResourceSlice's pool name and of
			// its DeviceClass: a DNS label.
			if len(p.Name) > 50 || !reDNSLabel.MatchString(p.Name) {
				bad("%s.name: %q: a dra pool's name must be a DNS label (lower-case letters, digits and '-')", f, p.Name)
			}
		default:
			bad("%s.api: %q, want deviceplugin or dra", f, p.API)
		}
		s := &p.Selectors
		if s.empty() {
			bad("%s.selectors: empty; a pool must select its devices (an empty selector would take every NIC)", f)
		}
		for j, v := range s.Vendors {
			if !reHexID.MatchString(v) {
				bad("%s.selectors.vendors[%d]: %q is not a 4-digit hex ID", f, j, v)
			}
		}
		for j, v := range s.Devices {
			if !reHexID.MatchString(v) {
				bad("%s.selectors.devices[%d]: %q is not a 4-digit hex ID", f, j, v)
			}
		}
		for j, v := range s.Drivers {
			if v == "" {
				bad("%s.selectors.drivers[%d]: empty", f, j)
			}
		}
		for j, v := range s.PCIAddresses {
			if _, err := parseBDF(v); err != nil {
				bad("%s.selectors.pciAddresses[%d]: %v", f, j, err)
			}
		}
		for j, v := range s.PFNames {
			if _, err := parsePFName(v); err != nil {
				bad("%s.selectors.pfNames[%d]: %v", f, j, err)
			}
		}
		for j, v := range s.LinkTypes {
			if v != "ether" && v != "infiniband" {
				bad("%s.selectors.linkTypes[%d]: %q, want ether or infiniband", f, j, v)
			}
		}
		for j, v := range s.NUMANodes {
			if v < 0 {
				bad("%s.selectors.numaNodes[%d]: %d is negative", f, j, v)
			}
		}
		if s.GPUClass != "" {
			if _, err := topology.ParseClass(s.GPUClass); err != nil {
				bad("%s.selectors.gpuClass: %v", f, err)
			}
		}
		if p.Kind == KindRDMA && s.IsRDMA != nil && !*s.IsRDMA {
			bad("%s.selectors.isRdma: false selects no HCA for an rdma pool", f)
		}
	}
	return errors.Join(errs...)
}

// parsePFName reads "ens1f0" or "ens1f0#0-3,6".
func parsePFName(s string) (pfName, error) {
	name, ranges, hasRange := strings.Cut(s, "#")
	if name == "" || len(name) > 15 || strings.ContainsAny(name, "/ ") {
		return pfName{}, fmt.Errorf("%q: want a netdev name, optionally #<VF ranges>", s)
	}
	p := pfName{name: name}
	if !hasRange {
		return p, nil
	}
	p.vfs = map[int]bool{}
	for _, part := range strings.Split(ranges, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 || a > 0xffff {
			return pfName{}, fmt.Errorf("%q: bad VF index %q", s, lo)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a || b > 0xffff {
				return pfName{}, fmt.Errorf("%q: bad VF range %q (want low-high, low <= high)", s, part)
			}
		}
		for i := a; i <= b; i++ {
			p.vfs[i] = true
		}
	}
	return p, nil
}

func normID(s string) string {
	s = strings.ToLower(s)
	if !strings.HasPrefix(s, "0x") {
		s = "0x" + s
	}
	return s
}
