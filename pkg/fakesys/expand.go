package fakesys

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/railnet/railnet/pkg/sysfs"
)

// Function is one PCI function of a machine, with everything the
// materializer, the validator and tests need, derived once from the tree.
type Function struct {
	Node     *Node    // the fixture node; for a VF, its PF's node
	BDF      string   // this function's address
	Path     []string // "pci0000:15", "0000:15:01.0", ..., this BDF
	NUMA     int
	Parent   *Function // nil below a host bridge
	IsVF     bool
	VFIndex  int    // VF only
	PF       string // VF only: the PF's BDF
	Netdev   string
	RDMA     string
	MAC      string
	NodeGUID string
	PortGUID string
	MTU      int
	Speed    int
	Oper     string
	Driver   string
	Device   string
	Class    string
	IfIndex  int // 0 when no netdev
	RDMAIdx  int // uverbs/umad/issm index; -1 when no RDMA device
	VFs      []string
}

// Functions lists every PCI function (bridges, endpoints, existing VFs) in
// enumeration order, with ifindex and uverbs numbering assigned as the
// fixture README defines. The machine must be valid.
func (m *Machine) Functions() ([]*Function, error) {
	var out []*Function
	var walk func(n *Node, parent *Function, path []string, numa int) error
	walk = func(n *Node, parent *Function, path []string, numa int) error {
		f := &Function{Node: n, BDF: n.BDF, NUMA: numa, Parent: parent, RDMAIdx: -1,
			Path: append(append([]string(nil), path...), n.BDF)}
		f.Driver = defaultDriver(n)
		f.Device = n.Device
		f.Class = nodeClass(n)
		if n.Type == "nic" {
			f.Netdev, f.RDMA, f.MAC, f.NodeGUID = n.Netdev, n.RDMA, n.MAC, n.NodeGUID
			f.PortGUID = n.PortGUID
			if f.PortGUID == "" {
				f.PortGUID = n.NodeGUID
			}
			f.MTU, f.Speed, f.Oper = n.MTU, n.SpeedMbps, n.OperState
		}
		out = append(out, f)
		if n.Type == "nic" && n.SRIOV != nil {
			pf, err := sysfs.ParseBDF(n.BDF)
			if err != nil {
				return err
			}
			s := n.SRIOV
			for i := 0; i < s.NumVFs; i++ {
				rid := int(pf.RID()) + s.VFOffset + i*s.VFStride
				if rid > 0xffff {
					return fmt.Errorf("%s: VF %d lies beyond bus ff", n.BDF, i)
				}
				vbdf := sysfs.FromRID(pf.Domain, uint16(rid)).String()
				vf := &Function{Node: n, BDF: vbdf, NUMA: numa, Parent: parent, IsVF: true, VFIndex: i,
					PF: n.BDF, Driver: s.VFDriver, Device: s.VFDevice, Class: f.Class, RDMAIdx: -1,
					Path: append(append([]string(nil), path...), vbdf)}
				var err error
				if vf.Netdev, err = expandPattern(s.VFNetdev, i); err != nil {
					return fmt.Errorf("%s: sriov.vfNetdev: %w", n.BDF, err)
				}
				if vf.RDMA, err = expandPattern(s.VFRdma, i); err != nil {
					return fmt.Errorf("%s: sriov.vfRdma: %w", n.BDF, err)
				}
				if vf.MAC, err = expandPattern(s.VFMac, i); err != nil {
					return fmt.Errorf("%s: sriov.vfMac: %w", n.BDF, err)
				}
				if vf.NodeGUID, err = expandPattern(s.VFNodeGUID, i); err != nil {
					return fmt.Errorf("%s: sriov.vfNodeGuid: %w", n.BDF, err)
				}
				if vf.RDMA != "" && vf.NodeGUID == "" {
					vf.NodeGUID = "0000:0000:0000:0000"
				}
				vf.PortGUID = vf.NodeGUID
				vf.MTU, vf.Speed, vf.Oper = orInt(s.VFMtu, n.MTU), orInt(s.VFSpeedMbps, n.SpeedMbps), orStr(s.VFOperState, n.OperState)
				f.VFs = append(f.VFs, vbdf)
				out = append(out, vf)
			}
		}
		for i := range n.Children {
			if err := walk(&n.Children[i], f, f.Path, numa); err != nil {
				return err
			}
		}
		return nil
	}
	for ri := range m.Roots {
		r := &m.Roots[ri]
		numa := -1
		if r.NUMA != nil {
			numa = *r.NUMA
		}
		for i := range r.Children {
			if err := walk(&r.Children[i], nil, []string{r.hostBridge()}, numa); err != nil {
				return nil, err
			}
		}
	}
	assignNumbering(out)
	return out, nil
}

func (r *Root) domain() string {
	if r.Domain == "" {
		return "0000"
	}
	return r.Domain
}

func (r *Root) hostBridge() string { return "pci" + r.domain() + ":" + r.Bus }

// assignNumbering gives ifindex (lo = 1, PF netdevs by BDF, then VF netdevs by
// (PF BDF, n)) and uverbs indices (PF RDMA by BDF, then VF RDMA by (PF BDF, n)).
func assignNumbering(fns []*Function) {
	var pfs, vfs []*Function
	for _, f := range fns {
		if f.Node.Type != "nic" {
			continue
		}
		if f.IsVF {
			vfs = append(vfs, f)
		} else {
			pfs = append(pfs, f)
		}
	}
	sort.SliceStable(pfs, func(i, j int) bool { return sysfs.CompareBDFStrings(pfs[i].BDF, pfs[j].BDF) < 0 })
	sort.SliceStable(vfs, func(i, j int) bool {
		if c := sysfs.CompareBDFStrings(vfs[i].PF, vfs[j].PF); c != 0 {
			return c < 0
		}
		return vfs[i].VFIndex < vfs[j].VFIndex
	})
	ifindex, rdma := 2, 0
	for _, f := range append(pfs, vfs...) {
		if f.Netdev != "" {
			f.IfIndex = ifindex
			ifindex++
		}
		if f.RDMA != "" {
			f.RDMAIdx = rdma
			rdma++
		}
	}
}

func defaultDriver(n *Node) string {
	if n.Driver != nil {
		return *n.Driver
	}
	switch n.Type {
	case "bridge":
		return "pcieport"
	case "gpu":
		return "nvidia"
	}
	return ""
}

func nodeClass(n *Node) string {
	if n.Class != "" {
		return n.Class
	}
	switch n.Type {
	case "bridge":
		return "0x060400"
	case "gpu":
		return "0x030200"
	}
	return ""
}

func orInt(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

func orStr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// expandPattern fills the "{n[+K][:FMT]}" placeholders of a name pattern
// with VF index n. An empty pattern expands to "".
func expandPattern(p string, n int) (string, error) {
	var b strings.Builder
	for {
		i := strings.IndexByte(p, '{')
		if i < 0 {
			if strings.IndexByte(p, '}') >= 0 {
				return "", fmt.Errorf("unbalanced '}' in pattern")
			}
			b.WriteString(p)
			return b.String(), nil
		}
		if strings.IndexByte(p[:i], '}') >= 0 {
			return "", fmt.Errorf("unbalanced '}' in pattern")
		}
		b.WriteString(p[:i])
		j := strings.IndexByte(p[i:], '}')
		if j < 0 {
			return "", fmt.Errorf("unterminated placeholder in pattern")
		}
		ph := p[i+1 : i+j]
		p = p[i+j+1:]
		spec, format, hasFmt := strings.Cut(ph, ":")
		if !hasFmt {
			format = "d"
		}
		switch format {
		case "d", "x", "02x", "04x":
		default:
			return "", fmt.Errorf("placeholder {%s}: format %q is not d, x, 02x or 04x", ph, format)
		}
		v := n
		if spec != "n" {
			k, ok := strings.CutPrefix(spec, "n+")
			if !ok {
				return "", fmt.Errorf("placeholder {%s}: want {n}, {n+K}", ph)
			}
			kv, err := strconv.Atoi(k)
			if err != nil || kv < 0 || k != strconv.Itoa(kv) {
				return "", fmt.Errorf("placeholder {%s}: K must be a decimal integer >= 0", ph)
			}
			v += kv
		}
		fmt.Fprintf(&b, "%"+format, v)
	}
}
