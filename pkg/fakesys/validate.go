package fakesys

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/railnet/railnet/pkg/sysfs"
)

var (
	reID    = regexp.MustCompile(`^0x[0-9a-f]{4}$`)
	reClass = regexp.MustCompile(`^0x[0-9a-f]{6}$`)
	reBus   = regexp.MustCompile(`^[0-9a-f]{2}$`)
	reDom   = regexp.MustCompile(`^[0-9a-f]{4}$`)
	reMAC   = regexp.MustCompile(`^[0-9a-f]{2}(:[0-9a-f]{2}){5}$`)
	reGUID  = regexp.MustCompile(`^[0-9a-f]{4}(:[0-9a-f]{4}){3}$`)
	reGPU   = regexp.MustCompile(`^GPU[0-9]+$`)
)

// Validate checks the invariants of the fixture README. Every message names
// the field (and the node's BDF) that is wrong.
func (m *Machine) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	if m.SchemaVersion != 1 {
		bad("schemaVersion: %d, want 1", m.SchemaVersion)
	}
	if m.RDMANetnsMode != "" && m.RDMANetnsMode != "shared" && m.RDMANetnsMode != "exclusive" {
		bad("rdmaNetnsMode: %q, want shared or exclusive", m.RDMANetnsMode)
	}
	var doctorFields func(path string, nodes []Node)
	doctorFields = func(path string, nodes []Node) {
		for i, n := range nodes {
			p := fmt.Sprintf("%s[%d] (%s)", path, i, n.BDF)
			if l := n.PCIe; l != nil {
				for _, sp := range []struct{ f, v string }{{"pcie.speed", l.Speed}, {"pcie.maxSpeed", l.MaxSpeed}} {
					if !validLinkSpeed(sp.v) {
						bad("%s.%s: %q, want the kernel's form, e.g. \"32.0 GT/s PCIe\"", p, sp.f, sp.v)
					}
				}
				for _, wd := range []struct {
					f string
					v int
				}{{"pcie.width", l.Width}, {"pcie.maxWidth", l.MaxWidth}} {
					if wd.v < 1 || wd.v > 32 {
						bad("%s.%s: %d, want 1-32 lanes", p, wd.f, wd.v)
					}
				}
			}
			if g := n.IOMMUGroup; g != nil && g.Type != "DMA" && g.Type != "DMA-FQ" && g.Type != "identity" && g.Type != "blocked" {
				bad("%s.iommuGroup.type: %q, want DMA, DMA-FQ, identity or blocked", p, g.Type)
			}
			doctorFields(p+".children", n.Children)
		}
	}
	for i, r := range m.Roots {
		doctorFields(fmt.Sprintf("roots[%d].children", i), r.Children)
	}
	if m.Name == "" {
		bad("name: missing")
	}
	if len(m.NUMA) == 0 {
		bad("numa: at least one node is required")
	}
	numaIDs := map[int]bool{}
	cpuOwner := map[int]int{}
	for i, n := range m.NUMA {
		if n.ID < 0 || numaIDs[n.ID] {
			bad("numa[%d].id: %d is negative or duplicated", i, n.ID)
		}
		numaIDs[n.ID] = true
		cpus, err := ParseCPUList(n.CPUs)
		if err != nil || len(cpus) == 0 {
			bad("numa[%d].cpus: %q is not a non-empty cpulist", i, n.CPUs)
		}
		for _, c := range cpus {
			if o, dup := cpuOwner[c]; dup {
				bad("numa[%d].cpus: CPU %d is also on node %d", i, c, o)
				break
			}
			cpuOwner[c] = n.ID
		}
	}
	if len(m.Roots) == 0 {
		bad("roots: at least one host bridge is required")
	}

	type span struct {
		lo, hi int
		who    string
	}
	var rootSpans []span
	names := map[string]string{} // unique netdev / rdma / mac / guid values
	unique := func(kind, v, who string) {
		if v == "" || v == "0000:0000:0000:0000" {
			return
		}
		k := kind + "\x00" + v
		if o, dup := names[k]; dup {
			bad("%s: %s %q is also used by %s", who, kind, v, o)
			return
		}
		names[k] = who
	}
	bdfs := map[string]string{}
	claim := func(bdf, who string) {
		if o, dup := bdfs[bdf]; dup {
			bad("%s: address %s is also used by %s", who, bdf, o)
			return
		}
		bdfs[bdf] = who
	}
	var gpus []string
	gpuName := map[string]string{}

	var node func(n *Node, where string, bus, lo, hi int, domain string, underBridge bool) int
	// node validates n and returns the highest bus number used below it.
	node = func(n *Node, where string, bus, lo, hi int, domain string, underBridge bool) int {
		who := where + " " + n.BDF
		b, err := sysfs.ParseBDF(n.BDF)
		if err != nil || strings.ToLower(n.BDF) != n.BDF || b.String() != n.BDF {
			bad("%s: bdf: %q is not a dddd:bb:dd.f address", where, n.BDF)
			return bus
		}
		if fmt.Sprintf("%04x", b.Domain) != domain {
			bad("%s: bdf: domain differs from the root's %s", who, domain)
		}
		if int(b.Bus) != bus {
			bad("%s: bdf: bus %02x, want the parent's secondary bus %02x", who, b.Bus, bus)
		}
		if underBridge && n.Type != "bridge" && b.Device != 0 {
			bad("%s: bdf: an endpoint below a bridge must be device 00", who)
		}
		claim(n.BDF, who)
		if !reID.MatchString(n.Vendor) {
			bad("%s: vendor: %q, want 0x + 4 hex digits", who, n.Vendor)
		}
		if !reID.MatchString(n.Device) {
			bad("%s: device: %q, want 0x + 4 hex digits", who, n.Device)
		}
		if (n.SubsystemVendor == "") != (n.SubsystemDevice == "") {
			bad("%s: subsystemVendor/subsystemDevice: give both or neither", who)
		}
		for f, v := range map[string]string{"subsystemVendor": n.SubsystemVendor, "subsystemDevice": n.SubsystemDevice} {
			if v != "" && !reID.MatchString(v) {
				bad("%s: %s: %q, want 0x + 4 hex digits", who, f, v)
			}
		}
		if n.Class != "" && !reClass.MatchString(n.Class) {
			bad("%s: class: %q, want 0x + 6 hex digits", who, n.Class)
		}
		if n.Type != "bridge" && len(n.Children) > 0 {
			bad("%s: children: only a bridge has children", who)
		}
		maxBus := bus
		switch n.Type {
		case "bridge":
			sec, err1 := strconv.ParseUint(n.Secondary, 16, 8)
			sub, err2 := strconv.ParseUint(n.Subordinate, 16, 8)
			if !reBus.MatchString(n.Secondary) || !reBus.MatchString(n.Subordinate) || err1 != nil || err2 != nil {
				bad("%s: secondary/subordinate: want 2 hex digits", who)
				return bus
			}
			if !(int(sec) > bus && sec <= sub) {
				bad("%s: secondary/subordinate: want bus < secondary <= subordinate", who)
			}
			if int(sec) <= lo || int(sub) > hi {
				bad("%s: secondary/subordinate: range %02x-%02x lies outside the parent's", who, sec, sub)
			}
			maxBus = int(sub)
			next := int(sec)
			for i := range n.Children {
				c := &n.Children[i]
				end := node(c, where, int(sec), int(sec), int(sub), domain, true)
				if c.Type == "bridge" {
					// Sibling ranges must not overlap: each starts above the previous end.
					cs, _ := strconv.ParseUint(c.Secondary, 16, 8)
					if int(cs) <= next && next != int(sec) {
						bad("%s: secondary: bus %02x overlaps a sibling's range", where+" "+c.BDF, cs)
					}
					if end > next {
						next = end
					}
				}
			}
		case "gpu":
			if n.Vendor != "0x10de" {
				bad("%s: vendor: a gpu is an NVIDIA device (0x10de), got %s", who, n.Vendor)
			}
			if !reGPU.MatchString(n.Name) {
				bad("%s: name: %q, want GPU<i>", who, n.Name)
			} else if o, dup := gpuName[n.Name]; dup {
				bad("%s: name: %s is also %s", who, n.Name, o)
			}
			gpuName[n.Name] = n.BDF
			gpus = append(gpus, n.BDF)
		case "other":
			if n.Class == "" {
				bad("%s: class: required for type other", who)
			}
		case "nic":
			validateNIC(n, who, bad, unique)
			if s := n.SRIOV; s != nil && s.TotalVFs > 0 && s.TotalVFs <= 0xffff && s.VFOffset >= 1 &&
				s.VFOffset <= 0xffff && s.VFStride >= 1 && s.VFStride <= 0xffff {
				pf := b
				for i := 0; i < s.TotalVFs; i++ {
					rid := int(pf.RID()) + s.VFOffset + i*s.VFStride
					if rid > 0xffff {
						bad("%s: sriov: VF %d lies beyond bus ff", who, i)
						break
					}
					vf := sysfs.FromRID(pf.Domain, uint16(rid))
					if int(vf.Bus) < lo || int(vf.Bus) > hi {
						bad("%s: sriov: VF %d (%s) lies outside the parent's bus range", who, i, vf)
						break
					}
					claim(vf.String(), who+" VF "+strconv.Itoa(i))
				}
			}
		default:
			bad("%s: type: %q, want bridge, gpu, nic or other", who, n.Type)
		}
		return maxBus
	}

	for ri := range m.Roots {
		r := &m.Roots[ri]
		where := fmt.Sprintf("roots[%d]", ri)
		if r.Domain != "" && !reDom.MatchString(r.Domain) {
			bad("%s.domain: %q, want 4 hex digits", where, r.Domain)
			continue
		}
		if !reBus.MatchString(r.Bus) {
			bad("%s.bus: %q, want 2 hex digits", where, r.Bus)
			continue
		}
		if r.NUMA == nil {
			bad("%s.numa: missing", where)
		} else if *r.NUMA != -1 && !numaIDs[*r.NUMA] {
			bad("%s.numa: %d is not a declared numa[].id (or -1)", where, *r.NUMA)
		}
		bus, _ := strconv.ParseUint(r.Bus, 16, 8)
		hi := int(bus)
		for i := range r.Children {
			if e := node(&r.Children[i], where, int(bus), int(bus), 0xff, r.domain(), false); e > hi {
				hi = e
			}
		}
		rootSpans = append(rootSpans, span{int(bus), hi, r.domain() + ":" + r.Bus})
	}
	for i := 1; i < len(m.Roots); i++ {
		a, b := m.Roots[i-1], m.Roots[i]
		if a.domain() > b.domain() || a.domain() == b.domain() && a.Bus >= b.Bus {
			bad("roots: not sorted by (domain, bus) at roots[%d]", i)
		}
	}
	sort.Slice(rootSpans, func(i, j int) bool { return rootSpans[i].who < rootSpans[j].who })
	for i := 1; i < len(rootSpans); i++ {
		p, c := rootSpans[i-1], rootSpans[i]
		if p.who[:4] == c.who[:4] && c.lo <= p.hi {
			bad("roots: bus span of %s overlaps %s", c.who, p.who)
		}
	}
	// GPU names follow ascending BDF order over the whole machine.
	sort.Slice(gpus, func(i, j int) bool { return sysfs.CompareBDFStrings(gpus[i], gpus[j]) < 0 })
	for i, g := range gpus {
		if want := fmt.Sprintf("GPU%d", i); gpuName[want] != g {
			bad("gpu %s: name: want %s (GPUs are numbered in BDF order)", g, want)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return m.checkExpectedInventory()
}

func validateNIC(n *Node, who string, bad func(string, ...any), unique func(kind, v, who string)) {
	if n.Driver == nil || *n.Driver == "" {
		bad("%s: driver: required for a nic", who)
	}
	if n.Netdev == "" || len(n.Netdev) > 15 || strings.ContainsAny(n.Netdev, "/ :{}") {
		bad("%s: netdev: %q, want a name of 1-15 characters", who, n.Netdev)
	}
	unique("netdev", n.Netdev, who)
	unique("rdma", n.RDMA, who)
	switch n.LinkLayer {
	case "ethernet":
		if n.Class != "0x020000" {
			bad("%s: class: %q, an Ethernet nic is 0x020000", who, n.Class)
		}
		if !reMAC.MatchString(n.MAC) {
			bad("%s: mac: %q, want aa:bb:cc:dd:ee:ff", who, n.MAC)
		}
		if n.PortGUID != "" {
			bad("%s: portGuid: only for InfiniBand", who)
		}
	case "infiniband":
		if n.Class != "0x020700" {
			bad("%s: class: %q, an InfiniBand nic is 0x020700", who, n.Class)
		}
		if n.MAC != "" {
			bad("%s: mac: not allowed on InfiniBand", who)
		}
		if n.RDMA == "" {
			bad("%s: rdma: required on InfiniBand", who)
		}
	default:
		bad("%s: linkLayer: %q, want ethernet or infiniband", who, n.LinkLayer)
	}
	unique("mac", n.MAC, who)
	if n.RDMA != "" && !reGUID.MatchString(n.NodeGUID) {
		bad("%s: nodeGuid: %q, want xxxx:xxxx:xxxx:xxxx", who, n.NodeGUID)
	}
	if n.PortGUID != "" && !reGUID.MatchString(n.PortGUID) {
		bad("%s: portGuid: %q, want xxxx:xxxx:xxxx:xxxx", who, n.PortGUID)
	}
	unique("guid", n.NodeGUID, who)
	if n.MTU <= 0 {
		bad("%s: mtu: %d, want > 0", who, n.MTU)
	}
	if n.SpeedMbps <= 0 {
		bad("%s: speedMbps: %d, want > 0", who, n.SpeedMbps)
	}
	if n.OperState != "up" && n.OperState != "down" {
		bad("%s: operstate: %q, want up or down", who, n.OperState)
	}
	s := n.SRIOV
	if s == nil {
		return
	}
	// TotalVFs is a 16-bit field of the SR-IOV capability.
	if s.TotalVFs <= 0 || s.TotalVFs > 0xffff || s.NumVFs < 0 || s.NumVFs > s.TotalVFs {
		bad("%s: sriov.numVfs/totalVfs: want 0 <= numVfs <= totalVfs, 0 < totalVfs <= 65535", who)
		return
	}
	if !reID.MatchString(s.VFDevice) {
		bad("%s: sriov.vfDevice: %q, want 0x + 4 hex digits", who, s.VFDevice)
	}
	if s.VFOffset < 1 || s.VFStride < 1 || s.VFOffset > 0xffff || s.VFStride > 0xffff {
		bad("%s: sriov.vfOffset/vfStride: want 1-65535", who)
		return
	}
	if s.NumVFs > 0 && s.VFDriver == "" {
		bad("%s: sriov.vfDriver: required when numVfs > 0", who)
	}
	if s.VFOperState != "" && s.VFOperState != "up" && s.VFOperState != "down" {
		bad("%s: sriov.vfOperstate: %q, want up or down", who, s.VFOperState)
	}
	if n.LinkLayer == "infiniband" && s.VFMac != "" {
		bad("%s: sriov.vfMac: not allowed on InfiniBand", who)
	}
	if n.LinkLayer == "ethernet" && s.VFNetdev != "" && s.VFMac == "" {
		bad("%s: sriov.vfMac: required for Ethernet VFs with a netdev", who)
	}
	if s.VFNodeGUID != "" && s.VFRdma == "" {
		bad("%s: sriov.vfNodeGuid: needs vfRdma", who)
	}
	for i := 0; i < s.NumVFs; i++ {
		for field, pat := range map[string]string{"vfNetdev": s.VFNetdev, "vfRdma": s.VFRdma, "vfMac": s.VFMac, "vfNodeGuid": s.VFNodeGUID} {
			v, err := expandPattern(pat, i)
			if err != nil {
				bad("%s: sriov.%s: %v", who, field, err)
				return
			}
			vw := fmt.Sprintf("%s VF %d", who, i)
			switch field {
			case "vfNetdev":
				if pat != "" && (len(v) > 15 || v == "") {
					bad("%s: sriov.vfNetdev: %q is longer than 15 characters", vw, v)
				}
				unique("netdev", v, vw)
			case "vfRdma":
				unique("rdma", v, vw)
			case "vfMac":
				if pat != "" && !reMAC.MatchString(v) {
					bad("%s: sriov.vfMac: %q is not a MAC", vw, v)
				}
				unique("mac", v, vw)
			case "vfNodeGuid":
				if pat != "" && !reGUID.MatchString(v) {
					bad("%s: sriov.vfNodeGuid: %q is not a GUID", vw, v)
				}
				unique("guid", v, vw)
			}
		}
	}
}

// checkExpectedInventory compares expected.inventory with the tree.
func (m *Machine) checkExpectedInventory() error {
	got, err := m.Count()
	if err != nil {
		return err
	}
	if got != m.Expected.Inventory {
		return fmt.Errorf("expected.inventory: %+v, but the tree has %+v", m.Expected.Inventory, got)
	}
	return nil
}

// Count computes what expected.inventory must say of the tree.
func (m *Machine) Count() (ExpectedInventory, error) {
	fns, err := m.Functions()
	if err != nil {
		return ExpectedInventory{}, err
	}
	var got ExpectedInventory
	for _, f := range fns {
		switch {
		case f.Node.Type == "gpu":
			got.GPUs++
		case f.Node.Type == "nic" && !f.IsVF:
			got.PFs++
		case f.IsVF:
			got.VFs++
		}
		if f.Node.Type == "nic" {
			if f.Netdev != "" {
				got.Netdevs++
			}
			if f.RDMA != "" {
				got.RDMADevices++
			}
		}
	}
	return got, nil
}

// maxCPUs bounds a cpulist (the kernel's NR_CPUS tops out at 8192; a
// fixture may not make the loader allocate without limit).
const maxCPUs = 1 << 14

// ParseCPUList parses the kernel cpulist format ("0-55,112-167").
func ParseCPUList(s string) ([]int, error) {
	var out []int
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	for _, part := range strings.Split(strings.TrimSpace(s), ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, fmt.Errorf("cpulist %q: %q is not a CPU number", s, lo)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("cpulist %q: bad range %q", s, part)
			}
		}
		if b >= maxCPUs || len(out)+b-a >= maxCPUs {
			return nil, fmt.Errorf("cpulist %q: more than %d CPUs", s, maxCPUs)
		}
		for c := a; c <= b; c++ {
			out = append(out, c)
		}
	}
	return out, nil
}

// validLinkSpeed: "2.5 GT/s PCIe", "32.0 GT/s PCIe", or "Unknown".
func validLinkSpeed(s string) bool {
	if s == "Unknown" {
		return true
	}
	num, rest, ok := strings.Cut(s, " ")
	if !ok || rest != "GT/s PCIe" {
		return false
	}
	_, err := strconv.ParseFloat(num, 64)
	return err == nil
}
