package doctor

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/railnet/railnet/pkg/discovery"
	"github.com/railnet/railnet/pkg/topology"
)

// link is a function's PCIe link as sysfs shows it.
type link struct {
	speed, maxSpeed float64 // GT/s
	width, maxWidth int
	speedS, maxS    string
}

func (d *doc) link(path string) (link, bool) {
	var l link
	var err error
	if l.speedS, err = d.o.Sys.ReadString(path + "/current_link_speed"); err != nil {
		return l, false
	}
	l.maxS, _ = d.o.Sys.ReadString(path + "/max_link_speed")
	l.speed, l.maxSpeed = gts(l.speedS), gts(l.maxS)
	l.width, _ = d.o.Sys.ReadInt(path + "/current_link_width")
	l.maxWidth, _ = d.o.Sys.ReadInt(path + "/max_link_width")
	return l, l.speed > 0 && l.maxSpeed > 0 && l.width > 0 && l.maxWidth > 0
}

// gts parses "32.0 GT/s PCIe" (0 for "Unknown" or garbage).
func gts(s string) float64 {
	num, _, _ := strings.Cut(s, " ")
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 {
		return 0
	}
	return v
}

// pcieLink: every function on a rail's GPU↔NIC paths (the endpoints and
// the bridges up to their common ancestor) whose link trained below what
// it and the port above it can do; the slowest hop of each path is named.
func (d *doc) pcieLink() {
	type hop struct {
		bdf  string
		l    link
		want link
	}
	degraded := map[string]hop{}
	slowest := map[string][]string{} // bdf → pairs it is the slowest hop of
	for _, p := range d.pairs {
		var worst *hop
		for _, anc := range [][]string{p.gpu.Ancestry, p.nic.Ancestry} {
			for i := max(common(p.gpu.Ancestry, p.nic.Ancestry)-1, 1); i < len(anc); i++ {
				l, ok := d.link(dir(anc, i))
				if !ok {
					continue
				}
				want := l
				want.speed, want.width, want.speedS = l.maxSpeed, l.maxWidth, l.maxS
				if i > 1 {
					if up, ok := d.link(dir(anc, i-1)); ok {
						if up.maxSpeed < want.speed {
							want.speed, want.speedS = up.maxSpeed, up.maxS
						}
						want.width = min(want.width, up.maxWidth)
					}
				}
				h := hop{bdf: anc[i], l: l, want: want}
				if l.speed < want.speed || l.width < want.width {
					degraded[anc[i]] = h
				}
				if worst == nil || l.speed*float64(l.width) < worst.l.speed*float64(worst.l.width) {
					worst = &h
				}
			}
		}
		if worst != nil {
			if _, bad := degraded[worst.bdf]; bad {
				slowest[worst.bdf] = append(slowest[worst.bdf], p.name)
			}
		}
	}
	for bdf, h := range degraded {
		found := fmt.Sprintf("link trained at %s x%d", h.l.speedS, h.l.width)
		if ps := slowest[bdf]; len(ps) > 0 {
			slices.Sort(ps)
			found += ", the slowest hop of " + strings.Join(ps, ", ")
		}
		d.add(Warn, CheckPCIeLink, bdf, found, fmt.Sprintf("%s x%d", h.want.speedS, h.want.width),
			"reseat the card or cable, check riser and BIOS PCIe settings (bifurcation, Gen); the link renegotiates at the next reset")
	}
}

// ACS extended capability (PCIe base spec 7.7.8): ID 0x000D; the control
// register is at +6. Redirect and upstream forwarding send peer-to-peer
// TLPs up to the root complex.
const (
	ecapACS         = 0x000D
	acsRR, acsCR    = 1 << 2, 1 << 3
	acsUF           = 1 << 4
	configSpaceSize = 4096
)

// ACSControl finds the ACS control register in a config space. ok is false
// without an ACS capability; err when the space cannot be parsed (short,
// a looping or out-of-range list).
func ACSControl(config []byte) (ctl uint16, ok bool, err error) {
	if len(config) < configSpaceSize {
		return 0, false, fmt.Errorf("config space is %d bytes, not %d (read as root)", len(config), configSpaceSize)
	}
	seen := map[int]bool{}
	for off := 0x100; off != 0; {
		if off < 0x100 || off+8 > len(config) || off%4 != 0 || seen[off] {
			return 0, false, fmt.Errorf("extended capability list broken at 0x%x", off)
		}
		seen[off] = true
		h := binary.LittleEndian.Uint32(config[off:])
		if h == 0 || h == 0xffffffff {
			return 0, false, nil
		}
		if h&0xffff == ecapACS {
			return binary.LittleEndian.Uint16(config[off+6:]), true, nil
		}
		off = int(h>>20) & 0xffc
	}
	return 0, false, nil
}

// acs: switch ports between a GPU and a NIC of one PIX/PXB rail.
func (d *doc) acs() {
	for _, p := range d.pairs {
		if p.class != topology.PIX && p.class != topology.PXB {
			continue
		}
		c := common(p.gpu.Ancestry, p.nic.Ancestry)
		for _, anc := range [][]string{p.gpu.Ancestry, p.nic.Ancestry} {
			// Below the root port (index 1), down to the endpoint's parent.
			for i := max(c-1, 2); i < len(anc)-1; i++ {
				b, err := d.o.Sys.ReadFile(dir(anc, i) + "/config")
				if err != nil {
					continue
				}
				ctl, ok, err := ACSControl(b)
				switch {
				case err != nil:
					d.add(Warn, CheckACS, anc[i], err.Error(), "ACS readable", "run railnetctl doctor as root to read PCIe config space")
				case ok && ctl&(acsRR|acsCR|acsUF) != 0:
					var on []string
					for _, b := range []struct {
						bit  uint16
						name string
					}{{acsRR, "P2P Request Redirect"}, {acsCR, "P2P Completion Redirect"}, {acsUF, "Upstream Forwarding"}} {
						if ctl&b.bit != 0 {
							on = append(on, b.name)
						}
					}
					d.add(Error, CheckACS, anc[i], "ACS "+strings.Join(on, ", ")+" enabled on a switch port of "+p.name,
						"ACS redirect off on switch ports between a rail's GPU and NIC",
						"disable it (setpci -s "+anc[i]+" ECAP_ACS+0x6.w=0, or boot with pci=disable_acs_redir="+anc[i]+"; some BIOSes have an ACS option)")
				}
			}
		}
	}
}

// iommu: a GPU or rail NIC whose IOMMU group translates DMA.
func (d *doc) iommu() {
	if names, err := d.o.Sys.ReadNames("kernel/iommu_groups"); err != nil || len(names) == 0 {
		return
	}
	check := func(name string, dev *discovery.PCIDevice) {
		g, err := d.o.Sys.LinkBase(dev.Path + "/iommu_group")
		if err != nil {
			return
		}
		t, err := d.o.Sys.ReadString("kernel/iommu_groups/" + g + "/type")
		if err != nil {
			return
		}
		if t == "DMA" || t == "DMA-FQ" {
			d.add(Warn, CheckIOMMU, dev.BDF, fmt.Sprintf("%s: IOMMU group %s translates DMA (type %s)", name, g, t), "identity (pass-through)",
				"boot with iommu=pt (intel_iommu=on iommu=pt, or amd_iommu=on iommu=pt) so GPUDirect DMA is not translated")
		}
	}
	for _, g := range d.inv.GPUs {
		check(g.Name, &g.PCIDevice)
	}
	for _, p := range d.pairs {
		check(topology.NICName(p.nic), &p.nic.PCIDevice)
	}
}

// gpudirect: NVIDIA GPUs and RDMA NICs, but no peer-memory module.
func (d *doc) gpudirect() {
	if len(d.inv.GPUs) == 0 || len(d.inv.RDMA) == 0 || !d.o.Sys.Exists("module") {
		return // no pair to serve, or a tree that does not model modules
	}
	if d.o.Sys.Exists("module/nvidia_peermem") || d.o.Sys.Exists("module/nv_peer_mem") {
		return
	}
	d.add(Warn, CheckGPUDirect, "node", "neither /sys/module/nvidia_peermem nor /sys/module/nv_peer_mem: no GPUDirect RDMA peer-memory module is loaded",
		"nvidia_peermem loaded (or dma-buf: open GPU kernel modules, kernel 5.12+, NCCL 2.19+, which sysfs cannot show)",
		"modprobe nvidia_peermem, and list it in /etc/modules-load.d so it loads at boot")
}

// railConsistency: NICs of rails of one class should match in rate, MTU,
// link layer; every rail NIC's port should be ACTIVE.
func (d *doc) railConsistency() {
	type attrs struct{ rate, mtu, layer string }
	byClass := map[topology.Class][]*discovery.NIC{}
	for _, r := range d.rails {
		for _, nn := range r.NICs {
			if n := d.nics[nn]; n != nil {
				byClass[r.Class] = append(byClass[r.Class], n)
			}
		}
	}
	for _, nics := range byClass {
		got := map[*discovery.NIC]attrs{}
		count := map[attrs]int{}
		for _, n := range nics {
			var a attrs
			a.layer = n.LinkType
			if len(n.Netdevs) > 0 {
				a.mtu = strconv.Itoa(n.Netdevs[0].MTU)
			}
			for _, name := range n.RDMA {
				if r := d.inv.RDMADevice(name); r != nil {
					a.rate, _ = d.o.Sys.ReadString("class/infiniband/" + name + "/ports/1/rate")
					if !r.Active() {
						state := "no port"
						if len(r.Ports) > 0 {
							state = r.Ports[0].State
						}
						d.add(Error, CheckRailConsistency, n.BDF, fmt.Sprintf("%s port 1 is %s", name, state), "ACTIVE",
							"check the cable, the switch port and the subnet manager (IB) or the link partner (RoCE)")
					}
				}
			}
			got[n] = a
			count[a]++
		}
		if len(count) < 2 {
			continue
		}
		// The reference is what most rail NICs have; on a tie, the fastest
		// (the slow one is what holds NCCL back).
		var common attrs
		for a, c := range count {
			if c > count[common] || c == count[common] && (gts(a.rate) > gts(common.rate) ||
				gts(a.rate) == gts(common.rate) && fmt.Sprint(a) < fmt.Sprint(common)) {
				common = a
			}
		}
		for n, a := range got {
			if a != common {
				d.add(Warn, CheckRailConsistency, n.BDF, fmt.Sprintf("%s: rate %q, MTU %s, link layer %s", topology.NICName(n), a.rate, a.mtu, a.layer),
					fmt.Sprintf("as the other rail NICs: rate %q, MTU %s, link layer %s", common.rate, common.mtu, common.layer),
					"configure every rail NIC alike (port speed, MTU, link type): NCCL runs at the pace of the slowest rail")
			}
		}
	}
}

// numa: locality unknown on a machine where it matters.
func (d *doc) numa() {
	if len(d.inv.NUMANodes) < 2 {
		return
	}
	for _, g := range d.inv.GPUs {
		if g.NUMA < 0 {
			d.add(Warn, CheckNUMA, g.BDF, g.Name+": numa_node -1", "the node the device is attached to",
				"enable NUMA/SRAT reporting in the BIOS (ACPI _PXM), or update the firmware")
		}
	}
	for _, n := range d.inv.NICs {
		if n.Kind == discovery.KindPF && n.NUMA < 0 {
			d.add(Warn, CheckNUMA, n.BDF, topology.NICName(n)+": numa_node -1", "the node the device is attached to",
				"enable NUMA/SRAT reporting in the BIOS (ACPI _PXM), or update the firmware")
		}
	}
}

// rdmaMode: shared rdma pools need the RDMA subsystem in shared netns
// mode (ib_core's netns_mode).
func (d *doc) rdmaMode() {
	if d.o.Config == nil {
		return
	}
	mode, err := d.o.Sys.ReadString("module/ib_core/parameters/netns_mode")
	if err != nil || mode != "N" {
		return // shared (Y), or no RDMA subsystem to check
	}
	for _, p := range d.o.Config.Pools {
		if p.Kind == "rdma" && p.Shared > 0 {
			d.add(Error, CheckRDMAMode, "pool "+p.Name, "RDMA netns mode exclusive (ib_core netns_mode=N), pool "+p.Name+" shares HCAs",
				"shared", "rdma system set netns shared, or boot without ib_core.netns_mode=0")
		}
	}
}

// sriov: VFs without a driver; sriov pools that get a PF whose VFs are
// not enabled.
func (d *doc) sriov() {
	for _, n := range d.inv.NICs {
		if n.Kind == discovery.KindVF && n.Driver == "" {
			d.add(Warn, CheckSRIOV, n.BDF, "VF without a driver", "a bound driver (mlx5_core, vfio-pci, ...)",
				"echo "+n.BDF+" > /sys/bus/pci/drivers_probe, or set sriov_drivers_autoprobe to 1 before creating VFs")
		}
	}
	if d.o.Config == nil {
		return
	}
	for _, p := range d.o.Config.Pools {
		if p.Kind != "" && p.Kind != "sriov" {
			continue
		}
		for _, n := range d.inv.NICs {
			if n.Kind != discovery.KindPF || n.SRIOV == nil || n.SRIOV.TotalVFs == 0 || n.SRIOV.NumVFs > 0 {
				continue
			}
			if slices.ContainsFunc(p.Selectors.PFNames, func(s string) bool {
				name, _, _ := strings.Cut(s, "#")
				return len(n.Netdevs) > 0 && n.Netdevs[0].Name == name
			}) {
				d.add(Warn, CheckSRIOV, n.BDF, fmt.Sprintf("pool %s selects VFs of %s, but sriov_numvfs is 0 (of %d)", p.Name, n.Netdevs[0].Name, n.SRIOV.TotalVFs),
					"VFs enabled", fmt.Sprintf("echo N > /sys/class/net/%s/device/sriov_numvfs (N ≤ %d)", n.Netdevs[0].Name, n.SRIOV.TotalVFs))
			}
		}
	}
}
