// Package topology computes GPU↔NIC PCIe affinity classes the way
// `nvidia-smi topo -m` does, from PCIe ancestry and NUMA nodes, and groups
// NICs into rails (the GPUs each NIC is closest to).
package topology

import (
	"fmt"
	"slices"
	"strings"

	"github.com/railnet/railnet/pkg/discovery"
)

// Class is a GPU↔NIC affinity class; lower is closer.
type Class int

// The classes, closest first.
const (
	PIX  Class = iota + 1 // at most one PCIe bridge (a switch counts as one)
	PXB                   // several bridges, no host bridge
	PHB                   // through a PCIe host bridge (root complex)
	NODE                  // between host bridges of one NUMA node
	SYS                   // across the SMP interconnect, or locality unknown
)

var classNames = map[Class]string{PIX: "PIX", PXB: "PXB", PHB: "PHB", NODE: "NODE", SYS: "SYS"}

func (c Class) String() string {
	if s, ok := classNames[c]; ok {
		return s
	}
	return fmt.Sprintf("Class(%d)", int(c))
}

// ParseClass reads "PIX" ... "SYS" (any case).
func ParseClass(s string) (Class, error) {
	for c, n := range classNames {
		if strings.EqualFold(n, s) {
			return c, nil
		}
	}
	return 0, fmt.Errorf("unknown topology class %q: want PIX, PXB, PHB, NODE or SYS", s)
}

// MarshalText writes the class name.
func (c Class) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText reads a class name.
func (c *Class) UnmarshalText(b []byte) error {
	v, err := ParseClass(string(b))
	*c = v
	return err
}

// Classify returns the class between two PCI functions given their ancestry
// (host bridge element first, the function itself last) and NUMA nodes.
//
// Different host bridges: NODE when both NUMA nodes are known and equal,
// else SYS. Same host bridge: the nearest common element decides — the host
// bridge itself is PHB; a bridge with at most one bridge below it on each
// side (a switch's downstream ports) is PIX; deeper is PXB.
func Classify(a []string, numaA int, b []string, numaB int) Class {
	if len(a) == 0 || len(b) == 0 || a[0] != b[0] {
		if numaA >= 0 && numaA == numaB {
			return NODE
		}
		return SYS
	}
	n := 0 // length of the common prefix
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	nca := n - 1
	if nca == 0 {
		return PHB
	}
	// Elements strictly between the NCA and each device. When one device is
	// an ancestor of the other the count is negative on its side: it is
	// the bridge itself, as close as it gets.
	da := len(a) - 1 - nca - 1
	db := len(b) - 1 - nca - 1
	if da <= 1 && db <= 1 {
		return PIX
	}
	return PXB
}

// GPU is a row of the matrix.
type GPU struct {
	Name string `json:"name"`
	BDF  string `json:"bdf"`
	NUMA int    `json:"numa"`
}

// NIC is a column of the matrix: a PF, a plain NIC, or a VF whose PF is not
// visible (inside a VM).
type NIC struct {
	Name   string `json:"name"` // RDMA device, or netdev when it has none, or the BDF
	Netdev string `json:"netdev"`
	BDF    string `json:"bdf"`
	NUMA   int    `json:"numa"`
}

// Rail is a group of NICs that share the same closest GPU(s).
type Rail struct {
	Name  string   `json:"name"` // rail0, rail1, ... by class, then first GPU
	GPUs  []string `json:"gpus"`
	NICs  []string `json:"nics"`
	Class Class    `json:"class"` // the class between these NICs and these GPUs
}

// Topology is the GPU×NIC matrix of one node.
type Topology struct {
	GPUs   []GPU                       `json:"gpus"`
	NICs   []NIC                       `json:"nics"`
	Matrix map[string]map[string]Class `json:"matrix"`
	Rails  []Rail                      `json:"-"`

	inv   *discovery.Inventory
	byNC  map[string]*discovery.NIC // column name → NIC
	byBDF map[string]*discovery.NIC // every network function, VFs included
}

// Build computes the matrix and rails of an inventory.
func Build(inv *discovery.Inventory) *Topology {
	t := &Topology{Matrix: map[string]map[string]Class{}, inv: inv, byNC: map[string]*discovery.NIC{},
		byBDF: make(map[string]*discovery.NIC, len(inv.NICs))}
	for _, n := range inv.NICs {
		t.byBDF[n.BDF] = n
	}
	for _, g := range inv.GPUs {
		t.GPUs = append(t.GPUs, GPU{Name: g.Name, BDF: g.BDF, NUMA: g.NUMA})
	}
	for _, n := range inv.NICs {
		if n.Kind == discovery.KindVF && n.PFVisible {
			continue // shares its PF's class
		}
		col := NIC{Name: NICName(n), BDF: n.BDF, NUMA: n.NUMA}
		if len(n.Netdevs) > 0 {
			col.Netdev = n.Netdevs[0].Name
		}
		t.NICs = append(t.NICs, col)
		t.byNC[col.Name] = n
	}
	for _, g := range inv.GPUs {
		row := map[string]Class{}
		for _, c := range t.NICs {
			n := t.byNC[c.Name]
			row[c.Name] = Classify(g.Ancestry, g.NUMA, n.Ancestry, n.NUMA)
		}
		t.Matrix[g.Name] = row
	}
	t.Rails = t.rails()
	return t
}

// NICName names a NIC as the matrix does: its first RDMA device, else its
// first netdev, else its BDF.
func NICName(n *discovery.NIC) string {
	switch {
	case len(n.RDMA) > 0:
		return n.RDMA[0]
	case len(n.Netdevs) > 0:
		return n.Netdevs[0].Name
	}
	return n.BDF
}

// Class returns the class between a GPU (by name) and any network function
// (by BDF; a VF answers with its own ancestry, which equals its PF's).
func (t *Topology) Class(gpu, nicBDF string) (Class, bool) {
	var g *discovery.GPU
	for _, x := range t.inv.GPUs {
		if x.Name == gpu {
			g = x
		}
	}
	n := t.byBDF[nicBDF]
	if g == nil || n == nil {
		return 0, false
	}
	return Classify(g.Ancestry, g.NUMA, n.Ancestry, n.NUMA), true
}

// Nearest returns, for a network function, its closest class to any GPU and
// the GPUs at that class. ok is false when there are no GPUs.
// Pools call it for every function of a node, so the lookup is a map, not
// Inventory.NIC's scan.
func (t *Topology) Nearest(nicBDF string) (best Class, gpus []string, ok bool) {
	n := t.byBDF[nicBDF]
	if n == nil {
		return 0, nil, false
	}
	return t.nearest(n)
}

func (t *Topology) nearest(n *discovery.NIC) (best Class, gpus []string, ok bool) {
	if len(t.inv.GPUs) == 0 {
		return 0, nil, false
	}
	best = SYS + 1
	for _, g := range t.inv.GPUs {
		c := Classify(g.Ancestry, g.NUMA, n.Ancestry, n.NUMA)
		switch {
		case c < best:
			best, gpus = c, []string{g.Name}
		case c == best:
			gpus = append(gpus, g.Name)
		}
	}
	return best, gpus, true
}

func (t *Topology) rails() []Rail {
	type key struct {
		gpus  string
		class Class
	}
	groups := map[key]*Rail{}
	var order []key
	for _, c := range t.NICs {
		best, gpus, ok := t.nearest(t.byNC[c.Name])
		if !ok {
			return nil
		}
		k := key{strings.Join(gpus, ","), best}
		r := groups[k]
		if r == nil {
			r = &Rail{GPUs: gpus, Class: best}
			groups[k] = r
			order = append(order, k)
		}
		r.NICs = append(r.NICs, c.Name)
	}
	gpuIndex := map[string]int{}
	for i, g := range t.GPUs {
		gpuIndex[g.Name] = i
	}
	slices.SortStableFunc(order, func(a, b key) int {
		// Closest rails first, so on a DGX rail<i> is GPU<i>'s own HCA.
		ra, rb := groups[a], groups[b]
		if d := int(ra.Class) - int(rb.Class); d != 0 {
			return d
		}
		if d := gpuIndex[ra.GPUs[0]] - gpuIndex[rb.GPUs[0]]; d != 0 {
			return d
		}
		return len(ra.GPUs) - len(rb.GPUs)
	})
	out := make([]Rail, 0, len(order))
	for i, k := range order {
		r := *groups[k]
		r.Name = fmt.Sprintf("rail%d", i)
		out = append(out, r)
	}
	return out
}
