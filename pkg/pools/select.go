package pools

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/railnet/railnet/pkg/discovery"
	"github.com/railnet/railnet/pkg/sysfs"
	"github.com/railnet/railnet/pkg/topology"
)

// Health values, as the kubelet spells them.
const (
	Healthy   = "Healthy"
	Unhealthy = "Unhealthy"
)

// Device is one advertised device of a pool.
type Device struct {
	ID       string   // what the kubelet allocates: the BDF, or BDF#slot in a shared rdma pool
	BDF      string   // the PCI function
	PF       string   // the PF's BDF (a PF: itself; a VF whose PF is not visible: "")
	PFName   string   // the PF's netdev
	Netdev   string   // the device's own netdev, if any
	RDMA     []string // RDMA device names
	CharDevs []string // /dev/infiniband/... of those RDMA devices
	NUMA     int      // -1: unknown (no Topology hint)
	Rail     string   // the rail the device's NIC belongs to ("" without GPUs)
	IB       bool     // its RDMA devices' ports are all InfiniBand
	Health   string
	Reason   string // why Unhealthy
}

// Resolved is a pool with its devices, sorted by ID.
type Resolved struct {
	Name     string
	Resource string // <prefix>/<name>
	Kind     string
	API      string // APIDevicePlugin or APIDRA
	Devices  []Device
	RDMACM   string // /dev/infiniband/rdma_cm when present
}

// Resolve selects devices from an inventory into the config's pools. It
// fails when a device would be in two pools; a pool that selects nothing is
// kept (a DaemonSet config serves unlike nodes) and reported in warnings.
func Resolve(c *Config, inv *discovery.Inventory, topo *topology.Topology) (pools []Resolved, warnings []string, err error) {
	nics := map[string]*discovery.NIC{}
	for _, n := range inv.NICs {
		nics[n.BDF] = n
	}
	rdma := map[string]*discovery.RDMADevice{}
	for _, r := range inv.RDMA {
		rdma[r.Name] = r
	}
	railOf := map[string]string{} // PF (or column NIC) BDF → rail name
	railClass := map[string]topology.Class{}
	if topo != nil {
		byName := map[string]string{}
		for _, c := range topo.NICs {
			byName[c.Name] = c.BDF
		}
		for _, r := range topo.Rails {
			for _, n := range r.NICs {
				railOf[byName[n]] = r.Name
				railClass[r.Name] = r.Class
			}
		}
	}
	owner := map[string]string{} // BDF → pool name
	var errs []error
	add := func(p *Resolved, n *discovery.NIC) {
		if o, dup := owner[n.BDF]; dup {
			errs = append(errs, fmt.Errorf("device %s is in pools %q and %q: a device may be in one pool only", n.BDF, o, p.Name))
			return
		}
		owner[n.BDF] = p.Name
		p.Devices = append(p.Devices, makeDevice(n, nics, rdma, railOf, p.Kind))
	}
	for i := range c.Pools {
		pc := &c.Pools[i]
		kind := pc.Kind
		if kind == "" {
			kind = KindSRIOV
		}
		api := pc.API
		if api == "" {
			api = APIDevicePlugin
		}
		p := Resolved{Name: pc.Name, Resource: c.Prefix() + "/" + pc.Name, Kind: kind, API: api, RDMACM: inv.RDMACM}
		sel := compile(&pc.Selectors)
		for _, n := range inv.NICs {
			if !candidate(n, kind) || !sel.match(n, nics, topo) {
				continue
			}
			add(&p, n)
		}
		if kind == KindRDMA && pc.Shared > 0 {
			p.Devices = share(p.Devices, pc.Shared)
		}
		if len(p.Devices) == 0 {
			warnings = append(warnings, fmt.Sprintf("pool %q selects no device on this node", p.Name))
		}
		pools = append(pools, p)
	}
	if c.RailPools && topo != nil {
		maxClass := topology.PHB
		if c.RailMaxClass != "" {
			maxClass, _ = topology.ParseClass(c.RailMaxClass)
		}
		for _, r := range topo.Rails {
			if r.Class > maxClass {
				continue
			}
			p := Resolved{Name: r.Name, Resource: c.Prefix() + "/" + r.Name, Kind: KindSRIOV, API: APIDevicePlugin, RDMACM: inv.RDMACM}
			for _, n := range inv.NICs {
				if !candidate(n, KindSRIOV) || railOf[pfOf(n)] != r.Name {
					continue
				}
				add(&p, n)
			}
			pools = append(pools, p)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, warnings, err
	}
	for i := range pools {
		slices.SortFunc(pools[i].Devices, func(a, b Device) int {
			if c := sysfs.CompareBDFStrings(a.BDF, b.BDF); c != 0 {
				return c
			}
			return strings.Compare(a.ID, b.ID)
		})
	}
	return pools, warnings, nil
}

// pfOf is the BDF of the function that carries a NIC's topology column.
func pfOf(n *discovery.NIC) string {
	if n.Kind == discovery.KindVF && n.PFVisible {
		return n.PF
	}
	return n.BDF
}

// candidate: a sriov pool advertises VFs, and a PF only when it has no VFs
// enabled; an rdma pool advertises whole HCAs (functions with an RDMA
// device that are not VFs of a visible PF).
func candidate(n *discovery.NIC, kind string) bool {
	switch kind {
	case KindRDMA:
		return len(n.RDMA) > 0 && !(n.Kind == discovery.KindVF && n.PFVisible)
	default:
		if n.Kind == discovery.KindVF {
			return true
		}
		return n.SRIOV == nil || n.SRIOV.NumVFs == 0
	}
}

func makeDevice(n *discovery.NIC, nics map[string]*discovery.NIC, rdma map[string]*discovery.RDMADevice,
	railOf map[string]string, kind string) Device {
	d := Device{ID: n.BDF, BDF: n.BDF, NUMA: n.NUMA, Rail: railOf[pfOf(n)]}
	if len(n.Netdevs) > 0 {
		d.Netdev = n.Netdevs[0].Name
	}
	var pf *discovery.NIC
	switch {
	case n.Kind == discovery.KindVF && n.PFVisible:
		pf = nics[n.PF]
		d.PF = n.PF
	case n.Kind == discovery.KindVF:
		d.PF = "" // inside a VM: the PF is the hypervisor's
	default:
		pf = n
		d.PF = n.BDF
	}
	if pf != nil && len(pf.Netdevs) > 0 {
		d.PFName = pf.Netdevs[0].Name
	}
	for i, name := range n.RDMA {
		d.RDMA = append(d.RDMA, name)
		r := rdma[name]
		if r != nil {
			d.CharDevs = append(d.CharDevs, r.CharDevs...)
		}
		ib := r != nil && len(r.Ports) > 0
		for _, p := range portsOf(r) {
			ib = ib && strings.EqualFold(p.LinkLayer, "InfiniBand")
		}
		d.IB = ib && (i == 0 || d.IB)
	}
	d.Health, d.Reason = health(n, pf, rdma, kind)
	return d
}

func portsOf(r *discovery.RDMADevice) []discovery.RDMAPort {
	if r == nil {
		return nil
	}
	return r.Ports
}

// health: a VF is healthy while its PCI function exists (it was scanned)
// and its PF's link is up; a PF while its link is up; an HCA in an rdma
// pool also needs its port ACTIVE. A VF's own link state and netdev mean
// nothing: unassigned VFs are often down, and a VF's netdev leaves the host
// when it moves into a pod.
func health(n, pf *discovery.NIC, rdma map[string]*discovery.RDMADevice, kind string) (string, string) {
	if pf != nil {
		if len(pf.Netdevs) == 0 {
			// A PF whose netdev is in a pod (whole-netdev attachment) is in use, not broken.
			if pf != n {
				return Unhealthy, "PF " + pf.BDF + " has no netdev"
			}
		} else if st := pf.Netdevs[0].OperState; st != "up" {
			return Unhealthy, "PF " + pf.Netdevs[0].Name + " link is " + st
		}
	}
	if kind == KindRDMA {
		for _, name := range n.RDMA {
			if r := rdma[name]; r == nil || !r.Active() {
				return Unhealthy, "RDMA device " + name + " port is not ACTIVE"
			}
		}
	}
	return Healthy, ""
}

// share turns each HCA into n slots: BDF#0 ... BDF#n-1. The CNI finds the
// HCA from the part before '#'.
func share(devs []Device, n int) []Device {
	out := make([]Device, 0, len(devs)*n)
	for _, d := range devs {
		for i := range n {
			s := d
			s.ID = d.BDF + "#" + strconv.Itoa(i)
			out = append(out, s)
		}
	}
	return out
}

// BDFOfID returns the PCI address a device ID names ("0000:18:00.0#3" →
// "0000:18:00.0").
func BDFOfID(id string) string {
	b, _, _ := strings.Cut(id, "#")
	return b
}

type selector struct {
	s      *Selectors
	pfs    []pfName
	vendor []string
	device []string
	bdfs   map[string]bool
	class  topology.Class
}

func compile(s *Selectors) *selector {
	c := &selector{s: s}
	for _, v := range s.Vendors {
		c.vendor = append(c.vendor, normID(v))
	}
	for _, v := range s.Devices {
		c.device = append(c.device, normID(v))
	}
	for _, v := range s.PFNames {
		p, _ := parsePFName(v)
		c.pfs = append(c.pfs, p)
	}
	if len(s.PCIAddresses) > 0 {
		c.bdfs = map[string]bool{}
		for _, a := range s.PCIAddresses {
			if b, err := parseBDF(a); err == nil {
				c.bdfs[b] = true
			}
		}
	}
	if s.GPUClass != "" {
		c.class, _ = topology.ParseClass(s.GPUClass)
	}
	return c
}

func parseBDF(s string) (string, error) {
	b, err := sysfs.ParseBDF(s)
	if err != nil {
		return "", err
	}
	return b.String(), nil
}

func (c *selector) match(n *discovery.NIC, nics map[string]*discovery.NIC, topo *topology.Topology) bool {
	s := c.s
	if len(c.vendor) > 0 && !slices.Contains(c.vendor, n.Vendor) {
		return false
	}
	if len(c.device) > 0 && !slices.Contains(c.device, n.Device) {
		return false
	}
	if len(s.Drivers) > 0 && !slices.Contains(s.Drivers, n.Driver) {
		return false
	}
	if c.bdfs != nil && !c.bdfs[n.BDF] {
		return false
	}
	if len(s.LinkTypes) > 0 && !slices.Contains(s.LinkTypes, n.LinkType) {
		return false
	}
	if s.IsRDMA != nil && *s.IsRDMA != (len(n.RDMA) > 0) {
		return false
	}
	if len(s.NUMANodes) > 0 && !slices.Contains(s.NUMANodes, n.NUMA) {
		return false
	}
	if len(c.pfs) > 0 && !c.matchPF(n, nics) {
		return false
	}
	if c.class != 0 {
		if topo == nil {
			return false
		}
		best, _, ok := topo.Nearest(n.BDF)
		if !ok || best > c.class {
			return false
		}
	}
	return true
}

// matchPF: a VF matches by its PF's netdev name and its index; a PF (or
// plain NIC) by its own netdev name when no range is given.
func (c *selector) matchPF(n *discovery.NIC, nics map[string]*discovery.NIC) bool {
	var pfNetdevs []string
	vf := n.Kind == discovery.KindVF && n.PFVisible
	if vf {
		if pf := nics[n.PF]; pf != nil {
			for _, nd := range pf.Netdevs {
				pfNetdevs = append(pfNetdevs, nd.Name)
			}
		}
	} else {
		for _, nd := range n.Netdevs {
			pfNetdevs = append(pfNetdevs, nd.Name)
		}
	}
	for _, p := range c.pfs {
		if !slices.Contains(pfNetdevs, p.name) {
			continue
		}
		if p.vfs == nil || vf && p.vfs[n.VFIndex] {
			return true
		}
	}
	return false
}
