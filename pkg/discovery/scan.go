package discovery

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/railnet/railnet/pkg/sysfs"
)

// Scanner reads an inventory from a sysfs root and, optionally, a devfs root.
type Scanner struct {
	sys     *sysfs.FS
	dev     *sysfs.FS // nil: character devices are not checked
	workers int
	lean    bool
}

// Lean makes the scanner read of a VF (of a visible PF) only what pools,
// the device plugin and the DRA driver use: its netdev's name (not its
// MAC, MTU, state or type: its link type is its PF's) and its RDMA
// devices' names and character devices (not GUIDs, GIDs or port states,
// which no VF health depends on; its ports' link layers are its PF's). At 4,096 VFs that
// is about half of a scan's syscalls. railnetctl shows everything: it
// scans in full.
func (s *Scanner) Lean() *Scanner {
	s.lean = true
	return s
}

// NewScanner returns a scanner over sys (standing for /sys) and dev (standing
// for /dev; may be nil).
func NewScanner(sys, dev *sysfs.FS) *Scanner {
	return &Scanner{sys: sys, dev: dev, workers: runtime.GOMAXPROCS(0)}
}

// vfDeviceIDs are VF device IDs, so a VF passed into a VM (no physfn link,
// its PF on the hypervisor) is still recognised as a VF.
var vfDeviceIDs = map[string]bool{
	"0x15b3:0x1016": true, "0x15b3:0x1018": true, "0x15b3:0x101a": true, "0x15b3:0x101c": true,
	"0x15b3:0x101e": true, "0x15b3:0x1022": true, // ConnectX-4 Lx .. ConnectX-8 VFs
	"0x8086:0x154c": true, "0x8086:0x1889": true, "0x8086:0x10ed": true, "0x8086:0x1515": true, // iavf, ixgbevf
}

type warnings struct {
	mu   sync.Mutex
	list []Warning
}

func (w *warnings) add(p string, err error) {
	w.mu.Lock()
	w.list = append(w.list, Warning{Path: p, Msg: errMsg(err)})
	w.mu.Unlock()
}

func errMsg(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Op + ": " + pe.Err.Error()
	}
	return err.Error()
}

// Scan reads the whole inventory. It fails only when the sysfs root has no
// readable bus/pci/devices; everything else becomes a warning.
func (s *Scanner) Scan() (*Inventory, error) {
	// A lean scan reads the class links beside the functions, from the
	// start: the list of functions is read on one thread, the other CPUs
	// have nothing else to do meanwhile.
	var cl *classLinks
	if s.lean {
		cl = s.prefetch("net", "infiniband", "infiniband_verbs", "infiniband_mad")
		defer cl.wait() // none outlives the scan (its FS may be closed next)
	}
	links, escaped, err := s.sys.ReadLinks("bus/pci/devices")
	if err != nil {
		return nil, fmt.Errorf("list PCI devices: %w", err)
	}
	w := &warnings{}
	for _, e := range escaped {
		w.add(pathOf(e), e)
	}
	names := make([]string, 0, len(links))
	for n := range links {
		names = append(names, n)
	}
	slices.SortFunc(names, sysfs.CompareBDFStrings)

	type result struct {
		dev *PCIDevice
		nic *NIC
		gpu *GPU
	}
	// Reading a function is a few dozen syscalls; workers take the next
	// index from a counter rather than a channel, so no goroutine hand-off
	// sits between two functions.
	results := make([]result, len(names))
	sh := &shared{index: make(map[string]int, len(names)), pf: make([]pfAttrs, len(names))}
	for i, n := range names {
		sh.index[n] = i
		sh.pf[i].ready = make(chan struct{})
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(max(1, s.workers), len(names)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(names) {
					return
				}
				d, nic, gpu := s.readFunction(names[i], links[names[i]], w, i, sh)
				results[i] = result{d, nic, gpu}
				if nic != nil && nic.SRIOV != nil && !d.Partial {
					sh.pf[i].vendor, sh.pf[i].class, sh.pf[i].numa, sh.pf[i].vfDevice, sh.pf[i].ok = d.Vendor, d.Class, d.NUMA, nic.SRIOV.VFDevice, true
				}
				close(sh.pf[i].ready)
				// A PF's virtfn links, once its VFs may go on: in parallel
				// here rather than one PF after another in linkVFs.
				if !s.lean && nic != nil && nic.SRIOV != nil && nic.SRIOV.NumVFs > 0 {
					nic.vfs = s.readVFLinks(nic.Path)
				}
			}
		}()
	}
	wg.Wait()

	inv := &Inventory{}
	for _, r := range results {
		if r.dev == nil {
			continue
		}
		inv.PCI = append(inv.PCI, r.dev)
		if r.nic != nil {
			inv.NICs = append(inv.NICs, r.nic)
		}
		if r.gpu != nil {
			inv.GPUs = append(inv.GPUs, r.gpu)
		}
	}
	s.namesFromClass(inv, w, cl)
	s.linkVFs(inv, w)
	inheritPorts(inv)
	s.scanRDMA(inv, w, cl)
	for i, g := range inv.GPUs {
		g.Index = i
		g.Name = "GPU" + strconv.Itoa(i)
		if s.dev != nil {
			if node := "nvidia" + strconv.Itoa(i); s.dev.Exists(node) {
				g.DevNode = "/dev/" + node
			}
		}
	}
	inv.NUMANodes = s.numaNodes()
	slices.SortFunc(w.list, func(a, b Warning) int {
		if c := strings.Compare(a.Path, b.Path); c != 0 {
			return c
		}
		return strings.Compare(a.Msg, b.Msg)
	})
	// One fault can be met twice (a class link read for two purposes).
	inv.Warnings = slices.Compact(w.list)
	return inv, nil
}

func pathOf(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Path
	}
	return ""
}

// full names a root-relative path for a warning.
func (s *Scanner) full(rel string) string { return path.Join(s.sys.Root(), rel) }

// readFunction reads one PCI function. It returns a nil device only when
// the function's directory cannot be found at all.
// shared is what the scan's workers tell one another: each PF's
// attributes, which its VFs share, once the PF is read.
type shared struct {
	index map[string]int // BDF → position in the scan's order
	pf    []pfAttrs      // by position
}

type pfAttrs struct {
	ready                   chan struct{} // closed once the function is read
	ok                      bool          // a PF, read whole
	vendor, class, vfDevice string
	numa                    int
}

// fromPF fills a VF's vendor, device, class and NUMA node from its PF's
// (the kernel reports a VF's as its PF's vendor, class and node, and its
// device as the PF's sriov_vf_device): four files less per VF. Only a PF
// earlier in the scan's order is waited for (workers take functions in
// that order, so it is being read or done); otherwise false.
func (sh *shared) fromPF(i int, pfBDF string, d *PCIDevice) bool {
	j, ok := sh.index[pfBDF]
	if !ok || j >= i {
		return false
	}
	<-sh.pf[j].ready
	p := &sh.pf[j]
	if !p.ok || p.vfDevice == "" {
		return false
	}
	d.Vendor, d.Device, d.Class, d.NUMA = p.vendor, p.vfDevice, p.class, p.numa
	return true
}

func (s *Scanner) readFunction(bdf, real string, w *warnings, i int, sh *shared) (*PCIDevice, *NIC, *GPU) {
	link := "bus/pci/devices/" + bdf
	if !sysfs.IsBDF(bdf) {
		w.add(s.full(link), errors.New("not a PCI address; ignored"))
		return nil, nil, nil
	}
	dir, err := s.sys.OpenDir(real)
	if err != nil {
		w.add(s.full(link), fmt.Errorf("dangling device link: %w", err))
		return nil, nil, nil
	}
	defer dir.Close()
	d := &PCIDevice{BDF: bdf, Path: real, Ancestry: ancestry(real), NUMA: -1}
	if s.lean && sh != nil {
		if dev, nic := s.leanVF(d, dir, w, i, sh); dev != nil {
			return dev, nic, nil
		}
	}
	present, err := dir.Which(".", functionEntries)
	if err != nil {
		w.add(s.full(real), err)
		return nil, nil, nil
	}
	have := make(map[string]bool, len(functionEntries))
	for i, ok := range present {
		if ok {
			have[functionEntries[i]] = true
		}
	}
	if len(d.Ancestry) == 0 || d.Ancestry[len(d.Ancestry)-1] != bdf {
		w.add(s.full(link), fmt.Errorf("resolves to %s, which is not below a PCI host bridge", real))
		d.Partial = true
	}
	attr := func(name string, dst *string) {
		v, err := dir.ReadString(name)
		if err != nil {
			w.add(s.full(real+"/"+name), err)
			d.Partial = true
			return
		}
		v = strings.ToLower(v)
		if !isHexID(v) {
			w.add(s.full(real+"/"+name), fmt.Errorf("malformed value %q", v))
			d.Partial = true
			return
		}
		*dst = v
	}
	inherited := false
	var pf string
	var pfErr error
	if have["physfn"] {
		pf, pfErr = dir.LinkBase("physfn")
		if pfErr == nil && sh != nil {
			inherited = sh.fromPF(i, pf, d)
		}
	}
	if !inherited {
		attr("vendor", &d.Vendor)
		attr("device", &d.Device)
		attr("class", &d.Class)
		if n, err := dir.ReadInt("numa_node"); err == nil {
			d.NUMA = max(n, -1)
		} else {
			w.add(s.full(real+"/numa_node"), err)
			d.Partial = true
		}
	}
	if have["driver"] {
		if drv, err := dir.LinkBase("driver"); err == nil {
			d.Driver = drv
		} else {
			w.add(s.full(real+"/driver"), err)
		}
	}
	gpu, nic := isGPU(d), isNIC(d, have)
	// A VF's subsystem IDs are its PF's; at 1,000 VFs skipping them saves
	// 6,000 syscalls a scan.
	if (gpu || nic) && have["subsystem_vendor"] && !have["physfn"] {
		attr("subsystem_vendor", &d.SubsystemVendor)
		attr("subsystem_device", &d.SubsystemDevice)
	}
	switch {
	case gpu:
		g := &GPU{PCIDevice: *d}
		if have["local_cpulist"] {
			g.LocalCPUs, _ = dir.ReadString("local_cpulist")
		}
		return d, nil, g
	case nic:
		return d, s.readNIC(d, dir, have, pf, pfErr, w), nil
	}
	return d, nil, nil
}

// ancestry returns the elements of a device path from the host bridge
// ("pci0000:15") to the device. Anything before the host bridge (platform
// buses, VMBus on Hyper-V) is dropped. Nested host bridges (Intel VMD) stay
// in the list as elements.
func ancestry(real string) []string {
	elems := strings.Split(real, "/")
	for i, e := range elems {
		if isHostBridge(e) {
			return elems[i:]
		}
	}
	return nil
}

// isHostBridge matches "pci<domain>:<bus>" directory names.
func isHostBridge(e string) bool {
	rest, ok := strings.CutPrefix(e, "pci")
	if !ok {
		return false
	}
	dom, bus, ok := strings.Cut(rest, ":")
	return ok && len(dom) >= 4 && len(bus) == 2 && isHex(dom) && isHex(bus)
}

// isHexID matches "0x15b3", "0x020700": what PCI ID attributes hold.
func isHexID(s string) bool {
	h, ok := strings.CutPrefix(s, "0x")
	return ok && len(h) <= 8 && isHex(h)
}

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return s != ""
}

func isGPU(d *PCIDevice) bool {
	return d.Vendor == "0x10de" && (strings.HasPrefix(d.Class, "0x0300") || strings.HasPrefix(d.Class, "0x0302"))
}

// functionEntries are the entries of a function's directory the scan
// asks after (have[name]).
var functionEntries = []string{"physfn", "driver", "subsystem_vendor", "local_cpulist", "sriov_totalvfs", "sriov_offset",
	"sriov_vf_device", "net", "infiniband", "infiniband_verbs", "infiniband_mad"}

// leanVF reads a lean scan's VF without listing its directory (an open,
// two getdents and a close less per VF): a physfn link makes it a VF; its
// vendor, device, class and NUMA node are its PF's (fromPF); a network
// controller's (class 0x02) netdev and RDMA names come from the class links
// after the scan whether it has any or not, so the listing would only say
// whether it has a driver, which its readlink says too. Anything else (no
// physfn, a PF not read, another class: an NVMe or GPU VF) returns nil and
// is read in full.
func (s *Scanner) leanVF(d *PCIDevice, dir *sysfs.Dir, w *warnings, i int, sh *shared) (*PCIDevice, *NIC) {
	pf, err := dir.LinkBase("physfn")
	if err != nil || !sh.fromPF(i, pf, d) || !strings.HasPrefix(d.Class, "0x02") {
		return nil, nil
	}
	if len(d.Ancestry) == 0 || d.Ancestry[len(d.Ancestry)-1] != d.BDF {
		return nil, nil // the full path says what is wrong
	}
	switch drv, err := dir.LinkBase("driver"); {
	case err == nil:
		d.Driver = drv
	case !errors.Is(err, fs.ErrNotExist):
		w.add(s.full(d.Path+"/driver"), err)
	}
	return d, s.readNIC(d, dir, leanVFHas, pf, nil, w)
}

// leanVFHas is what readNIC is told a lean VF's directory holds (it only
// reads it): names from the class links, if any.
var leanVFHas = map[string]bool{"physfn": true, "net": true, "infiniband": true}

// isNIC: class 0x02 (network controller), or any function with a netdev or
// an RDMA device. Bridges never are, even with a NIC vendor's ID (the PCIe
// switch inside a ConnectX-7 or BlueField).
func isNIC(d *PCIDevice, have map[string]bool) bool {
	if strings.HasPrefix(d.Class, "0x06") {
		return false
	}
	return strings.HasPrefix(d.Class, "0x02") || have["net"] || have["infiniband"]
}

func (s *Scanner) readNIC(d *PCIDevice, dir *sysfs.Dir, have map[string]bool, pf string, pfErr error, w *warnings) *NIC {
	n := &NIC{PCIDevice: *d, Kind: KindPF, VFIndex: -1}
	real := d.Path
	if have["sriov_totalvfs"] {
		sr := &SRIOV{}
		n.SRIOV = sr
		intAttr := func(name string, dst *int) {
			v, err := dir.ReadInt(name)
			if err != nil {
				w.add(s.full(real+"/"+name), err)
				n.Partial = true
				return
			}
			*dst = v
		}
		intAttr("sriov_totalvfs", &sr.TotalVFs)
		intAttr("sriov_numvfs", &sr.NumVFs)
		if have["sriov_offset"] {
			intAttr("sriov_offset", &sr.Offset)
			intAttr("sriov_stride", &sr.Stride)
		}
		if have["sriov_vf_device"] {
			if v, err := dir.ReadString("sriov_vf_device"); err == nil {
				// The kernel writes "%x" today; a proposed change writes "0x%04x".
				v = strings.TrimPrefix(strings.ToLower(v), "0x")
				sr.VFDevice = fmt.Sprintf("0x%04s", v)
			}
		}
	}
	lean := s.lean && have["physfn"]
	if have["physfn"] {
		n.Kind = KindVF
		if pfErr != nil {
			w.add(s.full(real+"/physfn"), pfErr)
			n.Partial = true
		} else {
			n.PF = pf
			// Visibility is settled by linkVFs, which knows every function.
		}
	} else if vfDeviceIDs[d.Vendor+":"+d.Device] && n.SRIOV == nil {
		// A VF passed through to a VM: no physfn, its PF lives on the host.
		n.Kind = KindVF
	}
	// A lean VF's netdev and RDMA names come from the class links after
	// the scan (namesFromClass): a readlink each, not a directory listing
	// (four syscalls) each.
	n.classNet, n.classRDMA = lean && have["net"], lean && have["infiniband"]
	if have["net"] && !lean {
		names, err := dir.ReadNames("net")
		if err != nil {
			w.add(s.full(real+"/net"), err)
			n.Partial = true
		}
		for _, name := range names {
			n.Netdevs = append(n.Netdevs, s.readNetdev(dir, real, "net/"+name, name, n.Kind == KindPF, w))
		}
	}
	for _, nd := range n.Netdevs {
		switch nd.Type {
		case 1:
			n.LinkType = LinkEthernet
		case 32:
			n.LinkType = LinkInfiniBand
		}
	}
	if have["infiniband"] && !lean {
		names, err := dir.ReadNames("infiniband")
		if err != nil {
			w.add(s.full(real+"/infiniband"), err)
			n.Partial = true
		}
		s.addRDMA(n, dir, have, names, false, w)
	}
	return n
}

// addRDMA gives n its RDMA devices, names. Lean (a VF's): ports are its
// PF's, and one device's character devices come from the class links
// after the scan (3 readlinks, not 4 directory reads).
func (s *Scanner) addRDMA(n *NIC, dir *sysfs.Dir, have map[string]bool, names []string, lean bool, w *warnings) {
	real := n.Path
	n.RDMA = names
	classChars := lean && len(names) == 1
	var chars map[string][]string
	if !classChars {
		chars = s.functionCharDevs(dir, real, have, names, w)
	}
	for _, name := range names {
		r := &RDMADevice{Name: name, PCI: n.BDF}
		if lean {
			n.leanPorts = true
		} else {
			s.readRDMA(r, dir, real, "infiniband/"+name, w)
		}
		if r.Netdev == "" && len(n.Netdevs) == 1 {
			r.Netdev = n.Netdevs[0].Name // IPoIB: the netdev of the same function
		}
		r.CharDevs = chars[name]
		r.classChars = classChars
		n.rdma = append(n.rdma, r)
	}
}

// classLinks are class directories' links, read in the background.
type classLinks struct {
	m map[string]*classRead
}

type classRead struct {
	done    chan struct{}
	links   map[string]string
	escaped []error
	err     error
	// A class only byFunction reads is kept in its form, not as links: a
	// 4,096-VF scan held 16k link targets (~2 MB) it never read again.
	byFn map[string][]string
	bad  []pathErr
}

type pathErr struct {
	path string
	err  error
}

// grouped are the classes the scan reads only through byFunction.
var grouped = map[string]bool{"net": true, "infiniband_verbs": true, "infiniband_mad": true}

// prefetch starts reading class/<class>/* links for each class.
func (s *Scanner) prefetch(classes ...string) *classLinks {
	cl := &classLinks{m: make(map[string]*classRead, len(classes))}
	for _, c := range classes {
		r := &classRead{done: make(chan struct{})}
		cl.m[c] = r
		go func() {
			defer close(r.done)
			r.links, r.escaped, r.err = s.sys.ReadLinks("class/" + c)
			if r.err == nil && grouped[c] {
				r.byFn, r.bad = s.groupByFunction(c, r.links)
				r.links = nil
			}
		}()
	}
	return cl
}

// get is ReadLinksOf(class/<class>, want): the prefetched links if cl has
// them (every one: callers skip what they do not want).
func (cl *classLinks) get(s *Scanner, class string, want func(name string) bool) (map[string]string, []error, error) {
	if r := cl.read(class); r != nil && r.byFn == nil {
		return r.links, r.escaped, r.err
	}
	return s.sys.ReadLinksOf("class/"+class, want)
}

// read waits for a class's prefetch; nil if there is none.
func (cl *classLinks) read(class string) *classRead {
	if cl == nil || cl.m[class] == nil {
		return nil
	}
	r := cl.m[class]
	<-r.done
	return r
}

// wait lets every background read finish (a scan leaves none behind).
func (cl *classLinks) wait() {
	if cl == nil {
		return
	}
	for _, r := range cl.m {
		<-r.done
	}
}

// byFunction maps PCI functions to the names in class/<class> whose links
// lead below them (…/<BDF>/<class>/<name>; a virtual device's parent is
// "virtual"), each function's names sorted.
func (s *Scanner) byFunction(cl *classLinks, class string, w *warnings) (map[string][]string, error) {
	out, bad, escaped := map[string][]string(nil), []pathErr(nil), []error(nil)
	if r := cl.read(class); r != nil && r.byFn != nil {
		out, bad, escaped = r.byFn, r.bad, r.escaped
	} else {
		links, esc, err := cl.get(s, class, nil)
		if err != nil {
			return nil, err
		}
		out, bad = s.groupByFunction(class, links)
		escaped = esc
	}
	for _, e := range escaped {
		w.add(pathOf(e), e)
	}
	for _, b := range bad {
		w.add(b.path, b.err)
	}
	return out, nil
}

// groupByFunction is byFunction's map of a class's links, and the links
// that lead elsewhere. Its keys are copies: a name's target (~100 bytes)
// is not kept for the function's BDF in it.
func (s *Scanner) groupByFunction(class string, links map[string]string) (map[string][]string, []pathErr) {
	out := map[string][]string{}
	var bad []pathErr
	for name, t := range links {
		if path.Base(path.Dir(t)) != class {
			bad = append(bad, pathErr{s.full("class/" + class + "/" + name), fmt.Errorf("unexpected location %s", t)})
			continue
		}
		fn := path.Base(path.Dir(path.Dir(t)))
		if names, ok := out[fn]; ok {
			out[fn] = append(names, name)
		} else {
			out[strings.Clone(fn)] = []string{name}
		}
	}
	for _, names := range out {
		slices.Sort(names)
	}
	return out, bad
}

// namesFromClass gives lean VFs their netdev and RDMA device names from
// class/net and class/infiniband: each link names its function
// (…/<BDF>/net/<name>).
func (s *Scanner) namesFromClass(inv *Inventory, w *warnings, cl *classLinks) {
	var net, ib bool
	for _, n := range inv.NICs {
		net, ib = net || n.classNet, ib || n.classRDMA
	}
	if net {
		nets, err := s.byFunction(cl, "net", w)
		if err != nil {
			w.add(s.full("class/net"), err)
		}
		for _, n := range inv.NICs {
			if n.classNet {
				for _, name := range nets[n.BDF] {
					n.Netdevs = append(n.Netdevs, Netdev{Name: name})
				}
			}
		}
	}
	if !ib {
		return
	}
	ibs, err := s.byFunction(cl, "infiniband", w)
	if err != nil {
		w.add(s.full("class/infiniband"), err)
	}
	for _, n := range inv.NICs {
		if !n.classRDMA {
			continue
		}
		names := ibs[n.BDF]
		var dir *sysfs.Dir
		var have map[string]bool
		if len(names) > 1 { // their character devices: from the function's directory
			d, err := s.sys.OpenDir(n.Path)
			if err != nil {
				w.add(s.full(n.Path), err)
				n.Partial = true
				continue
			}
			dir, have = d, map[string]bool{}
			if present, err := d.Which(".", functionEntries); err == nil {
				for i, ok := range present {
					have[functionEntries[i]] = ok
				}
			}
		}
		s.addRDMA(n, dir, have, names, true, w)
		if dir != nil {
			dir.Close()
		}
	}
}

// functionCharDevs maps the function's RDMA devices to the uverbsN, umadN
// and issmN entries below it. With one RDMA device on the function (the
// rule for mlx5, irdma, bnxt_re) every entry is its own, and the ibdev
// files need not be read.
func (s *Scanner) functionCharDevs(dir *sysfs.Dir, real string, have map[string]bool, rdma []string, w *warnings) map[string][]string {
	out := map[string][]string{}
	for _, class := range []string{"infiniband_verbs", "infiniband_mad"} {
		if !have[class] {
			continue
		}
		names, err := dir.ReadNames(class)
		if err != nil {
			w.add(s.full(real+"/"+class), err)
			continue
		}
		for _, c := range names {
			ib := ""
			if len(rdma) == 1 {
				ib = rdma[0]
			} else if ib, err = dir.ReadString(class + "/" + c + "/ibdev"); err != nil {
				w.add(s.full(real+"/"+class+"/"+c+"/ibdev"), err)
				continue
			}
			out[ib] = append(out[ib], c)
		}
	}
	return out
}

// readNetdev reads a function's netdev. A VF's ifindex and speed are not
// read: its ifindex changes whenever it moves between namespaces, and its
// speed is its PF's; at 1,000 VFs a node saves 6,000 syscalls a scan.
func (s *Scanner) readNetdev(dir *sysfs.Dir, real, sub, name string, pf bool, w *warnings) Netdev {
	nd := Netdev{Name: name}
	str := func(attr string) string {
		v, err := dir.ReadString(sub + "/" + attr)
		if err != nil {
			w.add(s.full(real+"/"+sub+"/"+attr), err)
		}
		return v
	}
	num := func(attr string) int {
		v, err := dir.ReadInt(sub + "/" + attr)
		if err != nil {
			w.add(s.full(real+"/"+sub+"/"+attr), err)
		}
		return v
	}
	nd.MAC = str("address")
	nd.MTU = num("mtu")
	nd.OperState = str("operstate")
	nd.Type = num("type")
	if !pf {
		return nd
	}
	nd.IfIndex = num("ifindex")
	// Reading speed of a down link fails with EINVAL on real hardware.
	if v, err := dir.ReadInt(sub + "/speed"); err == nil {
		nd.SpeedMbps = v
	} else {
		nd.SpeedMbps = -1
	}
	return nd
}

// vfsByAddress: a lean scan takes a PF's VFs from SR-IOV's address
// arithmetic (VF i's routing ID is the PF's + sriov_offset + i ×
// sriov_stride, in the PF's domain: the kernel's pci_iov_virtfn_bus and
// _devfn) instead of reading its virtfn links, a readlink per VF, when
// every VF so found is present and its physfn names this PF. Otherwise
// false, and the links are read (with their warnings).
func vfsByAddress(pf *NIC, byBDF map[string]*NIC) bool {
	sr := pf.SRIOV
	b, err := sysfs.ParseBDF(pf.BDF)
	if err != nil || sr.Offset < 1 || sr.Stride < 1 {
		return false
	}
	vfs := make([]string, sr.NumVFs)
	nics := make([]*NIC, sr.NumVFs)
	for i := range vfs {
		rid := int(b.RID()) + sr.Offset + i*sr.Stride
		if rid > 0xffff {
			return false
		}
		bdf := sysfs.FromRID(b.Domain, uint16(rid)).String()
		vf := byBDF[bdf]
		if vf == nil || vf.Kind != KindVF || vf.PF != pf.BDF {
			return false
		}
		vfs[i], nics[i] = bdf, vf
	}
	for i, vf := range nics {
		vf.VFIndex, vf.PFVisible = i, true
	}
	sr.VFs = vfs
	return true
}

type vfLinks struct {
	links   map[string]string
	escaped []error
	err     error
}

func (s *Scanner) readVFLinks(pfPath string) *vfLinks {
	l := &vfLinks{}
	l.links, l.escaped, l.err = s.sys.ReadLinksOf(pfPath, func(name string) bool { return strings.HasPrefix(name, "virtfn") })
	return l
}

// linkVFs fills each VF's index from its PF's virtfn<n> links, and each PF's
// VF list.
func (s *Scanner) linkVFs(inv *Inventory, w *warnings) {
	byBDF := make(map[string]*NIC, len(inv.NICs))
	for _, n := range inv.NICs {
		byBDF[n.BDF] = n
	}
	for _, pf := range inv.NICs {
		if pf.SRIOV == nil || pf.SRIOV.NumVFs == 0 {
			continue
		}
		if s.lean && vfsByAddress(pf, byBDF) {
			continue
		}
		l := pf.vfs
		if l == nil {
			l = s.readVFLinks(pf.Path)
		}
		pf.vfs = nil
		links := l.links
		if l.err != nil {
			w.add(s.full(pf.Path), l.err)
			continue
		}
		for _, e := range l.escaped {
			w.add(pathOf(e), e)
		}
		vfs := make([]string, pf.SRIOV.NumVFs)
		for name, target := range links {
			idx, ok := strings.CutPrefix(name, "virtfn")
			if !ok {
				continue
			}
			i, err := strconv.Atoi(idx)
			if err != nil || i < 0 || i >= len(vfs) {
				w.add(s.full(pf.Path+"/"+name), fmt.Errorf("beyond sriov_numvfs %d", pf.SRIOV.NumVFs))
				continue
			}
			bdf := path.Base(target)
			vfs[i] = bdf
			vf := byBDF[bdf]
			if vf == nil {
				w.add(s.full(pf.Path+"/"+name), fmt.Errorf("VF %s is not present", bdf))
				continue
			}
			vf.Kind, vf.VFIndex, vf.PF, vf.PFVisible = KindVF, i, pf.BDF, true
		}
		for i, v := range vfs {
			if v == "" {
				w.add(s.full(pf.Path+"/virtfn"+strconv.Itoa(i)), errors.New("missing although sriov_numvfs counts it"))
				pf.Partial = true
			}
		}
		pf.SRIOV.VFs = vfs
	}
	for _, n := range inv.NICs {
		if n.Kind == KindVF && n.PF != "" && !n.PFVisible {
			if pf := byBDF[n.PF]; pf == nil {
				w.add(s.full(n.Path+"/physfn"), fmt.Errorf("PF %s is not present", n.PF))
			} else {
				// physfn names a PF whose virtfn links do not name this VF.
				n.PFVisible = true
				w.add(s.full(n.Path+"/physfn"), fmt.Errorf("PF %s has no virtfn link to this VF", n.PF))
			}
		}
		if n.Kind == KindVF && n.LinkType == "" && n.PFVisible {
			if pf := byBDF[n.PF]; pf != nil {
				n.LinkType = pf.LinkType // a VF without a netdev shares its PF's link layer
			}
		}
	}
}

func (s *Scanner) numaNodes() []int {
	names, err := s.sys.ReadNames("devices/system/node")
	if err != nil {
		return nil // a kernel without NUMA support has no such directory
	}
	var out []int
	for _, n := range names {
		if id, ok := strings.CutPrefix(n, "node"); ok {
			if v, err := strconv.Atoi(id); err == nil {
				out = append(out, v)
			}
		}
	}
	slices.Sort(out)
	return out
}
