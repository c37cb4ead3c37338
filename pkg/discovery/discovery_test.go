package discovery_test

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/railnet/railnet/pkg/discovery"
	"github.com/railnet/railnet/pkg/fakesys"
	"github.com/railnet/railnet/pkg/fakesys/fakesystest"
	"github.com/railnet/railnet/pkg/sysfs"
	"github.com/railnet/railnet/pkg/topology"
)

func scanTree(tb testing.TB, tree fakesys.Tree) *discovery.Inventory {
	tb.Helper()
	return fakesystest.Scan(tb, tree, false)
}

func TestFixtureInventories(t *testing.T) {
	for _, name := range fakesystest.Fixtures(t) {
		t.Run(name, func(t *testing.T) {
			m, tree := fakesystest.Build(t, name)
			inv := scanTree(t, tree)
			if len(inv.Warnings) != 0 {
				t.Fatalf("warnings: %v", inv.Warnings)
			}
			s := inv.Summary()
			got := fakesys.ExpectedInventory{GPUs: s.GPUs, PFs: s.PFs, VFs: s.VFs, Netdevs: s.Netdevs, RDMADevices: s.RDMADevices}
			if diff := cmp.Diff(m.Expected.Inventory, got); diff != "" {
				t.Errorf("counts (-want +got):\n%s", diff)
			}
			// Every function of the description is found with its fields.
			fns, err := m.Functions()
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range fns {
				if f.Node.Type != "nic" {
					continue
				}
				n := inv.NIC(f.BDF)
				if n == nil {
					t.Errorf("%s not found", f.BDF)
					continue
				}
				if n.NUMA != f.NUMA || n.Driver != f.Driver || n.Device != f.Device {
					t.Errorf("%s: numa %d driver %q device %s; want %d %q %s", f.BDF, n.NUMA, n.Driver, n.Device, f.NUMA, f.Driver, f.Device)
				}
				wantKind := discovery.KindPF
				if f.IsVF {
					wantKind = discovery.KindVF
					if n.PF != f.PF || n.VFIndex != f.VFIndex || !n.PFVisible {
						t.Errorf("%s: PF %s index %d visible %v; want %s %d", f.BDF, n.PF, n.VFIndex, n.PFVisible, f.PF, f.VFIndex)
					}
				}
				if n.Kind != wantKind {
					t.Errorf("%s: kind %s, want %s", f.BDF, n.Kind, wantKind)
				}
				wantLink := discovery.LinkEthernet
				if f.Node.LinkLayer == "infiniband" {
					wantLink = discovery.LinkInfiniBand
				}
				if n.LinkType != wantLink {
					t.Errorf("%s: link %q, want %q", f.BDF, n.LinkType, wantLink)
				}
				if f.Netdev != "" {
					// A VF's ifindex is not read (it changes with every namespace move).
					wantIfIndex := f.IfIndex
					if f.IsVF {
						wantIfIndex = 0
					}
					if len(n.Netdevs) != 1 || n.Netdevs[0].Name != f.Netdev || n.Netdevs[0].MTU != f.MTU ||
						n.Netdevs[0].OperState != f.Oper || n.Netdevs[0].IfIndex != wantIfIndex {
						t.Errorf("%s: netdevs %+v, want %s mtu %d %s ifindex %d", f.BDF, n.Netdevs, f.Netdev, f.MTU, f.Oper, f.IfIndex)
					} else if f.MAC != "" && n.Netdevs[0].MAC != f.MAC {
						t.Errorf("%s: mac %s, want %s", f.BDF, n.Netdevs[0].MAC, f.MAC)
					}
				} else if len(n.Netdevs) != 0 {
					t.Errorf("%s: netdevs %+v, want none", f.BDF, n.Netdevs)
				}
				if f.RDMA == "" {
					if len(n.RDMA) != 0 {
						t.Errorf("%s: rdma %v, want none", f.BDF, n.RDMA)
					}
					continue
				}
				r := inv.RDMADevice(f.RDMA)
				if r == nil || len(n.RDMA) != 1 || n.RDMA[0] != f.RDMA {
					t.Errorf("%s: rdma %v, want %s", f.BDF, n.RDMA, f.RDMA)
					continue
				}
				idx := func(p string) string { return "/dev/infiniband/" + p + itoa(f.RDMAIdx) }
				wantChars := []string{idx("uverbs"), idx("umad"), idx("issm")}
				if r.PCI != f.BDF || r.NodeGUID != f.NodeGUID || r.Netdev != f.Netdev || !cmp.Equal(r.CharDevs, wantChars) {
					t.Errorf("%s: rdma %+v; want pci %s guid %s netdev %s chars %v", f.RDMA, r, f.BDF, f.NodeGUID, f.Netdev, wantChars)
				}
				if wantActive := f.Oper == "up"; r.Active() != wantActive {
					t.Errorf("%s: active %v, want %v", f.RDMA, r.Active(), wantActive)
				}
				if f.Node.LinkLayer == "infiniband" && r.Ports[0].PortGUID != f.PortGUID {
					t.Errorf("%s: port GUID %s, want %s", f.RDMA, r.Ports[0].PortGUID, f.PortGUID)
				}
			}
			if len(inv.RDMA) > 0 && inv.RDMACM != "/dev/infiniband/rdma_cm" {
				t.Errorf("rdma_cm = %q", inv.RDMACM)
			}
			for i, g := range inv.GPUs {
				if g.Name != "GPU"+itoa(i) || g.DevNode != "/dev/nvidia"+itoa(i) {
					t.Errorf("GPU %d: %s %s", i, g.Name, g.DevNode)
				}
			}
		})
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// Others on the single-NIC host: the ASPEED VGA (0x030000, not NVIDIA) is
// no GPU, NVMe is ignored, the I350 has no SR-IOV files, E810 VFs have no RDMA.
func TestSingleNICDetails(t *testing.T) {
	_, tree := fakesystest.Build(t, "single-nic-ethernet")
	inv := scanTree(t, tree)
	if len(inv.GPUs) != 0 {
		t.Errorf("GPUs found on a host without NVIDIA GPUs: %+v", inv.GPUs)
	}
	for _, n := range inv.NICs {
		if n.Class == "0x010802" || n.Vendor == "0x1a03" {
			t.Errorf("%s (%s %s) taken for a NIC", n.BDF, n.Vendor, n.Class)
		}
		if n.Driver == "igb" && n.SRIOV != nil {
			t.Errorf("%s: I350 without SR-IOV files has SRIOV %+v", n.BDF, n.SRIOV)
		}
		if n.Driver == "iavf" && len(n.RDMA) != 0 {
			t.Errorf("%s: E810 VF has RDMA %v", n.BDF, n.RDMA)
		}
	}
	pf := inv.NIC("0000:41:00.0")
	if pf == nil || pf.SRIOV == nil || pf.SRIOV.TotalVFs != 64 || pf.SRIOV.NumVFs != 8 || pf.SRIOV.Offset != 2 ||
		pf.SRIOV.VFDevice != "0x101e" || len(pf.SRIOV.VFs) != 8 || pf.SRIOV.VFs[0] != "0000:41:00.2" || pf.SRIOV.VFs[7] != "0000:41:01.1" {
		t.Errorf("PF 41:00.0 = %+v / %+v", pf, pf.SRIOV)
	}
}

func TestNUMAUnknownKept(t *testing.T) {
	_, tree := fakesystest.Build(t, "mixed-ib-eth-gpu-noswitch")
	inv := scanTree(t, tree)
	if n := inv.NIC("0000:62:00.0"); n == nil || n.NUMA != -1 {
		t.Errorf("NIC on a host bridge without _PXM: %+v", n)
	}
	if g := inv.GPUs[2]; g.NUMA != -1 || g.BDF != "0000:61:00.0" {
		t.Errorf("GPU2 = %+v", g)
	}
}

// A tree with every way a real or copied sysfs can be broken still yields
// an inventory: the broken devices are partial, each with a warning that
// names the path, and the rest is complete.
func TestBrokenTree(t *testing.T) {
	_, tree := fakesystest.Build(t, "dgx-h100-like")
	sys := tree.Sys
	dev := func(bdf string) string {
		p, err := filepath.EvalSymlinks(filepath.Join(sys, "bus/pci/devices", bdf))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// 1. a missing attribute file
	must(os.Remove(filepath.Join(dev("0000:40:00.0"), "vendor")))
	// 2. an unreadable attribute (a directory where a file should be)
	must(os.Remove(filepath.Join(dev("0000:4f:00.0"), "numa_node")))
	must(os.Mkdir(filepath.Join(dev("0000:4f:00.0"), "numa_node"), 0o755))
	// 3. an attribute that links out of the root
	mtu := filepath.Join(dev("0000:9a:00.0"), "net/ibp154s0/mtu")
	must(os.Remove(mtu))
	must(os.Symlink("/etc/hostname", mtu))
	// 4. a dangling device link
	must(os.Symlink("../../../devices/pci0000:15/gone", filepath.Join(sys, "bus/pci/devices/0000:77:00.0")))
	// 5. a VF whose PF is gone (the PF's directory and links removed)
	pf := dev("0000:ce:00.0")
	must(os.Remove(filepath.Join(sys, "bus/pci/devices/0000:ce:00.0")))
	must(os.Remove(filepath.Join(sys, "class/net/ibp206s0")))
	must(os.Remove(filepath.Join(sys, "class/infiniband/mlx5_10")))
	must(os.RemoveAll(pf))
	// 6. a FIFO where an attribute should be: must not hang the scan
	fifo := filepath.Join(dev("0000:c0:00.0"), "device")
	must(os.Remove(fifo))
	must(mkfifo(fifo))
	// 7. a link in bus/pci/devices that leaves the root
	must(os.Symlink("../../../../outside", filepath.Join(sys, "bus/pci/devices/0000:78:00.0")))

	inv := scanTree(t, tree)
	warned := func(sub string) bool {
		for _, w := range inv.Warnings {
			if strings.Contains(w.Path, sub) {
				return true
			}
		}
		return false
	}
	for _, p := range []string{"0000:40:00.0/vendor", "0000:4f:00.0/numa_node", "ibp154s0/mtu", "0000:77:00.0", "0000:ce:00.1/physfn", "0000:c0:00.0/device", "0000:78:00.0"} {
		if !warned(p) {
			t.Errorf("no warning names %s; warnings:\n%v", p, inv.Warnings)
		}
	}
	for _, bdf := range []string{"0000:40:00.0", "0000:4f:00.0", "0000:c0:00.0"} {
		if n := inv.NIC(bdf); n == nil || !n.Partial {
			t.Errorf("%s: %+v, want a partial NIC", bdf, n)
		}
	}
	if n := inv.NIC("0000:4f:00.0"); n.NUMA != -1 {
		t.Errorf("unreadable numa_node gave %d, want -1", n.NUMA)
	}
	// The VFs of the vanished PF: still VFs, PF not visible, each its own matrix column.
	vf := inv.NIC("0000:ce:00.1")
	if vf == nil || vf.Kind != discovery.KindVF || vf.PFVisible || vf.PF != "0000:ce:00.0" {
		t.Fatalf("orphan VF = %+v", vf)
	}
	topo := topology.Build(inv)
	// It sits where its PF sat: PIX to GPU6.
	if name := topology.NICName(vf); topo.Matrix["GPU6"][name] != topology.PIX {
		t.Errorf("GPU6 -> orphan VF %s = %v, want PIX; columns %v", name, topo.Matrix["GPU6"][name], topo.NICs)
	}
	// Everything not broken is intact.
	if s := inv.Summary(); s.GPUs != 8 || s.PFs != 11 {
		t.Errorf("summary %+v, want 8 GPUs and 11 PFs", s)
	}
	if topo.Matrix["GPU0"]["mlx5_0"] != topology.PIX {
		t.Errorf("GPU0/mlx5_0 = %v", topo.Matrix["GPU0"]["mlx5_0"])
	}
}

func TestMissingRootIsAnError(t *testing.T) {
	sys, err := sysfs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	if _, err := discovery.NewScanner(sys, nil).Scan(); err == nil {
		t.Fatal("scan of an empty root succeeded")
	}
}

// TestLeanScanFindsWhatFullDoes: on every fixture the daemon's lean scan
// finds the same functions, NICs (kind, PF, netdev and RDMA names) and
// RDMA devices with the same character devices as the full scan, and no
// warning; what it leaves out is a VF's own netdev attributes and port
// details (its PF's stand in).
func TestLeanScanFindsWhatFullDoes(t *testing.T) {
	type nicView struct {
		BDF, PF, Kind    string
		Netdevs, RDMA    []string
		NUMA             int
		Vendor, Device   string
		Driver, LinkType string
		VFIndex          int
		PFVisible        bool
		VFs              []string // a PF's, by index
	}
	type rdmaView struct {
		Name, PCI string
		CharDevs  []string
	}
	view := func(inv *discovery.Inventory) (map[string]nicView, map[string]rdmaView, int) {
		nics, rdma := map[string]nicView{}, map[string]rdmaView{}
		for _, n := range inv.NICs {
			v := nicView{BDF: n.BDF, PF: n.PF, Kind: string(n.Kind), RDMA: n.RDMA, NUMA: n.NUMA, Vendor: n.Vendor, Device: n.Device,
				Driver: n.Driver, LinkType: string(n.LinkType), VFIndex: n.VFIndex, PFVisible: n.PFVisible}
			if n.SRIOV != nil {
				v.VFs = n.SRIOV.VFs
			}
			for _, nd := range n.Netdevs {
				v.Netdevs = append(v.Netdevs, nd.Name)
			}
			nics[n.BDF] = v
		}
		for _, r := range inv.RDMA {
			rdma[r.Name] = rdmaView{Name: r.Name, PCI: r.PCI, CharDevs: r.CharDevs}
		}
		return nics, rdma, len(inv.PCI)
	}
	for _, name := range fakesystest.Fixtures(t) {
		t.Run(name, func(t *testing.T) {
			_, tree := fakesystest.Build(t, name)
			full, lean := fakesystest.Scan(t, tree, false), fakesystest.Scan(t, tree, true)
			if len(lean.Warnings) != 0 {
				t.Fatalf("lean scan warnings: %v", lean.Warnings)
			}
			fn, fr, fp := view(full)
			ln, lr, lp := view(lean)
			if fp != lp {
				t.Errorf("%d PCI functions in full, %d lean", fp, lp)
			}
			if diff := cmp.Diff(fn, ln); diff != "" {
				t.Errorf("NICs (-full +lean):\n%s", diff)
			}
			if diff := cmp.Diff(fr, lr); diff != "" {
				t.Errorf("RDMA devices (-full +lean):\n%s", diff)
			}
			withChars := 0
			for _, r := range lr {
				if len(r.CharDevs) > 0 {
					withChars++
				}
			}
			if len(lr) > 0 && withChars == 0 {
				t.Errorf("no RDMA device has character devices")
			}
		})
	}
}

// A lean scan takes VFs from the PF's sriov_offset/stride; where that
// arithmetic does not meet the VFs present (a wrong offset, a VF gone),
// it reads the virtfn links as the full scan does: same VFs, same indexes,
// same warnings.
func TestLeanVFsFallBackToLinks(t *testing.T) {
	for _, tc := range []struct {
		name  string
		warn  string // in a warning of both scans
		spoil func(t *testing.T, sys, pf string, vfs []string)
	}{
		{"wrong offset", "", func(t *testing.T, sys, pf string, _ []string) {
			if err := os.WriteFile(filepath.Join(sys, "bus/pci/devices", pf, "sriov_offset"), []byte("1\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"VF gone", "is not present", func(t *testing.T, sys, _ string, vfs []string) {
			if err := os.Remove(filepath.Join(sys, "bus/pci/devices", vfs[1])); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, tree := fakesystest.Build(t, "vf-scale")
			inv := fakesystest.Scan(t, tree, true)
			var pf *discovery.NIC
			for _, n := range inv.NICs {
				if n.SRIOV != nil && n.SRIOV.NumVFs > 2 {
					pf = n
					break
				}
			}
			if pf == nil {
				t.Fatal("no PF with VFs")
			}
			tc.spoil(t, tree.Sys, pf.BDF, pf.SRIOV.VFs)
			full, lean := fakesystest.Scan(t, tree, false), fakesystest.Scan(t, tree, true)
			index := func(inv *discovery.Inventory) map[string]int {
				m := map[string]int{}
				for _, n := range inv.NICs {
					if n.Kind == discovery.KindVF {
						m[n.BDF+" of "+n.PF] = n.VFIndex
					}
				}
				return m
			}
			if diff := cmp.Diff(index(full), index(lean)); diff != "" {
				t.Errorf("VF indexes (-full +lean):\n%s", diff)
			}
			if diff := cmp.Diff(full.NIC(pf.BDF).SRIOV.VFs, lean.NIC(pf.BDF).SRIOV.VFs); diff != "" {
				t.Errorf("the PF's VFs (-full +lean):\n%s", diff)
			}
			if diff := cmp.Diff(full.Warnings, lean.Warnings); diff != "" {
				t.Errorf("warnings (-full +lean):\n%s", diff)
			}
			warned := slices.ContainsFunc(lean.Warnings, func(w discovery.Warning) bool { return tc.warn != "" && strings.Contains(w.Msg, tc.warn) })
			if warned != (tc.warn != "") || (tc.warn == "" && len(lean.Warnings) > 0) {
				t.Errorf("warnings %v, want one saying %q", lean.Warnings, tc.warn)
			}
		})
	}
}

// A lean VF is read without listing its directory: one without a driver,
// and one handed to vfio-pci (no netdev, no RDMA device left), read the
// same as the full scan reads them.
func TestLeanVFsUnboundAndVFIO(t *testing.T) {
	_, tree := fakesystest.Build(t, "vf-scale")
	inv := fakesystest.Scan(t, tree, true)
	var vfs []*discovery.NIC
	for _, n := range inv.NICs {
		if n.Kind == discovery.KindVF && len(n.Netdevs) == 1 && len(n.RDMA) == 1 && len(vfs) < 2 {
			vfs = append(vfs, n)
		}
	}
	if len(vfs) != 2 {
		t.Fatal("two VFs with a netdev and an RDMA device wanted")
	}
	sys := tree.Sys
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// Unbound: no driver link, nothing of its driver's left.
	unbound := vfs[0]
	must(os.Remove(filepath.Join(sys, unbound.Path, "driver")))
	// vfio-pci: its netdev and RDMA device (with their class links and
	// character devices) are gone with mlx5_core.
	vfio := vfs[1]
	must(os.MkdirAll(filepath.Join(sys, "bus/pci/drivers/vfio-pci"), 0o755))
	must(os.Remove(filepath.Join(sys, vfio.Path, "driver")))
	must(os.Symlink("../../../../../../bus/pci/drivers/vfio-pci", filepath.Join(sys, vfio.Path, "driver")))
	for _, n := range vfio.Netdevs {
		must(os.Remove(filepath.Join(sys, "class/net", n.Name)))
	}
	for _, r := range vfio.RDMA {
		must(os.Remove(filepath.Join(sys, "class/infiniband", r)))
	}
	for _, class := range []string{"infiniband_verbs", "infiniband_mad"} {
		ents, _ := os.ReadDir(filepath.Join(sys, vfio.Path, class))
		for _, e := range ents {
			must(os.Remove(filepath.Join(sys, "class", class, e.Name())))
		}
	}
	for _, sub := range []string{"net", "infiniband", "infiniband_verbs", "infiniband_mad"} {
		must(os.RemoveAll(filepath.Join(sys, vfio.Path, sub)))
	}
	full, lean := fakesystest.Scan(t, tree, false), fakesystest.Scan(t, tree, true)
	type view struct {
		Kind, PF, Driver string
		Netdevs, RDMA    []string
		VFIndex          int
	}
	of := func(n *discovery.NIC) view {
		v := view{Kind: string(n.Kind), PF: n.PF, Driver: n.Driver, RDMA: n.RDMA, VFIndex: n.VFIndex}
		for _, nd := range n.Netdevs {
			v.Netdevs = append(v.Netdevs, nd.Name)
		}
		return v
	}
	for _, vf := range vfs {
		f, l := of(full.NIC(vf.BDF)), of(lean.NIC(vf.BDF))
		if diff := cmp.Diff(f, l); diff != "" {
			t.Errorf("%s (-full +lean):\n%s", vf.BDF, diff)
		}
	}
	if d := of(lean.NIC(unbound.BDF)); d.Driver != "" || len(d.Netdevs) != 1 {
		t.Errorf("unbound VF: %+v", d)
	}
	if d := of(lean.NIC(vfio.BDF)); d.Driver != "vfio-pci" || len(d.Netdevs) != 0 || len(d.RDMA) != 0 || d.Kind != string(discovery.KindVF) {
		t.Errorf("vfio-pci VF: %+v", d)
	}
	if diff := cmp.Diff(full.Warnings, lean.Warnings); diff != "" {
		t.Errorf("warnings (-full +lean):\n%s", diff)
	}
}

// Class links that lead somewhere unexpected are named in a lean scan's
// warnings, whether the class is kept as links or grouped by function.
func TestLeanClassLinksElsewhere(t *testing.T) {
	_, tree := fakesystest.Build(t, "vf-scale")
	for _, l := range []struct{ class, name string }{{"net", "rnbogus0"}, {"infiniband_verbs", "uverbs9999"}, {"infiniband_mad", "umad9999"}} {
		target := "../../devices/virtual/elsewhere/" + l.name
		if err := os.Symlink(target, filepath.Join(tree.Sys, "class", l.class, l.name)); err != nil {
			t.Fatal(err)
		}
	}
	inv := fakesystest.Scan(t, tree, true)
	for _, l := range []string{"class/net/rnbogus0", "class/infiniband_verbs/uverbs9999", "class/infiniband_mad/umad9999"} {
		if !slices.ContainsFunc(inv.Warnings, func(w discovery.Warning) bool {
			return strings.HasSuffix(w.Path, l) && strings.Contains(w.Msg, "unexpected location")
		}) {
			t.Errorf("no warning for %s: %v", l, inv.Warnings)
		}
	}
	if s := inv.Summary(); s.VFs != 1016 {
		t.Errorf("%d VFs", s.VFs)
	}
}
