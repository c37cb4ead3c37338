// Package discovery builds a node's inventory (PCI functions, SR-IOV PFs
// and VFs, netdevs, RDMA devices and their character devices, NVIDIA GPUs)
// from sysfs and devfs read through pkg/sysfs. A broken or partial tree
// never aborts a scan: what cannot be read becomes a warning naming the path.
package discovery

import "fmt"

// Link types of a network function.
const (
	LinkEthernet   = "ether"
	LinkInfiniBand = "infiniband"
)

// Function kinds of a network function.
const (
	KindPF = "PF" // a physical function (or a plain NIC without SR-IOV)
	KindVF = "VF" // an SR-IOV virtual function
)

// PCIDevice is what every PCI function has.
type PCIDevice struct {
	BDF             string   `json:"bdf"`
	Vendor          string   `json:"vendor"`
	Device          string   `json:"device"`
	Class           string   `json:"class"`
	SubsystemVendor string   `json:"subsystemVendor,omitempty"`
	SubsystemDevice string   `json:"subsystemDevice,omitempty"`
	Driver          string   `json:"driver,omitempty"`
	NUMA            int      `json:"numa"` // -1: unknown
	Path            string   `json:"path"` // real path below the sysfs root
	Ancestry        []string `json:"ancestry"`
	Partial         bool     `json:"partial,omitempty"`
}

// HostBridge is the root complex element of the ancestry ("pci0000:15").
func (d *PCIDevice) HostBridge() string {
	if len(d.Ancestry) == 0 {
		return ""
	}
	return d.Ancestry[0]
}

// NIC is a network PCI function: a PF (or plain NIC) or a VF.
type NIC struct {
	PCIDevice
	Kind      string   `json:"kind"`
	LinkType  string   `json:"linkType,omitempty"`
	PF        string   `json:"pf,omitempty"`        // VF: its PF's BDF, when known
	PFVisible bool     `json:"pfVisible,omitempty"` // VF: the PF is present in this sysfs
	VFIndex   int      `json:"vfIndex"`             // VF: n of the PF's virtfn<n>; -1 when unknown
	SRIOV     *SRIOV   `json:"sriov,omitempty"`     // PF with SR-IOV capability
	Netdevs   []Netdev `json:"netdevs,omitempty"`
	RDMA      []string `json:"rdma,omitempty"` // names of the RDMA devices on this function

	rdma []*RDMADevice // read with the function; collected by scanRDMA
	vfs  *vfLinks      // a PF's virtfn links, read by a worker; used by linkVFs
	// leanPorts: a lean scan did not read this VF's RDMA ports; they are
	// its PF's (inheritPorts).
	leanPorts bool
	// classNet, classRDMA: a lean scan takes this VF's netdev and RDMA
	// names from the class links (namesFromClass).
	classNet, classRDMA bool
}

// SRIOV is a PF's SR-IOV state.
type SRIOV struct {
	TotalVFs int      `json:"totalVfs"`
	NumVFs   int      `json:"numVfs"`
	Offset   int      `json:"offset,omitempty"`
	Stride   int      `json:"stride,omitempty"`
	VFDevice string   `json:"vfDevice,omitempty"`
	VFs      []string `json:"vfs,omitempty"` // BDFs, index = VF number
}

// Netdev is a kernel network interface backed by a PCI function.
type Netdev struct {
	Name      string `json:"name"`
	MAC       string `json:"mac,omitempty"`
	MTU       int    `json:"mtu,omitempty"`
	OperState string `json:"operstate,omitempty"`
	Type      int    `json:"type,omitempty"` // ARPHRD: 1 Ethernet, 32 InfiniBand
	IfIndex   int    `json:"ifindex,omitempty"`
	SpeedMbps int    `json:"speedMbps,omitempty"` // -1 or 0: unknown
}

// RDMADevice is an entry of /sys/class/infiniband.
type RDMADevice struct {
	Name     string     `json:"name"`
	PCI      string     `json:"pci,omitempty"` // BDF; empty for a virtual device (rxe, siw)
	NodeGUID string     `json:"nodeGuid,omitempty"`
	Netdev   string     `json:"netdev,omitempty"`
	Ports    []RDMAPort `json:"ports,omitempty"`
	CharDevs []string   `json:"charDevs,omitempty"` // container paths: /dev/infiniband/uverbs0, umad0, issm0
	Partial  bool       `json:"partial,omitempty"`
	// classChars: a lean scan finds CharDevs through the class links (one
	// readlink each) rather than in the function's directories.
	classChars bool
}

// RDMAPort is one port of an RDMA device.
type RDMAPort struct {
	Port      int    `json:"port"`
	LinkLayer string `json:"linkLayer"` // "InfiniBand" or "Ethernet"
	State     string `json:"state"`     // "ACTIVE", "DOWN", ...
	PhysState string `json:"physState,omitempty"`
	GID0      string `json:"gid0,omitempty"`
	PortGUID  string `json:"portGuid,omitempty"` // InfiniBand: the low 64 bits of GID 0
}

// Active reports whether every port is ACTIVE.
func (r *RDMADevice) Active() bool {
	if len(r.Ports) == 0 {
		return false
	}
	for _, p := range r.Ports {
		if p.State != "ACTIVE" {
			return false
		}
	}
	return true
}

// GPU is an NVIDIA GPU (vendor 0x10de, display class 0x0300 or 3D class 0x0302).
type GPU struct {
	PCIDevice
	Index     int    `json:"index"` // nvidia-smi order: ascending BDF
	Name      string `json:"name"`  // "GPU<index>"
	DevNode   string `json:"devNode,omitempty"`
	LocalCPUs string `json:"localCpus,omitempty"` // local_cpulist: the CPU affinity nvidia-smi prints
}

// Warning is something discovery could not read or did not understand.
type Warning struct {
	Path string `json:"path"`
	Msg  string `json:"msg"`
}

func (w Warning) String() string { return fmt.Sprintf("%s: %s", w.Path, w.Msg) }

// Inventory is everything one scan found, each list sorted (BDF, or name
// for RDMA devices) so output is stable.
type Inventory struct {
	NUMANodes []int         `json:"numaNodes"`
	PCI       []*PCIDevice  `json:"-"`
	NICs      []*NIC        `json:"nics"`
	GPUs      []*GPU        `json:"gpus"`
	RDMA      []*RDMADevice `json:"rdma"`
	RDMACM    string        `json:"rdmaCM,omitempty"` // "/dev/infiniband/rdma_cm" when present
	Warnings  []Warning     `json:"warnings,omitempty"`
}

// NIC returns the network function with the BDF, or nil.
func (inv *Inventory) NIC(bdf string) *NIC {
	for _, n := range inv.NICs {
		if n.BDF == bdf {
			return n
		}
	}
	return nil
}

// RDMADevice returns the RDMA device with the name, or nil.
func (inv *Inventory) RDMADevice(name string) *RDMADevice {
	for _, r := range inv.RDMA {
		if r.Name == name {
			return r
		}
	}
	return nil
}

// Summary counts what was found.
type Summary struct {
	GPUs        int `json:"gpus"`
	PFs         int `json:"pfs"`
	VFs         int `json:"vfs"`
	Netdevs     int `json:"netdevs"`
	RDMADevices int `json:"rdmaDevices"`
	Warnings    int `json:"warnings"`
}

// Summary counts GPUs, PFs, VFs, netdevs of network functions and RDMA devices.
func (inv *Inventory) Summary() Summary {
	s := Summary{GPUs: len(inv.GPUs), RDMADevices: len(inv.RDMA), Warnings: len(inv.Warnings)}
	for _, n := range inv.NICs {
		if n.Kind == KindVF {
			s.VFs++
		} else {
			s.PFs++
		}
		s.Netdevs += len(n.Netdevs)
	}
	return s
}
