package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/skel"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/railnet/railnet/pkg/cni"
	"github.com/railnet/railnet/pkg/fakesys"
	"github.com/railnet/railnet/pkg/fakesys/fakesystest"
	"github.com/railnet/railnet/pkg/netdev"
)

// newSharedEnv is a node with one RoCE HCA (no VFs) whose netdev is a veth
// stand-in on the host, up, with a host address of its own (as a RoCE
// HCA's usually has), and RDMA device mlx5_0.
func newSharedEnv(tb testing.TB) *cniEnv {
	tb.Helper()
	e := newCNIEnv(tb, 0, func(n *fakesys.Node) {
		n.SRIOV, n.RDMA, n.NodeGUID = nil, "mlx5_0", "0200:b1ff:fe00:0000"
	})
	for _, n := range []string{e.parent(), "rn" + e.tag + "pp"} {
		l, err := netlink.LinkByName(n)
		if err != nil {
			tb.Fatal(err)
		}
		netlink.LinkSetUp(l)
	}
	l, _ := netlink.LinkByName(e.parent())
	if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(198, 19, 7, 1), Mask: net.CIDRMask(24, 32)}}); err != nil {
		tb.Fatal(err)
	}
	return e
}

func (e *cniEnv) parent() string { return "rn" + e.tag + "pf" }

func (e *cniEnv) slot(k int) string { return fmt.Sprintf("%s#%d", e.pfBDF, k) }

// parentView is what must not change on the HCA's netdev: name, MAC, MTU,
// flags, alias, namespace (present in the host) and addresses.
func parentView(tb testing.TB, name string) string {
	tb.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		return "missing: " + err.Error()
	}
	a := l.Attrs()
	addrs, _ := netlink.AddrList(l, netlink.FAMILY_ALL)
	var as []string
	for _, ad := range addrs {
		as = append(as, ad.IPNet.String())
	}
	slices.Sort(as)
	return fmt.Sprintf("%s idx=%d mac=%s mtu=%d up=%v alias=%q addrs=%v", a.Name, a.Index, a.HardwareAddr, a.MTU, a.Flags&net.FlagUp != 0, a.Alias, as)
}

// podLinks lists a netns's links other than lo: "name kind".
func podLinks(tb testing.TB, netns string) []string {
	tb.Helper()
	n, err := netdev.OpenNamespace(netns)
	if err != nil {
		tb.Fatalf("open %s: %v", netns, err)
	}
	defer n.Close()
	links, err := n.Handle.LinkList()
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	for _, l := range links {
		if l.Attrs().Name != "lo" {
			out = append(out, l.Attrs().Name+" "+l.Type())
		}
	}
	return out
}

func podIPv4(tb testing.TB, netns, ifName string) string {
	tb.Helper()
	out, _ := exec.Command("ip", "-n", filepath.Base(netns), "-4", "-o", "addr", "show", ifName).CombinedOutput()
	f := strings.Fields(string(out))
	for i, w := range f {
		if w == "inet" && i+1 < len(f) {
			return strings.Split(f[i+1], "/")[0]
		}
	}
	return ""
}

func (e *cniEnv) sharedList(tb testing.TB, extra map[string]any) *libcni.NetworkConfigList {
	if extra == nil {
		extra = map[string]any{}
	}
	extra["ipam"] = map[string]any{"type": "host-local", "dataDir": e.ipamDir,
		"ranges": []any{[]any{map[string]string{"subnet": "198.18.88.0/24"}}}}
	return e.conflist(tb, "1.1.0", extra)
}

// Eight pods on eight slots of one HCA: each gets its own macvlan child
// with its own address, they ping one another through the shared parent,
// the parent never changes, and DEL of each removes exactly its child and
// its lease.
func TestCNISharedSlots(t *testing.T) {
	e := newSharedEnv(t)
	list := e.sharedList(t, map[string]any{"mtu": 1400})
	ctx := context.Background()
	want := parentView(t, e.parent())
	const pods = 8
	nss := make([]string, pods)
	ips := make([]string, pods)
	for i := range pods {
		nss[i] = e.netns(t)
		rc := rt(fmt.Sprintf("sh%d", i), nss[i], "net1", e.slot(i))
		rc.CapabilityArgs["CNIDeviceInfoFile"] = filepath.Join(devInfoRoot, e.tag, fmt.Sprintf("sh%d.json", i))
		r, err := e.cni.AddNetworkList(ctx, list, rc)
		if err != nil {
			t.Fatalf("ADD slot %d: %v", i, err)
		}
		res, err := current.NewResultFromResult(r)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Interfaces) != 1 || res.Interfaces[0].PciID != e.pfBDF || res.Interfaces[0].Sandbox != nss[i] || res.Interfaces[0].Mtu != 1400 || len(res.IPs) != 1 {
			js, _ := json.Marshal(res)
			t.Fatalf("slot %d: result %s", i, js)
		}
		ips[i] = res.IPs[0].Address.IP.String()
		if got := podIPv4(t, nss[i], "net1"); got != ips[i] {
			t.Fatalf("slot %d: net1 has %q, result says %s", i, got, ips[i])
		}
		if links := podLinks(t, nss[i]); !slices.Equal(links, []string{"net1 macvlan"}) {
			t.Fatalf("slot %d: pod links %v", i, links)
		}
		if got := parentView(t, e.parent()); got != want {
			t.Fatalf("after ADD %d the parent is %s, was %s", i, got, want)
		}
		b, err := os.ReadFile(rc.CapabilityArgs["CNIDeviceInfoFile"].(string))
		if err != nil || !strings.Contains(string(b), `"rdma-device":"mlx5_0"`) || !strings.Contains(string(b), `"version":"1.1.0"`) {
			t.Fatalf("slot %d: device-info %s (%v)", i, b, err)
		}
	}
	if u := uniq(ips); len(u) != pods {
		t.Fatalf("addresses %v are not distinct", ips)
	}
	for i := 1; i < pods; i++ {
		if out, err := exec.Command("ip", "netns", "exec", filepath.Base(nss[0]), "ping", "-c", "1", "-W", "2", ips[i]).CombinedOutput(); err != nil {
			t.Fatalf("pod 0 → pod %d (%s): %v\n%s", i, ips[i], err, out)
		}
	}
	if out, err := exec.Command("ip", "netns", "exec", filepath.Base(nss[pods-1]), "ping", "-c", "1", "-W", "2", ips[0]).CombinedOutput(); err != nil {
		t.Fatalf("pod 7 → pod 0: %v\n%s", err, out)
	}
	// CHECK passes on a live child, and fails once its MTU changed.
	prev, _ := e.cni.GetNetworkListCachedResult(list, rt("sh3", nss[3], "net1", e.slot(3)))
	if prev == nil {
		t.Fatal("no cached result for sh3")
	}
	if err := e.cni.CheckNetworkList(ctx, list, rt("sh3", nss[3], "net1", e.slot(3))); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	exec.Command("ip", "-n", filepath.Base(nss[3]), "link", "set", "net1", "mtu", "1300").Run()
	if err := e.cni.CheckNetworkList(ctx, list, rt("sh3", nss[3], "net1", e.slot(3))); err == nil || !strings.Contains(err.Error(), "MTU") {
		t.Fatalf("CHECK after an MTU change: %v", err)
	}
	for i := range pods {
		before := leases(t, e.ipamDir)
		if err := e.cni.DelNetworkList(ctx, list, rt(fmt.Sprintf("sh%d", i), nss[i], "net1", e.slot(i))); err != nil {
			t.Fatalf("DEL %d: %v", i, err)
		}
		after := leases(t, e.ipamDir)
		if len(after) != len(before)-1 || slices.Contains(after, ips[i]) {
			t.Fatalf("DEL %d: leases %v → %v, want %s gone and only it", i, before, after, ips[i])
		}
		for j := range pods {
			links := podLinks(t, nss[j])
			if gone := j <= i; gone != (len(links) == 0) {
				t.Fatalf("after DEL %d pod %d has links %v", i, j, links)
			}
		}
		if got := parentView(t, e.parent()); got != want {
			t.Fatalf("after DEL %d the parent is %s, was %s", i, got, want)
		}
		if _, err := os.Stat(filepath.Join(devInfoRoot, e.tag, fmt.Sprintf("sh%d.json", i))); !os.IsNotExist(err) {
			t.Errorf("DEL %d left its device-info file: %v", i, err)
		}
		// Twice is fine.
		if err := e.cni.DelNetworkList(ctx, list, rt(fmt.Sprintf("sh%d", i), nss[i], "net1", e.slot(i))); err != nil {
			t.Fatalf("second DEL %d: %v", i, err)
		}
	}
	if recs, _ := filepath.Glob(filepath.Join(e.state, "records", "*.json")); len(recs) != 0 {
		t.Errorf("records left: %v", recs)
	}
}

func uniq(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return slices.Compact(c)
}

// A slot held by one container is code 11 for another, and the same ADD
// again from its holder succeeds; move with a slot is 7 and names both
// fields; passthru is refused on a slot; the whole device cannot move
// while children hang on it; nothing is created by any refusal.
func TestCNISharedSlotRefusals(t *testing.T) {
	e := newSharedEnv(t)
	ctx := context.Background()
	list := e.sharedList(t, nil)
	a, b := e.netns(t), e.netns(t)
	if _, err := e.cni.AddNetworkList(ctx, list, rt("own", a, "net1", e.slot(0))); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cni.AddNetworkList(ctx, list, rt("other", b, "net1", e.slot(0))); cniCode(err) != 11 || !strings.Contains(err.Error(), "in use by container own") {
		t.Fatalf("slot in use: %v (code %d)", err, cniCode(err))
	}
	if _, err := e.cni.AddNetworkList(ctx, list, rt("own", a, "net1", e.slot(0))); err != nil {
		t.Fatalf("the same ADD again: %v", err)
	}
	if l := podLinks(t, a); !slices.Equal(l, []string{"net1 macvlan"}) {
		t.Fatalf("after the repeated ADD the pod has %v", l)
	}
	if n := len(leases(t, e.ipamDir)); n != 1 {
		t.Fatalf("%d leases after the repeated ADD", n)
	}
	// The whole device cannot move into a pod while a child hangs on it
	// (without its host address, which alone would refuse the move).
	pl, _ := netlink.LinkByName(e.parent())
	hostAddr := &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(198, 19, 7, 1), Mask: net.CIDRMask(24, 32)}}
	netlink.AddrDel(pl, hostAddr)
	whole := e.sharedList(t, nil)
	if _, err := e.cni.AddNetworkList(ctx, whole, rt("mover", b, "net1", e.pfBDF)); cniCode(err) != 11 || !strings.Contains(err.Error(), "shared by 1 attachment") {
		t.Fatalf("move of a shared device: %v (code %d)", err, cniCode(err))
	}
	if _, ok := hostLink(t, e.parent()); !ok {
		t.Fatal("the refused move took the parent away")
	}
	netlink.AddrAdd(pl, hostAddr)
	for _, c := range []struct {
		extra  map[string]any
		fields []string
	}{
		{map[string]any{"attach": "move"}, []string{"attach", "deviceID"}},
		{map[string]any{"macvlanMode": "passthru"}, []string{"macvlanMode", "passthru"}},
		{map[string]any{"attach": "ipoib"}, []string{"attach", "not an InfiniBand"}},
		{map[string]any{"attach": "ipvlan", "mac": "02:11:22:33:44:55"}, []string{"mac"}},
		{map[string]any{"vlan": 12}, []string{"vlan", "child"}},
		{map[string]any{"mtu": 9500}, []string{"mtu", "9000"}},
		{map[string]any{"attach": "bond"}, []string{"attach"}},
		{map[string]any{"ipvlanMode": "l3", "attach": "macvlan"}, []string{"ipvlanMode"}},
		{map[string]any{"pkey": "0x8000"}, []string{"pkey"}},
	} {
		l := e.sharedList(t, c.extra)
		_, err := e.cni.AddNetworkList(ctx, l, rt("bad", b, "net1", e.slot(1)))
		if cniCode(err) != 7 {
			t.Errorf("%v: %v (code %d), want 7", c.extra, err, cniCode(err))
			continue
		}
		for _, f := range c.fields {
			if !strings.Contains(err.Error(), f) {
				t.Errorf("%v: %q does not name %q", c.extra, err, f)
			}
		}
		if links := podLinks(t, b); len(links) != 0 {
			t.Fatalf("%v: refused, yet the pod has %v", c.extra, links)
		}
	}
	if err := e.cni.DelNetworkList(ctx, list, rt("own", a, "net1", e.slot(0))); err != nil {
		t.Fatal(err)
	}
	if recs, _ := filepath.Glob(filepath.Join(e.state, "records", "*.json")); len(recs) != 0 {
		t.Errorf("records left: %v", recs)
	}
	if l := leases(t, e.ipamDir); len(l) != 0 {
		t.Errorf("leases left: %v", l)
	}
}

// SIGKILL at random points of a slot's ADD, then DEL or GC: no child in
// the pod, no lease, no record, and the parent as it was.
func TestCNISharedCrashSafety(t *testing.T) {
	e := newSharedEnv(t)
	pod := e.netns(t)
	want := parentView(t, e.parent())
	killedAdds(t, e, pod, e.slot(2), "198.18.89.0/24", 60, func(i int, how string, delay time.Duration) {
		if links := podLinks(t, pod); len(links) != 0 {
			t.Fatalf("iteration %d (kill after %v, %s): the pod kept %v", i, delay, how, links)
		}
		if l := leases(t, e.ipamDir); len(l) != 0 {
			t.Fatalf("iteration %d (kill after %v, %s): leases left %v", i, delay, how, l)
		}
		if left, _ := filepath.Glob(filepath.Join(e.state, "records", "*.json")); len(left) != 0 {
			t.Fatalf("iteration %d (kill after %v, %s): records %v", i, delay, how, left)
		}
		if got := parentView(t, e.parent()); got != want {
			t.Fatalf("iteration %d: parent %s, was %s", i, got, want)
		}
	})
}

// Sixteen ADDs at once on sixteen slots of one HCA all succeed, each with
// its own child and address; then sixteen DELs at once leave nothing.
func TestCNISharedConcurrent(t *testing.T) {
	e := newSharedEnv(t)
	list := e.sharedList(t, nil)
	ctx := context.Background()
	const n = 16
	nss := make([]string, n)
	for i := range n {
		nss[i] = e.netns(t)
	}
	run := func(del bool) []error {
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				rc := rt(fmt.Sprintf("cc%d", i), nss[i], "net1", e.slot(i))
				if del {
					errs[i] = e.newCNI().DelNetworkList(ctx, list, rc)
				} else {
					_, errs[i] = e.newCNI().AddNetworkList(ctx, list, rc)
				}
			})
		}
		wg.Wait()
		return errs
	}
	for i, err := range run(false) {
		if err != nil {
			t.Fatalf("ADD %d: %v", i, err)
		}
	}
	var ips []string
	for i := range n {
		if l := podLinks(t, nss[i]); !slices.Equal(l, []string{"net1 macvlan"}) {
			t.Fatalf("pod %d: %v", i, l)
		}
		ips = append(ips, podIPv4(t, nss[i], "net1"))
	}
	if len(uniq(ips)) != n {
		t.Fatalf("addresses %v", ips)
	}
	for i, err := range run(true) {
		if err != nil {
			t.Fatalf("DEL %d: %v", i, err)
		}
	}
	if l := leases(t, e.ipamDir); len(l) != 0 {
		t.Errorf("leases left: %v", l)
	}
}

// recordingChildren stands in for the kernel where it lacks the child's
// kind (IPoIB needs an InfiniBand device): it records the child railnet
// asks for, and puts a veth under that name in the pod so the rest of ADD
// runs for real.
type recordingChildren struct {
	mu    sync.Mutex
	asked []netdev.Child
	tag   string
}

func (r *recordingChildren) Add(host, pod *netdev.Namespace, c netdev.Child) error {
	r.mu.Lock()
	r.asked = append(r.asked, c)
	peer := fmt.Sprintf("rn%sc%d", r.tag, len(r.asked))
	r.mu.Unlock()
	// What NetlinkChildren would send, checked for shape.
	if l, err := c.Link(int(pod.NS)); err != nil {
		return err
	} else if ib, ok := l.(*netlink.IPoIB); !ok || ib.ParentIndex != c.ParentIndex || ib.Name != c.Name || ib.Pkey != c.PKey {
		return fmt.Errorf("netlink message %+v does not carry %+v", l, c)
	}
	return host.Handle.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: peer, Alias: c.Alias, MTU: c.MTU},
		PeerName: c.Name, PeerNamespace: netlink.NsFd(int(pod.NS))})
}

func (r *recordingChildren) Read(host, pod *netdev.Namespace, name string) (netdev.Child, error) {
	l, err := pod.Handle.LinkByName(name)
	if err != nil {
		return netdev.Child{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.asked[len(r.asked)-1]
	c.Name, c.MTU, c.MAC, c.Alias = name, l.Attrs().MTU, l.Attrs().HardwareAddr, l.Attrs().Alias
	return c, nil
}

// renameNetdev renames a function's netdev in a machine description.
func renameNetdev(roots []fakesys.Root, from, to string) bool {
	var walk func([]fakesys.Node) bool
	walk = func(ns []fakesys.Node) bool {
		for i := range ns {
			if ns[i].Netdev == from {
				ns[i].Netdev = to
				return true
			}
			if walk(ns[i].Children) {
				return true
			}
		}
		return false
	}
	for i := range roots {
		if walk(roots[i].Children) {
			return true
		}
	}
	return false
}

// IPoIB on an InfiniBand PF with no VFs (ibp64s0, a rail of the DGX H100
// fixture): slots default to an ipoib child of the PF's netdev with the
// parent's partition (full membership), or the netconf's pkey; the request
// carries parent, pkey, mode and a temporary name, and never touches the
// parent.
func TestCNISharedIPoIB(t *testing.T) {
	requireRoot(t)
	quietStdout(t)
	m := fakesystest.Load(t, "dgx-h100-like")
	tag := randTag()
	// ibp64s0 stands in the host as a veth: under a name of this test's
	// own, so that it never meets a real link.
	parentName := "rn" + tag + "ib64"
	if !renameNetdev(m.Roots, "ibp64s0", parentName) {
		t.Fatal("the fixture has no ibp64s0")
	}
	tree, err := fakesys.Materialize(m, fakesystest.TempDir(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: parentName, MTU: 4092}, PeerName: "rn" + tag + "ibp"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(parentName); err == nil {
			netlink.LinkDel(l)
		}
		links, _ := netlink.LinkList()
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "rn"+tag) {
				netlink.LinkDel(l)
			}
		}
	})
	parent, _ := netlink.LinkByName(parentName)
	want := parentView(t, parentName)
	stateDir := t.TempDir()
	rec := &recordingChildren{tag: tag}
	p := &cni.Plugin{Children: rec, Stderr: io.Discard}
	ns := fmt.Sprintf("rn%s-ib", tag)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	pod := "/var/run/netns/" + ns
	for i, c := range []struct {
		extra map[string]any
		pkey  uint16
	}{{nil, 0xffff}, {map[string]any{"pkey": "0x0a12", "mtu": 2044}, 0x8a12}} {
		nc := map[string]any{"cniVersion": "1.1.0", "name": "ib", "type": "railnet", "sysfsRoot": tree.Sys, "stateDir": stateDir,
			"deviceID": "0000:40:00.0#" + fmt.Sprint(i)}
		for k, v := range c.extra {
			nc[k] = v
		}
		conf, _ := json.Marshal(nc)
		args := &skel.CmdArgs{ContainerID: fmt.Sprintf("ib%d", i), Netns: pod, IfName: fmt.Sprintf("ib%d", i), StdinData: conf}
		res := addResult(t, p, args)
		got := rec.asked[len(rec.asked)-1]
		if got.Kind != "ipoib" || got.ParentIndex != parent.Attrs().Index || got.PKey != c.pkey || got.Mode != "datagram" ||
			!strings.HasPrefix(got.Name, "rnc") || got.Name == args.IfName || !strings.HasPrefix(got.Alias, "railnet:") {
			t.Fatalf("case %d: asked %+v (parent index %d)", i, got, parent.Attrs().Index)
		}
		if c.extra != nil && got.MTU != 2044 {
			t.Errorf("case %d: MTU %d", i, got.MTU)
		}
		var r current.Result
		if json.Unmarshal(res, &r) != nil || len(r.Interfaces) != 1 || r.Interfaces[0].PciID != "0000:40:00.0" || r.Interfaces[0].Name != args.IfName {
			t.Errorf("case %d: result %s", i, res)
		}
		if err := p.Check(withPrev(t, args, res)); err != nil {
			t.Errorf("case %d: CHECK: %v", i, err)
		}
		if got := parentView(t, parentName); got != want {
			t.Fatalf("case %d: parent %s, was %s", i, got, want)
		}
		if err := p.Del(args); err != nil {
			t.Fatal(err)
		}
		if l := podLinks(t, pod); len(l) != 0 {
			t.Fatalf("case %d: DEL left %v in the pod", i, l)
		}
	}
	// macvlan on an InfiniBand device is refused before anything is asked.
	conf, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "ib", "type": "railnet", "sysfsRoot": tree.Sys, "stateDir": stateDir,
		"deviceID": "0000:40:00.0#3", "attach": "macvlan"})
	n := len(rec.asked)
	if err := p.Add(&skel.CmdArgs{ContainerID: "ibx", Netns: pod, IfName: "ib9", StdinData: conf}); err == nil || !strings.Contains(err.Error(), "InfiniBand") {
		t.Fatalf("macvlan on IB: %v", err)
	}
	if len(rec.asked) != n {
		t.Fatal("a refused ADD asked for a child")
	}
}

// arpCapture collects the ARP frames that arrive on a host link.
type arpCapture struct{ fd int }

func captureARP(tb testing.TB, ifName string) *arpCapture {
	tb.Helper()
	l, err := netlink.LinkByName(ifName)
	if err != nil {
		tb.Fatal(err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ARP)))
	if err != nil {
		tb.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: l.Attrs().Index}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { unix.Close(fd) })
	return &arpCapture{fd: fd}
}

// gratuitous waits up to d for an ARP frame whose sender and target
// addresses are both ip (a gratuitous ARP announcing ip).
func (c *arpCapture) gratuitous(ip string, d time.Duration) bool {
	want := net.ParseIP(ip).To4()
	deadline := time.Now().Add(d)
	buf := make([]byte, 256)
	for time.Now().Before(deadline) {
		tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
		unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil || n < 42 {
			continue
		}
		arp := buf[14:n]
		if net.IP(arp[14:18]).Equal(want) && net.IP(arp[24:28]).Equal(want) {
			return true
		}
	}
	return false
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// ADD announces the pod's address on the segment, for a moved netdev and
// for a shared slot's child alike: a gratuitous ARP reaches the other end.
func TestCNIAnnounces(t *testing.T) {
	ctx := context.Background()
	t.Run("move", func(t *testing.T) {
		e := newCNIEnv(t, 1)
		list := e.conflist(t, "1.1.0", nil)
		capture := captureARP(t, e.vfName(1)) // the peer of VF 0's veth
		r, err := e.cni.AddNetworkList(ctx, list, rt("ga", e.netns(t), "net1", vfBDF(0)))
		if err != nil {
			t.Fatal(err)
		}
		res, _ := current.NewResultFromResult(r)
		if ip := res.IPs[0].Address.IP.String(); !capture.gratuitous(ip, 2*time.Second) {
			t.Errorf("no gratuitous ARP for %s on the peer", ip)
		}
	})
	t.Run("slot", func(t *testing.T) {
		e := newSharedEnv(t)
		capture := captureARP(t, "rn"+e.tag+"pp") // the far end of the HCA's stand-in
		r, err := e.cni.AddNetworkList(ctx, e.sharedList(t, nil), rt("gs", e.netns(t), "net1", e.slot(0)))
		if err != nil {
			t.Fatal(err)
		}
		res, _ := current.NewResultFromResult(r)
		if ip := res.IPs[0].Address.IP.String(); !capture.gratuitous(ip, 2*time.Second) {
			t.Errorf("no gratuitous ARP for %s beyond the parent", ip)
		}
	})
}

// A pod's new sandbox takes its slot over from the pod's earlier, dead
// sandbox (the kubelet runs one at a time), which is torn down; another
// pod still gets code 11. An IPAM plugin that refuses ADD leaves no record
// behind, even when its DEL refuses too: the slot is free again.
func TestCNISharedSlotTakeoverAndIPAMRefusal(t *testing.T) {
	e := newSharedEnv(t)
	ctx := context.Background()
	list := e.sharedList(t, nil)
	old, fresh, other := e.netns(t), e.netns(t), e.netns(t)
	withUID := func(rc *libcni.RuntimeConf, uid string) *libcni.RuntimeConf {
		rc.Args = [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "ml"}, {"K8S_POD_NAME", "trainer"}, {"K8S_POD_UID", uid}}
		return rc
	}
	if _, err := e.cni.AddNetworkList(ctx, list, withUID(rt("sandbox1", old, "net1", e.slot(0)), "uid-1")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cni.AddNetworkList(ctx, list, withUID(rt("intruder", other, "net1", e.slot(0)), "uid-2")); cniCode(err) != 11 {
		t.Fatalf("another pod on a held slot: %v", err)
	}
	if _, err := e.cni.AddNetworkList(ctx, list, withUID(rt("sandbox2", fresh, "net1", e.slot(0)), "uid-1")); err != nil {
		t.Fatalf("the pod's new sandbox: %v", err)
	}
	if l := podLinks(t, old); len(l) != 0 {
		t.Errorf("the earlier sandbox kept %v", l)
	}
	if l := podLinks(t, fresh); len(l) != 1 {
		t.Errorf("the new sandbox has %v", l)
	}
	if l := leases(t, e.ipamDir); len(l) != 1 {
		t.Errorf("leases %v, want the new sandbox's only", l)
	}
	if err := e.cni.DelNetworkList(ctx, list, withUID(rt("sandbox2", fresh, "net1", e.slot(0)), "uid-1")); err != nil {
		t.Fatal(err)
	}

	// host-local refuses a range that is not one, on ADD and on DEL.
	bad := e.conflist(t, "1.1.0", map[string]any{"ipam": map[string]any{"type": "host-local", "dataDir": e.ipamDir,
		"ranges": []any{[]any{map[string]string{"subnet": "not-a-subnet"}}}}})
	if _, err := e.cni.AddNetworkList(ctx, bad, rt("badipam", other, "net1", e.slot(1))); err == nil {
		t.Fatal("ADD with a refusing IPAM succeeded")
	}
	if recs, _ := filepath.Glob(filepath.Join(e.state, "records", "*.json")); len(recs) != 0 {
		t.Fatalf("records after a refused IPAM ADD: %v", recs)
	}
	if l := podLinks(t, other); len(l) != 0 {
		t.Fatalf("the refused ADD left %v", l)
	}
	if _, err := e.cni.AddNetworkList(ctx, list, rt("next", other, "net1", e.slot(1))); err != nil {
		t.Fatalf("the slot after a refused IPAM ADD: %v", err)
	}
}
