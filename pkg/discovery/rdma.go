package discovery

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
)

// scanRDMA reads /sys/class/infiniband, maps each device to its PCI function
// (or none, for rxe/siw), its netdev and its character devices.
func (s *Scanner) scanRDMA(inv *Inventory, w *warnings) {
	links, escaped, err := s.sys.ReadLinks("class/infiniband")
	if err != nil {
		return // no RDMA subsystem
	}
	for _, e := range escaped {
		w.add(pathOf(e), e)
	}
	nics := make(map[string]*NIC, len(inv.NICs))
	for _, n := range inv.NICs {
		nics[n.BDF] = n
	}
	verbs := s.charDevs("class/infiniband_verbs", w)
	mads := s.charDevs("class/infiniband_mad", w)

	names := make([]string, 0, len(links))
	for n := range links {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		real := links[name]
		r := &RDMADevice{Name: name}
		// ".../0000:18:00.0/infiniband/mlx5_0": the element before
		// "infiniband" is the PCI function. Virtual devices live in
		// devices/virtual/infiniband.
		parent := path.Base(path.Dir(path.Dir(real)))
		if path.Base(path.Dir(real)) != "infiniband" {
			w.add(s.full("class/infiniband/"+name), fmt.Errorf("unexpected location %s", real))
			r.Partial = true
		} else if nic := nics[parent]; nic != nil {
			r.PCI = parent
		}
		s.readRDMA(r, real, w)
		if r.Netdev == "" && r.PCI != "" {
			// IPoIB: the netdev of the same PCI function.
			if nic := nics[r.PCI]; len(nic.Netdevs) == 1 {
				r.Netdev = nic.Netdevs[0].Name
			}
		}
		if r.Netdev == "" && r.PCI == "" {
			if p, err := s.sys.ReadString(real + "/parent"); err == nil {
				r.Netdev = p // rxe: the netdev it is layered on
			}
		}
		for _, v := range verbs[name] {
			r.CharDevs = append(r.CharDevs, s.devPath(v, w, r))
		}
		for _, v := range mads[name] {
			r.CharDevs = append(r.CharDevs, s.devPath(v, w, r))
		}
		if len(verbs[name]) == 0 {
			w.add(s.full("class/infiniband_verbs"), fmt.Errorf("no uverbs device for %s", name))
			r.Partial = true
		}
		inv.RDMA = append(inv.RDMA, r)
	}
	if s.dev != nil && len(inv.RDMA) > 0 {
		if s.dev.Exists("infiniband/rdma_cm") {
			inv.RDMACM = "/dev/infiniband/rdma_cm"
		} else {
			w.add(path.Join(s.dev.Root(), "infiniband/rdma_cm"), errors.New("missing"))
		}
	}
}

func (s *Scanner) readRDMA(r *RDMADevice, real string, w *warnings) {
	str := func(attr string) string {
		v, err := s.sys.ReadString(real + "/" + attr)
		if err != nil {
			w.add(s.full(real+"/"+attr), err)
			r.Partial = true
		}
		return v
	}
	r.NodeType = str("node_type")
	r.NodeGUID = str("node_guid")
	r.SysImageGUID = str("sys_image_guid")
	ports, err := s.sys.ReadNames(real + "/ports")
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
		pd := real + "/ports/" + p
		port := RDMAPort{Port: num, LinkLayer: str("ports/" + p + "/link_layer")}
		port.State = stateWord(str("ports/" + p + "/state"))
		if v, err := s.sys.ReadString(pd + "/phys_state"); err == nil {
			port.PhysState = stateWord(v)
		}
		if v, err := s.sys.ReadString(pd + "/gids/0"); err == nil {
			port.GID0 = v
			if port.LinkLayer == "InfiniBand" && len(v) == 39 {
				port.PortGUID = v[20:]
			}
		}
		if r.Netdev == "" && port.LinkLayer == "Ethernet" {
			if v, err := s.sys.ReadString(pd + "/gid_attrs/ndevs/0"); err == nil {
				r.Netdev = v
			}
		}
		r.Ports = append(r.Ports, port)
	}
	slices.SortFunc(r.Ports, func(a, b RDMAPort) int { return a.Port - b.Port })
}

// stateWord turns "4: ACTIVE" into "ACTIVE".
func stateWord(v string) string {
	if _, after, ok := strings.Cut(v, ": "); ok {
		return after
	}
	return v
}

// charDevs maps RDMA device names to the entries of a class directory
// (uverbsN, umadN, issmN) whose ibdev names them, sorted by entry.
func (s *Scanner) charDevs(class string, w *warnings) map[string][]string {
	out := map[string][]string{}
	names, err := s.sys.ReadNames(class)
	if err != nil {
		return out
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
	for k := range out {
		slices.SortFunc(out[k], compareNumbered)
	}
	return out
}

// compareNumbered orders "uverbs2" before "uverbs10", and umad before issm.
func compareNumbered(a, b string) int {
	pa, na := splitNum(a)
	pb, nb := splitNum(b)
	if pa != pb {
		// umad then issm, as a port's pair is listed.
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

// devPath is the container path of a character device; with a devfs root,
// a missing node is a warning.
func (s *Scanner) devPath(name string, w *warnings, r *RDMADevice) string {
	p := "infiniband/" + name
	if s.dev != nil && !s.dev.Exists(p) {
		w.add(path.Join(s.dev.Root(), p), errors.New("character device missing"))
		r.Partial = true
	}
	return "/dev/" + p
}
