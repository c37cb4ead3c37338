//go:build kerneltest

package kernel

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/vishvananda/netlink"

	"github.com/railnet/railnet/pkg/cni"
	"github.com/railnet/railnet/pkg/discovery"
	"github.com/railnet/railnet/pkg/fakesys"
	"github.com/railnet/railnet/pkg/fakesys/fakesystest"
	"github.com/railnet/railnet/pkg/netdev"
	"github.com/railnet/railnet/pkg/sysfs"
)

// mode is the RDMA netns mode this boot was started with (run.sh).
func mode() string { return os.Getenv("RAILNET_KERNEL_MODE") }

// PodPair is two pod namespaces joined by a veth pair, each end in one pod
// under the name "eth1", with an address of 198.18.99.0/24. Encryption
// tests build on it: one call gives them two peers on one segment.
type PodPair struct {
	NS   [2]*netdev.Namespace
	Path [2]string
	Addr [2]string
}

func newPodPair(t *testing.T, name string) *PodPair {
	t.Helper()
	p := &PodPair{Addr: [2]string{"198.18.99.1/24", "198.18.99.2/24"}}
	a, b := name+"a", name+"b"
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a}, PeerName: b}); err != nil {
		t.Fatal(err)
	}
	for i, end := range []string{a, b} {
		p.Path[i] = "/var/run/netns/" + name + string(rune('0'+i))
		if err := netdev.NewPinnedNetns(p.Path[i]); err != nil {
			t.Fatal(err)
		}
		n, err := netdev.OpenNamespace(p.Path[i])
		if err != nil {
			t.Fatal(err)
		}
		p.NS[i] = n
		l, err := netlink.LinkByName(end)
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetNsFd(l, int(n.NS)); err != nil {
			t.Fatal(err)
		}
		l, _ = n.Handle.LinkByName(end)
		n.Handle.LinkSetName(l, "eth1")
		addr, _ := netlink.ParseAddr(p.Addr[i])
		n.Handle.AddrAdd(l, addr)
		n.Handle.LinkSetUp(l)
		lo, _ := n.Handle.LinkByName("lo")
		n.Handle.LinkSetUp(lo)
	}
	t.Cleanup(func() {
		for i := range p.NS {
			p.NS[i].Close()
			netdev.RemovePinnedNetns(p.Path[i])
		}
	})
	return p
}

func TestPodPairHelper(t *testing.T) {
	p := newPodPair(t, "pp")
	for i, n := range p.NS {
		l, err := n.Handle.LinkByName("eth1")
		if err != nil {
			t.Fatalf("pod %d: %v", i, err)
		}
		addrs, _ := n.Handle.AddrList(l, netlink.FAMILY_V4)
		if len(addrs) != 1 || addrs[0].IPNet.String() != p.Addr[i] {
			t.Errorf("pod %d addresses %v", i, addrs)
		}
	}
}

func TestRDMANetnsMode(t *testing.T) {
	host, err := netdev.OpenNamespace("")
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	got, err := host.Handle.RdmaSystemGetNetnsMode()
	if err != nil {
		t.Fatalf("RDMA netns mode: %v", err)
	}
	if got != mode() {
		t.Fatalf("RDMA netns mode %q, booted for %q", got, mode())
	}
}

// rxe is a virtual RDMA device: discovery maps it to its netdev, with no PCI parent.
func addRXE(t *testing.T, netdevName, rxe string) {
	t.Helper()
	if err := netlink.RdmaLinkAdd(rxe, "rxe", netdevName); err != nil {
		t.Fatalf("rdma link add %s type rxe netdev %s: %v", rxe, netdevName, err)
	}
	t.Cleanup(func() { netlink.RdmaLinkDel(rxe) })
}

func TestDiscoveryMapsRXE(t *testing.T) {
	if err := netlink.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "rxedummy0"}}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if l, err := netlink.LinkByName("rxedummy0"); err == nil {
			netlink.LinkDel(l)
		}
	}()
	l, _ := netlink.LinkByName("rxedummy0")
	netlink.LinkSetUp(l)
	addRXE(t, "rxedummy0", "rxe7")
	sys, err := sysfs.New("/sys")
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	dev, _ := sysfs.New("/dev")
	defer dev.Close()
	inv, err := discovery.NewScanner(sys, dev).Scan()
	if err != nil {
		t.Fatal(err)
	}
	r := inv.RDMADevice("rxe7")
	if r == nil || r.PCI != "" || r.Netdev != "rxedummy0" {
		t.Fatalf("rxe7 = %+v (warnings %v)", r, inv.Warnings)
	}
	if !strings.HasPrefix(strings.Join(r.CharDevs, ","), "/dev/infiniband/uverbs") {
		t.Errorf("rxe7 char devices %v", r.CharDevs)
	}
}

// In exclusive mode, ADD of a netdev whose RDMA device cannot move (rxe
// answers EOPNOTSUPP; mlx5 can move) fails with railnet's error and puts
// the netdev back. In shared mode the RDMA device stays and ADD succeeds.
func TestAddWithUnmovableRDMA(t *testing.T) {
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "rdmavf0"}, PeerName: "rdmapeer0"}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if l, err := netlink.LinkByName("rdmapeer0"); err == nil {
			netlink.LinkDel(l)
		}
	}()
	addRXE(t, "rdmavf0", "rxe0")
	tree := mockedNIC(t, "rdmavf0", "rxe0")
	pod := "/var/run/netns/rdmapod"
	if err := netdev.NewPinnedNetns(pod); err != nil {
		t.Fatal(err)
	}
	defer netdev.RemovePinnedNetns(pod)
	p := &cni.Plugin{Stderr: io.Discard}
	stateDir := t.TempDir()
	t.Cleanup(func() { netdev.RemovePinnedNetns(filepath.Join(stateDir, "netns", "staging")) })
	conf, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "k", "type": "railnet", "sysfsRoot": tree.Sys,
		"stateDir": stateDir, "deviceID": "0000:b1:00.0"})
	args := &skel.CmdArgs{ContainerID: "rd", Netns: pod, IfName: "net1", StdinData: conf}
	before, _ := netlink.LinkByName("rdmavf0")
	restore := quiet()
	err := p.Add(args)
	restore()
	switch mode() {
	case "exclusive":
		if err == nil || !strings.Contains(err.Error(), "cannot move into the pod netns") {
			t.Fatalf("ADD in exclusive mode: %v", err)
		}
		after, lerr := netlink.LinkByName("rdmavf0")
		if lerr != nil || after.Attrs().HardwareAddr.String() != before.Attrs().HardwareAddr.String() || after.Attrs().Alias != before.Attrs().Alias {
			t.Fatalf("netdev not rolled back: %v %+v", lerr, after)
		}
		if _, err := netlink.RdmaLinkByName("rxe0"); err != nil {
			t.Errorf("rxe0 is gone after a refused ADD: %v", err)
		}
		if recs, _ := filepath.Glob(filepath.Join(stateDir, "records", "*.json")); len(recs) != 0 {
			t.Errorf("records left: %v", recs)
		}
	default:
		// Shared mode: nothing RDMA moves (rxe itself goes away with its
		// netdev's move: the kernel unregisters it with the netdev).
		if err != nil {
			t.Fatalf("ADD in shared mode: %v", err)
		}
		if err := p.Del(args); err != nil {
			t.Fatal(err)
		}
		if _, err := netlink.LinkByName("rdmavf0"); err != nil {
			t.Errorf("not back after DEL: %v", err)
		}
	}
}

// mockedNIC is a one-NIC sysfs tree whose function's netdev and RDMA
// device are real ones of this kernel.
func mockedNIC(t testing.TB, netdevName, rdma string) fakesys.Tree {
	drv := "mlx5_core"
	return fakesystest.OneNIC(t, fakesys.Node{Vendor: "0x15b3", Device: "0x101d", Class: "0x020000", Driver: &drv,
		Netdev: netdevName, LinkLayer: "ethernet", RDMA: rdma, MAC: "02:00:b1:00:00:00", NodeGUID: "0200:b1ff:fe00:0000",
		MTU: 1500, SpeedMbps: 100000, OperState: "up"})
}

// quiet keeps a CNI result off the console; the returned func restores
// stdout (the testing package reports through it).
func quiet() func() {
	old := os.Stdout
	f, _ := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	os.Stdout = f
	return func() { os.Stdout = old; f.Close() }
}

// TestMain lets the tests' netconfs name their own sysfs trees and state
// directories and attach devices no device plugin advertises, as a node
// file allows (the CNI refuses both otherwise).
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "railnet-kernel-")
	if err != nil {
		panic(err)
	}
	node := filepath.Join(dir, "cni.json")
	if err := os.WriteFile(node, []byte(`{"allowNetconfPaths":true,"allowUnadvertisedDevices":true}`), 0o644); err != nil {
		panic(err)
	}
	os.Setenv("RAILNET_CNI_CONFIG", node)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
