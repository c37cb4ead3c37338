// Package doctor finds what silently slows GPUDirect and NCCL on a node:
// PCIe links trained below their maximum, ACS redirecting GPU↔NIC
// peer-to-peer traffic, IOMMU translation, a missing GPUDirect module,
// inconsistent rails, unknown NUMA locality, an RDMA netns mode the pools
// cannot work with, SR-IOV left disabled. Everything is read from sysfs,
// read-only, through the injected root.
package doctor

import (
	"cmp"
	"slices"
	"strings"

	"github.com/railnet/railnet/pkg/discovery"
	"github.com/railnet/railnet/pkg/pools"
	"github.com/railnet/railnet/pkg/sysfs"
	"github.com/railnet/railnet/pkg/topology"
)

// Severities, worst first.
const (
	Error = "error"
	Warn  = "warn"
	Info  = "info"
)

// Check IDs.
const (
	CheckPCIeLink        = "pcie-link"
	CheckACS             = "acs"
	CheckIOMMU           = "iommu"
	CheckGPUDirect       = "gpudirect"
	CheckRailConsistency = "rail-consistency"
	CheckNUMA            = "numa"
	CheckRDMAMode        = "rdma-mode"
	CheckSRIOV           = "sriov"
)

// Finding is one problem: where, what was found, what it should be, and
// the fix in one sentence. Its JSON form is stable.
type Finding struct {
	Severity string `json:"severity"`
	Check    string `json:"check"`
	Device   string `json:"device"`
	Found    string `json:"found"`
	Want     string `json:"want"`
	Fix      string `json:"fix"`
}

// Options are what the checks read besides the inventory.
type Options struct {
	Sys    *sysfs.FS
	Config *pools.Config // the device plugin's pools; nil skips the checks that need them
}

// Run runs every check and returns the findings, worst first, then by
// check and device.
func Run(o Options, inv *discovery.Inventory, topo *topology.Topology) []Finding {
	d := &doc{o: o, inv: inv, topo: topo, nics: map[string]*discovery.NIC{}}
	for _, n := range inv.NICs {
		d.nics[topology.NICName(n)] = n
	}
	d.rails = d.gpuRails()
	d.pairs = d.railPairs()
	d.pcieLink()
	d.acs()
	d.iommu()
	d.gpudirect()
	d.railConsistency()
	d.numa()
	d.rdmaMode()
	d.sriov()
	rank := map[string]int{Error: 0, Warn: 1, Info: 2}
	slices.SortFunc(d.out, func(a, b Finding) int {
		return cmp.Or(cmp.Compare(rank[a.Severity], rank[b.Severity]), cmp.Compare(a.Check, b.Check), cmp.Compare(a.Device, b.Device),
			cmp.Compare(a.Found, b.Found))
	})
	return slices.CompactFunc(d.out, func(a, b Finding) bool { return a == b })
}

// ExitCode is 0 when clean, 1 with warnings, 2 with errors.
func ExitCode(fs []Finding) int {
	code := 0
	for _, f := range fs {
		switch f.Severity {
		case Error:
			return 2
		case Warn:
			code = 1
		}
	}
	return code
}

type doc struct {
	o     Options
	inv   *discovery.Inventory
	topo  *topology.Topology
	nics  map[string]*discovery.NIC // matrix column name → NIC
	rails []topology.Rail           // the GPU rails (gpuRails)
	pairs []pair                    // their GPU↔NIC pairs (railPairs)
	out   []Finding
}

func (d *doc) add(sev, check, dev, found, want, fix string) {
	d.out = append(d.out, Finding{Severity: sev, Check: check, Device: dev, Found: found, Want: want, Fix: fix})
}

func (d *doc) gpu(name string) *discovery.GPU {
	for _, g := range d.inv.GPUs {
		if g.Name == name {
			return g
		}
	}
	return nil
}

// pair is a GPU and a NIC of one rail, with the rail's class.
type pair struct {
	gpu   *discovery.GPU
	nic   *discovery.NIC
	name  string // "GPU0↔mlx5_0"
	class topology.Class
}

// railPairs lists every GPU↔NIC pair of every GPU rail: a rail whose NICs
// are at most PHB from its GPUs (the device plugin's default railMaxClass);
// NICs farther away (storage, management) carry no GPUDirect traffic.
func (d *doc) railPairs() []pair {
	var out []pair
	for _, r := range d.rails {
		for _, gn := range r.GPUs {
			g := d.gpu(gn)
			for _, nn := range r.NICs {
				if n := d.nics[nn]; g != nil && n != nil {
					out = append(out, pair{gpu: g, nic: n, name: gn + "↔" + nn, class: r.Class})
				}
			}
		}
	}
	return out
}

func (d *doc) gpuRails() []topology.Rail {
	var out []topology.Rail
	for _, r := range d.topo.Rails {
		if r.Class <= topology.PHB {
			out = append(out, r)
		}
	}
	return out
}

// dir is the sysfs directory of ancestry element i of a device.
func dir(ancestry []string, i int) string {
	return "devices/" + strings.Join(ancestry[:i+1], "/")
}

// common is the number of leading ancestry elements two devices share.
func common(a, b []string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}
