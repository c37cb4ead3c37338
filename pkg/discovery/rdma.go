package discovery

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/railnet/railnet/pkg/sysfs"
)

// scanRDMA collects the RDMA devices read with their PCI functions, adds
// the virtual ones of /sys/class/infiniband (rxe, siw), and checks their
// character devices in devfs.
func (s *Scanner) scanRDMA(inv *Inventory, w *warnings, cl *classLinks) {
	for _, n := range inv.NICs {
		inv.RDMA = append(inv.RDMA, n.rdma...)
	}
	known := make(map[string]bool, len(inv.RDMA))
	for _, r := range inv.RDMA {
		known[r.Name] = true
	}
	// The class's other devices (rxe, siw: no PCI function of their own);
	// the PCI functions' are known already and their links not read (a
	// lean scan has read them all beside the functions).
	links, escaped, err := cl.get(s, "infiniband", func(name string) bool { return !known[name] })
	if err == nil {
		for _, e := range escaped {
			w.add(pathOf(e), e)
		}
		var classChars map[string][]string
		for name, real := range links {
			if known[name] {
				continue
			}
			r := &RDMADevice{Name: name}
			if path.Base(path.Dir(real)) != "infiniband" {
				w.add(s.full("class/infiniband/"+name), fmt.Errorf("unexpected location %s", real))
				r.Partial = true
			}
			s.readRDMA(r, nil, "", real, w)
			if p, err := s.sys.ReadString(real + "/parent"); err == nil && r.Netdev == "" {
				r.Netdev = p // rxe: the netdev it is layered on
			}
			if classChars == nil {
				classChars = s.classCharDevs(w)
			}
			r.CharDevs = classChars[name]
			inv.RDMA = append(inv.RDMA, r)
		}
	}
	if slices.ContainsFunc(inv.RDMA, func(r *RDMADevice) bool { return r.classChars }) {
		byFn := s.charDevsByFunction(w, cl)
		for _, r := range inv.RDMA {
			if r.classChars {
				r.CharDevs = byFn[r.PCI]
			}
		}
	}
	slices.SortFunc(inv.RDMA, func(a, b *RDMADevice) int { return NaturalCompare(a.Name, b.Name) })
	if len(inv.RDMA) == 0 {
		return
	}
	var devNames map[string]bool // entries of <devfs>/infiniband
	if s.dev != nil {
		devNames = map[string]bool{}
		names, _ := s.dev.ReadNames("infiniband")
		for _, n := range names {
			devNames[n] = true
		}
		if devNames["rdma_cm"] {
			inv.RDMACM = "/dev/infiniband/rdma_cm"
		} else {
			w.add(path.Join(s.dev.Root(), "infiniband/rdma_cm"), errors.New("missing"))
		}
	}
	for _, r := range inv.RDMA {
		slices.SortFunc(r.CharDevs, compareNumbered)
		if !slices.ContainsFunc(r.CharDevs, func(c string) bool { return strings.HasPrefix(c, "uverbs") }) {
			w.add(s.full("class/infiniband_verbs"), fmt.Errorf("no uverbs device for %s", r.Name))
			r.Partial = true
		}
		for i, c := range r.CharDevs {
			if devNames != nil && !devNames[c] {
				w.add(path.Join(s.dev.Root(), "infiniband", c), errors.New("character device missing"))
				r.Partial = true
			}
			r.CharDevs[i] = "/dev/infiniband/" + c
		}
	}
}

// readRDMA reads an RDMA device's attributes from sub, a path below parent
// (an open PCI function directory), or below the root when parent is nil.
func (s *Scanner) readRDMA(r *RDMADevice, parent *sysfs.Dir, parentReal, sub string, w *warnings) {
	var dir *sysfs.Dir
	var err error
	real := path.Join(parentReal, sub)
	if parent != nil {
		dir, err = parent.OpenDir(sub)
	} else {
		dir, err = s.sys.OpenDir(sub)
	}
	if err != nil {
		w.add(s.full(real), err)
		r.Partial = true
		return
	}
	defer dir.Close()
	str := func(attr string) string {
		v, err := dir.ReadString(attr)
		if err != nil {
			w.add(s.full(real+"/"+attr), err)
			r.Partial = true
		}
		return v
	}
	r.NodeGUID = str("node_guid")
	ports, err := dir.ReadNames("ports")
	if err != nil {
		w.add(s.full(real+"/ports"), err)
		r.Partial = true
		return
	}
	for _, p := range ports {
		num, err := strconv.Atoi(p)
		if err != nil {
			continue
		}
		pd := "ports/" + p
		port := RDMAPort{Port: num, LinkLayer: str(pd + "/link_layer")}
		port.State = stateWord(str(pd + "/state"))
		if v, err := dir.ReadString(pd + "/phys_state"); err == nil {
			port.PhysState = stateWord(v)
		}
		if v, err := dir.ReadString(pd + "/gids/0"); err == nil {
			port.GID0 = v
			if port.LinkLayer == "InfiniBand" && len(v) == 39 {
				port.PortGUID = v[20:]
			}
		}
		if r.Netdev == "" && port.LinkLayer == "Ethernet" {
			if v, err := dir.ReadString(pd + "/gid_attrs/ndevs/0"); err == nil {
				r.Netdev = v
			}
		}
		r.Ports = append(r.Ports, port)
	}
	slices.SortFunc(r.Ports, func(a, b RDMAPort) int { return a.Port - b.Port })
}

// inheritPorts gives the RDMA devices of VFs a lean scan read without
// their ports the port numbers and link layers of their PF's RDMA device:
// a VF's port runs over its PF's link. A VF whose PF is not visible, or
// has no RDMA device, keeps none.
func inheritPorts(inv *Inventory) {
	byBDF := make(map[string]*NIC, len(inv.NICs))
	for _, n := range inv.NICs {
		byBDF[n.BDF] = n
	}
	for _, n := range inv.NICs {
		if !n.leanPorts || !n.PFVisible {
			continue
		}
		pf := byBDF[n.PF]
		if pf == nil || len(pf.rdma) == 0 {
			continue
		}
		for _, r := range n.rdma {
			for _, p := range pf.rdma[0].Ports {
				r.Ports = append(r.Ports, RDMAPort{Port: p.Port, LinkLayer: p.LinkLayer})
			}
		}
	}
}

// stateWord turns "4: ACTIVE" into "ACTIVE".
func stateWord(v string) string {
	if _, after, ok := strings.Cut(v, ": "); ok {
		return after
	}
	return v
}

// classCharDevs maps RDMA device names to the uverbsN/umadN/issmN entries of
// the class directories whose ibdev names them. Only devices without a PCI
// parent (rxe, siw) need it; PCI devices' entries are read below the function.
func (s *Scanner) classCharDevs(w *warnings) map[string][]string {
	out := map[string][]string{}
	for _, class := range []string{"class/infiniband_verbs", "class/infiniband_mad"} {
		names, err := s.sys.ReadNames(class)
		if err != nil {
			continue
		}
		for _, n := range names {
			if n == "abi_version" {
				continue
			}
			ib, err := s.sys.ReadString(class + "/" + n + "/ibdev")
			if err != nil {
				w.add(s.full(class+"/"+n+"/ibdev"), err)
				continue
			}
			out[ib] = append(out[ib], n)
		}
	}
	return out
}

// charDevsByFunction maps PCI functions to the character devices whose
// class links name them (…/<BDF>/infiniband_verbs/uverbs3): one readlink
// per device node.
func (s *Scanner) charDevsByFunction(w *warnings, cl *classLinks) map[string][]string {
	out := map[string][]string{}
	for _, class := range []string{"infiniband_verbs", "infiniband_mad"} {
		m, err := s.byFunction(cl, class, w)
		if err != nil {
			continue // no such class: "no uverbs device" says it below
		}
		for fn, names := range m {
			out[fn] = append(out[fn], names...)
		}
	}
	return out
}

// NaturalCompare orders names with a numeric suffix by prefix, then number:
// mlx5_2 before mlx5_10.
func NaturalCompare(a, b string) int {
	pa, na := splitNum(a)
	pb, nb := splitNum(b)
	if c := strings.Compare(pa, pb); c != 0 {
		return c
	}
	if na != nb {
		return na - nb
	}
	return strings.Compare(a, b)
}

// compareNumbered orders character devices uverbs, umad, issm (reverse
// alphabetical prefixes), each by number: "uverbs2" before "uverbs10".
func compareNumbered(a, b string) int {
	pa, na := splitNum(a)
	pb, nb := splitNum(b)
	if pa != pb {
		return -strings.Compare(pa, pb)
	}
	return na - nb
}

func splitNum(s string) (string, int) {
	i := len(s)
	for i > 0 && s[i-1] >= '0' && s[i-1] <= '9' {
		i--
	}
	n, _ := strconv.Atoi(s[i:])
	return s[:i], n
}
