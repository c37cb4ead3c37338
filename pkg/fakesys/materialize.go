package fakesys

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Tree is a materialized machine: Sys stands for /sys, Dev for /dev.
type Tree struct {
	Sys string
	Dev string
}

// Options change how a tree is written.
type Options struct {
	// DeviceNodes makes /dev entries real character devices (mknod, needs
	// root) with the numbers the kernel gives them, so a container runtime
	// can create them in a container; otherwise they are empty files.
	DeviceNodes bool
}

// Materialize writes the machine as dir/sys and dir/dev. dir is created if
// needed; dir/sys and dir/dev must not exist yet, so a tree is never mixed
// with an older one.
func Materialize(m *Machine, dir string) (Tree, error) {
	return MaterializeWith(m, dir, Options{})
}

// MaterializeWith is Materialize with options.
func MaterializeWith(m *Machine, dir string, opts Options) (Tree, error) {
	t := Tree{Sys: filepath.Join(dir, "sys"), Dev: filepath.Join(dir, "dev")}
	for _, p := range []string{t.Sys, t.Dev} {
		if _, err := os.Lstat(p); err == nil {
			return t, fmt.Errorf("materialize: %s already exists", p)
		}
	}
	fns, err := m.Functions()
	if err != nil {
		return t, err
	}
	w := &writer{sys: t.Sys, dev: t.Dev, nodes: opts.DeviceNodes}
	w.numa(m)
	byBDF := map[string]*Function{}
	for _, f := range fns {
		byBDF[f.BDF] = f
	}
	for ri := range m.Roots {
		r := &m.Roots[ri]
		hb := "devices/" + r.hostBridge()
		w.mkdir(hb + "/pci_bus/" + r.domain() + ":" + r.Bus)
		w.link("class/pci_bus/"+r.domain()+":"+r.Bus, hb+"/pci_bus/"+r.domain()+":"+r.Bus)
		w.file(hb+"/uevent", "")
	}
	gpuIdx := 0
	hasRDMA := false
	for _, f := range fns {
		w.function(m, f)
		if f.Node.Type == "gpu" {
			w.devnode(fmt.Sprintf("nvidia%d", gpuIdx), nvidiaMajor, uint32(gpuIdx))
			gpuIdx++
		}
		if f.RDMA != "" {
			hasRDMA = true
		}
	}
	if gpuIdx > 0 {
		w.devnode("nvidiactl", nvidiaMajor, 255)
		w.devnode("nvidia-uvm", dynamicMajor, 0)
		w.devnode("nvidia-uvm-tools", dynamicMajor, 1)
	}
	if hasRDMA {
		w.devnode("infiniband/rdma_cm", miscMajor, rdmaCMMinor)
		w.file("class/infiniband_verbs/abi_version", "6\n")
		w.file("class/infiniband_mad/abi_version", "5\n")
	}
	if len(m.Modules) > 0 || m.RDMANetnsMode != "" {
		w.mkdir("module")
	}
	for _, mod := range m.Modules {
		w.file("module/"+mod+"/initstate", "live\n")
		w.file("module/"+mod+"/refcnt", "0\n")
	}
	if m.RDMANetnsMode != "" {
		yn := map[string]string{"shared": "Y", "exclusive": "N"}[m.RDMANetnsMode]
		w.file("module/ib_core/initstate", "live\n")
		w.file("module/ib_core/parameters/netns_mode", yn+"\n")
	}
	// The loopback device: ifindex 1, virtual, as on every host.
	lo := "devices/virtual/net/lo"
	for k, v := range map[string]string{"address": "00:00:00:00:00:00", "addr_len": "6", "ifindex": "1", "iflink": "1",
		"mtu": "65536", "operstate": "unknown", "type": "772", "carrier": "1", "flags": "0x9"} {
		w.file(lo+"/"+k, v+"\n")
	}
	w.link("class/net/lo", lo)
	w.mkdir("bus/pci/slots")
	return t, w.err
}

type writer struct {
	sys, dev string
	nodes    bool // mknod character devices instead of empty files
	err      error
	dirs     map[string]bool // directories known to exist
}

// ensureDir is MkdirAll with a memory: a tree has ~80k entries in a few
// thousand directories, and asking the file system again each time is most
// of the cost of materializing one.
func (w *writer) ensureDir(p string) error {
	if w.dirs[p] {
		return nil
	}
	if err := os.MkdirAll(p, 0o755); err != nil {
		return err
	}
	if w.dirs == nil {
		w.dirs = map[string]bool{}
	}
	w.dirs[p] = true
	return nil
}

func (w *writer) fail(err error) {
	if w.err == nil {
		w.err = err
	}
}

func (w *writer) mkdir(rel string) {
	if w.err != nil {
		return
	}
	w.fail(w.ensureDir(filepath.Join(w.sys, rel)))
}

// file writes a sysfs attribute, read-only like the kernel's (0444); a
// writable attribute (sriov_numvfs) is made 0644 by the caller.
func (w *writer) file(rel, content string) { w.fileMode(rel, content, 0o444) }

func (w *writer) fileMode(rel, content string, mode os.FileMode) {
	if w.err != nil {
		return
	}
	p := filepath.Join(w.sys, rel)
	if err := w.ensureDir(filepath.Dir(p)); err != nil {
		w.fail(err)
		return
	}
	w.fail(os.WriteFile(p, []byte(content), mode))
}

// link makes sys/rel a relative symlink to sys/target, as the kernel's are.
func (w *writer) link(rel, target string) {
	if w.err != nil {
		return
	}
	p := filepath.Join(w.sys, rel)
	if err := w.ensureDir(filepath.Dir(p)); err != nil {
		w.fail(err)
		return
	}
	// The kernel climbs to the target's parent and names the target from
	// there, so a link to an ancestor reads "../../../0000:18:00.0", not "../..".
	full := filepath.Join(w.sys, target)
	r, err := filepath.Rel(filepath.Dir(p), filepath.Dir(full))
	if err != nil {
		w.fail(err)
		return
	}
	r = filepath.Join(r, filepath.Base(full))
	if err := os.Symlink(r, p); err != nil && !errors.Is(err, os.ErrExist) {
		w.fail(err)
	}
}

// Device numbers as the kernel hands them out (Documentation/admin-guide/
// devices.txt and drivers/infiniband/core): uverbs 231:192+N for the first
// 32 devices, umad 231:N and issm 231:64+N for the first 64 ports; beyond
// those, and for rdma_cm (misc) and nvidia-uvm, the kernel picks a number at
// run time, so any free one is as real as another.
const (
	miscMajor    = 10
	rdmaCMMinor  = 58
	ibMajor      = 231
	nvidiaMajor  = 195
	dynamicMajor = 240 // 234-254: the range the kernel allocates dynamic majors from
	dynamicIB    = 241
)

func uverbs(n int) (uint32, uint32) {
	if n < 32 {
		return ibMajor, uint32(192 + n)
	}
	return dynamicIB, uint32(n - 32)
}

func mad(kind string, n int) (uint32, uint32) {
	off := 0
	if kind == "issm" {
		off = 1
	}
	if n < 64 {
		return ibMajor, uint32(64*off + n)
	}
	return dynamicIB + 1, uint32(2*(n-64) + off)
}

func (w *writer) devnode(rel string, major, minor uint32) {
	if w.err != nil {
		return
	}
	p := filepath.Join(w.dev, rel)
	if err := w.ensureDir(filepath.Dir(p)); err != nil {
		w.fail(err)
		return
	}
	if !w.nodes {
		w.fail(os.WriteFile(p, nil, 0o666))
		return
	}
	if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(major, minor))); err != nil {
		w.fail(fmt.Errorf("mknod %s: %w", p, err))
		return
	}
	// mknod's mode is filtered by the umask; a device node is 0666 in /dev.
	w.fail(os.Chmod(p, 0o666))
}

// pcie writes a function's PCIe link attributes, its binary config space
// (4 KiB, as root reads it: the header, a PCI Express capability and the
// extended capability list, with ACS when the fixture has it) and its IOMMU
// group, when the fixture describes them.
func (w *writer) pcie(n *Node, f *Function, dir string) {
	if l := n.PCIe; l != nil {
		w.file(dir+"/current_link_speed", l.Speed+"\n")
		w.file(dir+"/current_link_width", strconv.Itoa(l.Width)+"\n")
		w.file(dir+"/max_link_speed", l.MaxSpeed+"\n")
		w.file(dir+"/max_link_width", strconv.Itoa(l.MaxWidth)+"\n")
	}
	if n.PCIe != nil || n.ACS != nil {
		w.file(dir+"/config", string(ConfigSpace(n.Vendor, f.Device, f.Class, n.Type == "bridge", n.ACS)))
	}
	if g := n.IOMMUGroup; g != nil {
		gd := fmt.Sprintf("kernel/iommu_groups/%d", g.ID)
		w.file(gd+"/type", g.Type+"\n")
		w.link(gd+"/devices/"+f.BDF, dir)
		w.link(dir+"/iommu_group", gd)
	}
}

// ACS control bits (PCIe base spec, ACS Control Register).
const (
	ACSRequestRedirect    = 1 << 2
	ACSCompletionRedirect = 1 << 3
	ACSUpstreamForwarding = 1 << 4
)

// ConfigSpace is a 4 KiB PCIe config space: vendor, device, class, header
// type, a PCI Express capability at 0x40, and an extended capability list
// at 0x100 holding ACS (ID 0x000D) when acs is given.
func ConfigSpace(vendor, device, class string, bridge bool, acs *ACS) []byte {
	b := make([]byte, 4096)
	hex := func(s string) uint64 { v, _ := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 32); return v }
	binary.LittleEndian.PutUint16(b[0:], uint16(hex(vendor)))
	binary.LittleEndian.PutUint16(b[2:], uint16(hex(device)))
	c := hex(class)
	b[0x09], b[0x0a], b[0x0b] = byte(c), byte(c>>8), byte(c>>16)
	b[0x06] = 0x10 // status: capabilities list
	if bridge {
		b[0x0e] = 1
	}
	b[0x34] = 0x40
	b[0x40], b[0x41] = 0x10, 0 // PCI Express capability, last
	if acs != nil {
		binary.LittleEndian.PutUint32(b[0x100:], 0x000D|1<<16) // ACS, version 1, no next
		binary.LittleEndian.PutUint16(b[0x104:], 0x005f)       // SV TB RR CR UF EC DT supported
		var ctl uint16
		if acs.RequestRedirect {
			ctl |= ACSRequestRedirect
		}
		if acs.CompletionRedirect {
			ctl |= ACSCompletionRedirect
		}
		if acs.UpstreamForwarding {
			ctl |= ACSUpstreamForwarding
		}
		binary.LittleEndian.PutUint16(b[0x106:], ctl)
	}
	return b
}

func (w *writer) numa(m *Machine) {
	var all []int
	ids := make([]int, 0, len(m.NUMA))
	for _, n := range m.NUMA {
		cpus, _ := ParseCPUList(n.CPUs)
		all = append(all, cpus...)
		ids = append(ids, n.ID)
		d := fmt.Sprintf("devices/system/node/node%d", n.ID)
		w.file(d+"/cpulist", FormatCPUList(cpus)+"\n")
		w.file(d+"/cpumap", cpuMask(cpus, m.maxCPU())+"\n")
	}
	sort.Ints(ids)
	w.file("devices/system/node/online", FormatCPUList(ids)+"\n")
	w.file("devices/system/node/possible", FormatCPUList(ids)+"\n")
	sort.Ints(all)
	for _, f := range []string{"online", "present", "possible"} {
		w.file("devices/system/cpu/"+f, FormatCPUList(all)+"\n")
	}
}

func (m *Machine) maxCPU() int {
	mx := 0
	for _, n := range m.NUMA {
		cpus, _ := ParseCPUList(n.CPUs)
		for _, c := range cpus {
			mx = max(mx, c)
		}
	}
	return mx
}

func (m *Machine) cpusOf(numa int) []int {
	var out []int
	for _, n := range m.NUMA {
		if numa == -1 || n.ID == numa {
			c, _ := ParseCPUList(n.CPUs)
			out = append(out, c...)
		}
	}
	sort.Ints(out)
	return out
}

func (w *writer) function(m *Machine, f *Function) {
	n := f.Node
	dir := "devices/" + strings.Join(f.Path, "/")
	subV, subD := n.Vendor, "0x0000"
	if n.SubsystemVendor != "" {
		subV, subD = n.SubsystemVendor, n.SubsystemDevice
	}
	cpus := m.cpusOf(f.NUMA)
	attrs := map[string]string{
		"vendor": n.Vendor, "device": f.Device, "class": f.Class,
		"subsystem_vendor": subV, "subsystem_device": subD, "revision": "0x00",
		"numa_node": strconv.Itoa(f.NUMA), "local_cpulist": FormatCPUList(cpus),
		"local_cpus": cpuMask(cpus, m.maxCPU()), "modalias": modalias(n.Vendor, f.Device, subV, subD, f.Class),
		"enable": "1", "irq": "0", "msi_bus": "1",
	}
	for k, v := range attrs {
		w.file(dir+"/"+k, v+"\n")
	}
	w.file(dir+"/uevent", fmt.Sprintf("DRIVER=%s\nPCI_CLASS=%s\nPCI_ID=%s:%s\nPCI_SLOT_NAME=%s\nMODALIAS=%s\n",
		f.Driver, strings.ToUpper(strings.TrimPrefix(f.Class, "0x")), upperID(n.Vendor), upperID(f.Device), f.BDF, attrs["modalias"]))
	w.link(dir+"/subsystem", "bus/pci")
	w.link("bus/pci/devices/"+f.BDF, dir)
	if f.Driver != "" {
		w.link(dir+"/driver", "bus/pci/drivers/"+f.Driver)
		w.link("bus/pci/drivers/"+f.Driver+"/"+f.BDF, dir)
	}
	if !f.IsVF {
		w.pcie(n, f, dir)
	}
	switch n.Type {
	case "bridge":
		sec, _ := strconv.ParseUint(n.Secondary, 16, 8)
		sub, _ := strconv.ParseUint(n.Subordinate, 16, 8)
		w.file(dir+"/secondary_bus_number", fmt.Sprintf("%d\n", sec))
		w.file(dir+"/subordinate_bus_number", fmt.Sprintf("%d\n", sub))
		bus := f.BDF[:5] + n.Secondary
		w.mkdir(dir + "/pci_bus/" + bus)
		w.link("class/pci_bus/"+bus, dir+"/pci_bus/"+bus)
	case "nic":
		w.nic(f, dir)
	}
}

func (w *writer) nic(f *Function, dir string) {
	n := f.Node
	ib := n.LinkLayer == "infiniband"
	if !f.IsVF && n.SRIOV != nil {
		s := n.SRIOV
		w.file(dir+"/sriov_totalvfs", fmt.Sprintf("%d\n", s.TotalVFs))
		w.fileMode(dir+"/sriov_numvfs", fmt.Sprintf("%d\n", s.NumVFs), 0o644)
		w.file(dir+"/sriov_offset", fmt.Sprintf("%d\n", s.VFOffset))
		w.file(dir+"/sriov_stride", fmt.Sprintf("%d\n", s.VFStride))
		w.file(dir+"/sriov_vf_device", strings.TrimPrefix(s.VFDevice, "0x")+"\n")
		w.fileMode(dir+"/sriov_drivers_autoprobe", "1\n", 0o644)
		parent := filepath.Dir(dir)
		for i, vf := range f.VFs {
			w.link(fmt.Sprintf("%s/virtfn%d", dir, i), parent+"/"+vf)
		}
	}
	if f.IsVF {
		w.link(dir+"/physfn", filepath.Dir(dir)+"/"+f.PF)
	}
	if f.Netdev != "" {
		nd := dir + "/net/" + f.Netdev
		up := f.Oper == "up"
		addr, addrLen, typ, bcast := f.MAC, "6", "1", "ff:ff:ff:ff:ff:ff"
		if ib {
			addr, addrLen, typ = ipoibAddress(f.PortGUID), "20", "32"
			bcast = "00:ff:ff:ff:ff:12:40:1b:ff:ff:00:00:00:00:00:00:ff:ff:ff:ff"
		}
		speed, duplex, carrier := strconv.Itoa(f.Speed), "full", "1"
		if !up {
			speed, duplex, carrier = "-1", "unknown", "0"
		}
		for k, v := range map[string]string{
			"address": addr, "addr_len": addrLen, "type": typ, "broadcast": bcast,
			"dev_id": "0x0", "dev_port": "0", "duplex": duplex, "ifindex": strconv.Itoa(f.IfIndex),
			"iflink": strconv.Itoa(f.IfIndex), "mtu": strconv.Itoa(f.MTU), "operstate": f.Oper,
			"carrier": carrier, "speed": speed, "flags": "0x1003", "tx_queue_len": "1000",
		} {
			w.file(nd+"/"+k, v+"\n")
		}
		if ib {
			w.file(nd+"/pkey", "0xffff\n") // an IPoIB netdev's partition: the default one
		}
		w.link(nd+"/device", dir)
		w.link(nd+"/subsystem", "class/net")
		w.link("class/net/"+f.Netdev, nd)
	}
	if f.RDMA != "" {
		rd := dir + "/infiniband/" + f.RDMA
		w.file(rd+"/node_type", "1: CA\n")
		w.file(rd+"/node_guid", f.NodeGUID+"\n")
		w.file(rd+"/sys_image_guid", f.NodeGUID+"\n")
		if n.Vendor == "0x15b3" {
			id, _ := strconv.ParseUint(strings.TrimPrefix(f.Device, "0x"), 16, 16)
			w.file(rd+"/hca_type", fmt.Sprintf("MT%d\n", id))
		}
		w.link(rd+"/device", dir)
		p := rd + "/ports/1"
		state, phys := "4: ACTIVE", "5: LinkUp"
		if f.Oper != "up" {
			state, phys = "1: DOWN", "3: Disabled"
		}
		ll := "Ethernet"
		gid := "fe80:0000:0000:0000:" + eui64(f.MAC)
		if ib {
			ll = "InfiniBand"
			gid = "fe80:0000:0000:0000:" + f.PortGUID
			w.file(p+"/pkeys/0", "0xffff\n")
		} else if f.Netdev != "" {
			w.file(p+"/gid_attrs/ndevs/0", f.Netdev+"\n")
		}
		w.file(p+"/link_layer", ll+"\n")
		w.file(p+"/state", state+"\n")
		w.file(p+"/phys_state", phys+"\n")
		w.file(p+"/rate", rate(f.Speed)+"\n")
		w.file(p+"/gids/0", gid+"\n")
		w.file(p+"/gid_attrs/types/0", "IB/RoCE v1\n")
		w.link("class/infiniband/"+f.RDMA, rd)
		idx := strconv.Itoa(f.RDMAIdx)
		uv := dir + "/infiniband_verbs/uverbs" + idx
		w.file(uv+"/ibdev", f.RDMA+"\n")
		w.file(uv+"/abi_version", "1\n")
		w.link("class/infiniband_verbs/uverbs"+idx, uv)
		for _, kind := range []string{"umad", "issm"} {
			d := dir + "/infiniband_mad/" + kind + idx
			w.file(d+"/ibdev", f.RDMA+"\n")
			w.file(d+"/port", "1\n")
			w.link("class/infiniband_mad/"+kind+idx, d)
			maj, min := mad(kind, f.RDMAIdx)
			w.devnode("infiniband/"+kind+idx, maj, min)
		}
		maj, min := uverbs(f.RDMAIdx)
		w.devnode("infiniband/uverbs"+idx, maj, min)
	}
}

// ipoibAddress is the 20-byte IPoIB hardware address for a port GUID.
func ipoibAddress(portGUID string) string {
	hex := strings.ReplaceAll(portGUID, ":", "")
	var b strings.Builder
	b.WriteString("00:00:10:29:fe:80:00:00:00:00:00:00")
	for i := 0; i+2 <= len(hex); i += 2 {
		b.WriteString(":" + hex[i:i+2])
	}
	return b.String()
}

// eui64 turns a MAC into the interface identifier of its link-local GID.
func eui64(mac string) string {
	p := strings.Split(mac, ":")
	if len(p) != 6 {
		return "0000:0000:0000:0000"
	}
	b0, _ := strconv.ParseUint(p[0], 16, 8)
	return fmt.Sprintf("%02x%s:%sff:fe%s:%s%s", b0^0x02, p[1], p[2], p[3], p[4], p[5])
}

func rate(mbps int) string {
	switch mbps {
	case 400000:
		return "400 Gb/sec (4X NDR)"
	case 200000:
		return "200 Gb/sec (4X HDR)"
	case 100000:
		return "100 Gb/sec (4X EDR)"
	}
	return fmt.Sprintf("%d Gb/sec (4X)", mbps/1000)
}

func upperID(id string) string { return strings.ToUpper(strings.TrimPrefix(id, "0x")) }

// modalias is the kernel's pci:v%08Xd%08Xsv%08Xsd%08Xbc%02Xsc%02Xi%02X.
func modalias(vendor, device, subV, subD, class string) string {
	c := strings.ToUpper(strings.TrimPrefix(class, "0x"))
	for len(c) < 6 {
		c = "0" + c
	}
	return fmt.Sprintf("pci:v0000%sd0000%ssv0000%ssd0000%sbc%ssc%si%s",
		upperID(vendor), upperID(device), upperID(subV), upperID(subD), c[0:2], c[2:4], c[4:6])
}

// FormatCPUList writes a sorted set in the kernel's cpulist format.
func FormatCPUList(cpus []int) string {
	s := append([]int(nil), cpus...)
	sort.Ints(s)
	var parts []string
	for i := 0; i < len(s); {
		j := i
		for j+1 < len(s) && s[j+1] == s[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, strconv.Itoa(s[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", s[i], s[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

// cpuMask writes the kernel's cpumask bitmap: comma-separated 32-bit hex
// words, most significant first, as many words as the highest CPU needs.
func cpuMask(cpus []int, maxCPU int) string {
	words := make([]uint32, maxCPU/32+1)
	for _, c := range cpus {
		words[c/32] |= 1 << (c % 32)
	}
	parts := make([]string, len(words))
	for i := range words {
		parts[len(words)-1-i] = fmt.Sprintf("%08x", words[i])
	}
	return strings.Join(parts, ",")
}
