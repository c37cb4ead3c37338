package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/railnet/railnet/pkg/agent"
	"github.com/railnet/railnet/pkg/fakesys"
	"github.com/railnet/railnet/pkg/fakesys/fakesystest"
)

// cniEnv is a node for the CNI tests: a mocked sysfs whose VF netdevs are
// veth stand-ins that exist in the host (VF 2k and 2k+1 are the two ends of
// one pair), a state directory, an IPAM data directory, and libcni.
type cniEnv struct {
	t       testing.TB
	tag     string
	sys     string
	state   string
	ipamDir string
	confDir string
	cache   string
	cni     *libcni.CNIConfig
	nss     []string
	pfBDF   string
}

func requireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root (network namespaces, veth); CI runs as root")
	}
}

func randTag() string {
	b := make([]byte, 2)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// vfBDF is the address of VF n of the test PF 0000:b1:00.0 (offset 1, stride 1).
func vfBDF(n int) string {
	rid := 0xb100 + 1 + n
	return fmt.Sprintf("0000:%02x:%02x.%d", rid>>8, (rid>>3)&0x1f, rid&7)
}

func (e *cniEnv) vfName(n int) string { return fmt.Sprintf("rn%sv%d", e.tag, n) }

func newCNIEnv(tb testing.TB, pairs int, opts ...func(*fakesys.Node)) *cniEnv {
	tb.Helper()
	requireRoot(tb)
	e := &cniEnv{t: tb, tag: randTag(), pfBDF: "0000:b1:00.0"}
	drv := "mlx5_core"
	node := fakesys.Node{Vendor: "0x15b3", Device: "0x101d", Class: "0x020000", Driver: &drv,
		Netdev: "rn" + e.tag + "pf", LinkLayer: "ethernet", MAC: "02:00:b1:00:00:00", MTU: 9000, SpeedMbps: 100000, OperState: "up",
		SRIOV: &fakesys.SRIOV{TotalVFs: 2 * pairs, NumVFs: 2 * pairs, VFDevice: "0x101e", VFOffset: 1, VFStride: 1, VFDriver: drv,
			VFNetdev: "rn" + e.tag + "v{n}", VFMac: "02:00:b1:00:01:{n:02x}"}}
	for _, o := range opts {
		o(&node)
	}
	tree := fakesystest.OneNIC(tb, node)
	base := fakesystest.TempDir(tb)
	e.sys, e.state, e.ipamDir, e.confDir, e.cache = tree.Sys, filepath.Join(base, "state"), filepath.Join(base, "ipam"),
		filepath.Join(base, "net.d"), filepath.Join(base, "cache")
	os.MkdirAll(e.confDir, 0o755)
	for i := 0; i < pairs; i++ {
		a, b := e.vfName(2*i), e.vfName(2*i+1)
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a, MTU: 1500}, PeerName: b}
		if err := netlink.LinkAdd(veth); err != nil {
			tb.Fatalf("veth %s/%s: %v", a, b, err)
		}
		for _, n := range []string{a, b} {
			l, _ := netlink.LinkByName(n)
			netlink.LinkSetUp(l)
		}
	}
	// The PF's netdev is a veth too: whole-netdev attachments use it.
	pf := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "rn" + e.tag + "pf", MTU: 9000}, PeerName: "rn" + e.tag + "pp"}
	if err := netlink.LinkAdd(pf); err != nil {
		tb.Fatalf("PF veth: %v", err)
	}
	tb.Cleanup(e.cleanup)
	e.cni = libcni.NewCNIConfigWithCacheDir([]string{binDir, cniPluginDir}, e.cache, nil)
	return e
}

// newCNI is a libcni of its own: a CNIConfig initialises itself on first
// use, which concurrent callers must not share.
func (e *cniEnv) newCNI() *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir([]string{binDir, cniPluginDir}, e.cache, nil)
}

func (e *cniEnv) cleanup() {
	for _, n := range e.nss {
		exec.Command("ip", "netns", "del", n).Run()
	}
	links, _ := netlink.LinkList()
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, "rn"+e.tag) || strings.HasPrefix(l.Attrs().Alias, "rn"+e.tag) {
			netlink.LinkDel(l)
		}
	}
	// Temp netns left by a killed ADD are bind mounts under the state dir.
	if ents, err := os.ReadDir(filepath.Join(e.state, "netns")); err == nil {
		for _, ent := range ents {
			p := filepath.Join(e.state, "netns", ent.Name())
			exec.Command("umount", "-l", p).Run()
			os.Remove(p)
		}
	}
}

func (e *cniEnv) netns(tb testing.TB) string {
	tb.Helper()
	name := fmt.Sprintf("rn%s-%d", e.tag, len(e.nss))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		tb.Fatalf("ip netns add: %v %s", err, out)
	}
	e.nss = append(e.nss, name)
	return "/var/run/netns/" + name
}

// conflist writes the network's config list to disk and loads it as a runtime does.
func (e *cniEnv) conflist(tb testing.TB, version string, extra map[string]any) *libcni.NetworkConfigList {
	tb.Helper()
	plugin := map[string]any{
		"type": "railnet", "sysfsRoot": e.sys, "stateDir": e.state,
		"capabilities": map[string]bool{"deviceID": true, "CNIDeviceInfoFile": true, "mac": true},
		"ipam": map[string]any{"type": "host-local", "dataDir": e.ipamDir,
			"ranges": []any{[]any{map[string]string{"subnet": "198.18.77.0/24"}}}},
	}
	for k, v := range extra {
		if v == nil {
			delete(plugin, k)
		} else {
			plugin[k] = v
		}
	}
	list := map[string]any{"cniVersion": version, "name": "rn" + e.tag, "plugins": []any{plugin}}
	b, _ := json.Marshal(list)
	p := filepath.Join(e.confDir, "10-rn"+e.tag+".conflist")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		tb.Fatal(err)
	}
	l, err := libcni.LoadConfList(e.confDir, "rn"+e.tag)
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

func rt(cid, netns, ifName, deviceID string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: cid, NetNS: netns, IfName: ifName,
		CapabilityArgs: map[string]any{"deviceID": deviceID}}
}

type linkState struct {
	Name, MAC, Alias string
	MTU              int
	Up               bool
	Index            int
}

func hostLink(tb testing.TB, name string) (linkState, bool) {
	tb.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		return linkState{}, false
	}
	a := l.Attrs()
	return linkState{Name: a.Name, MAC: a.HardwareAddr.String(), Alias: a.Alias, MTU: a.MTU, Up: a.Flags&net.FlagUp != 0, Index: a.Index}, true
}

func leases(tb testing.TB, dir string) []string {
	var out []string
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && net.ParseIP(filepath.Base(p)) != nil {
			out = append(out, filepath.Base(p))
		}
		return nil
	})
	return out
}

func cniCode(err error) uint {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

var versions = []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"}

func TestCNIPodsPing(t *testing.T) {
	for _, v := range versions {
		t.Run(v, func(t *testing.T) {
			e := newCNIEnv(t, 1)
			list := e.conflist(t, v, nil)
			ns1, ns2 := e.netns(t), e.netns(t)
			ctx := context.Background()
			r1, err := e.cni.AddNetworkList(ctx, list, rt("c1", ns1, "net1", vfBDF(0)))
			if err != nil {
				t.Fatalf("ADD 1: %v", err)
			}
			if _, err := e.cni.AddNetworkList(ctx, list, rt("c2", ns2, "net1", vfBDF(1))); err != nil {
				t.Fatalf("ADD 2: %v", err)
			}
			js, _ := json.Marshal(r1)
			if !strings.Contains(string(js), "198.18.77.") {
				t.Errorf("result %s", js)
			}
			if v == "1.1.0" && !strings.Contains(string(js), `"pciID":"`+vfBDF(0)+`"`) {
				t.Errorf("1.1.0 result lacks pciID: %s", js)
			}
			out2, _ := exec.Command("ip", "-n", filepath.Base(ns2), "-4", "-o", "addr", "show", "net1").CombinedOutput()
			f := strings.Fields(string(out2))
			var peer string
			for i, w := range f {
				if w == "inet" {
					peer = strings.Split(f[i+1], "/")[0]
				}
			}
			if out, err := exec.Command("ip", "netns", "exec", filepath.Base(ns1), "ping", "-c", "1", "-W", "2", peer).CombinedOutput(); err != nil {
				t.Fatalf("ping %s from pod 1: %v\n%s", peer, err, out)
			}
			for i, c := range []string{"c1", "c2"} {
				ns := []string{ns1, ns2}[i]
				if err := e.cni.DelNetworkList(ctx, list, rt(c, ns, "net1", vfBDF(i))); err != nil {
					t.Errorf("DEL %s: %v", c, err)
				}
			}
			if l := leases(t, e.ipamDir); len(l) != 0 {
				t.Errorf("leases left: %v", l)
			}
		})
	}
}

func TestCNIAddDelRestoresHostLink(t *testing.T) {
	e := newCNIEnv(t, 1)
	name := e.vfName(0)
	l, _ := netlink.LinkByName(name)
	netlink.LinkSetAlias(l, "operator-alias")
	netlink.LinkSetMTU(l, 1400)
	before, _ := hostLink(t, name)
	list := e.conflist(t, "1.1.0", map[string]any{"mtu": 1300})
	ns := e.netns(t)
	ctx := context.Background()
	devinfo := filepath.Join(devInfoRoot, "cni", e.tag+"-net1-devinfo.json")
	rc := rt("c1", ns, "net1", vfBDF(0))
	rc.CapabilityArgs["CNIDeviceInfoFile"] = devinfo
	if _, err := e.cni.AddNetworkList(ctx, list, rc); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if _, ok := hostLink(t, name); ok {
		t.Fatal("the netdev is still in the host")
	}
	out, _ := exec.Command("ip", "-n", filepath.Base(ns), "-o", "link", "show", "net1").CombinedOutput()
	if !strings.Contains(string(out), "mtu 1300") || !strings.Contains(string(out), "alias "+name) {
		t.Errorf("in the pod: %s", out)
	}
	info, err := os.ReadFile(devinfo)
	if err != nil || !strings.Contains(string(info), `"pci-address":"`+vfBDF(0)+`"`) || !strings.Contains(string(info), `"pf-pci-address":"`+e.pfBDF+`"`) {
		t.Errorf("device-info file: %s %v", info, err)
	}
	// The pod renames its interface: DEL still finds it by the alias.
	if out, err := exec.Command("ip", "-n", filepath.Base(ns), "link", "set", "net1", "name", "renamed0").CombinedOutput(); err != nil {
		t.Fatalf("rename in the pod: %v %s", err, out)
	}
	if err := e.cni.DelNetworkList(ctx, list, rc); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	after, ok := hostLink(t, name)
	if !ok {
		t.Fatal("not back in the host")
	}
	after.Index, before.Index = 0, 0
	if after != before {
		t.Errorf("host link after DEL %+v, before ADD %+v", after, before)
	}
	if _, err := os.Stat(devinfo); !os.IsNotExist(err) {
		t.Errorf("device-info file left: %v", err)
	}
	// DEL again: still fine.
	if err := e.cni.DelNetworkList(ctx, list, rc); err != nil {
		t.Errorf("second DEL: %v", err)
	}
	if recs, _ := filepath.Glob(filepath.Join(e.state, "records", "*.json")); len(recs) != 0 {
		t.Errorf("records left: %v", recs)
	}
}

func TestCNIDelAfterNetnsDeleted(t *testing.T) {
	e := newCNIEnv(t, 1)
	list := e.conflist(t, "1.0.0", nil)
	ns := e.netns(t)
	ctx := context.Background()
	rc := rt("c1", ns, "net1", vfBDF(0))
	if _, err := e.cni.AddNetworkList(ctx, list, rc); err != nil {
		t.Fatal(err)
	}
	exec.Command("ip", "netns", "del", filepath.Base(ns)).Run()
	if err := e.cni.DelNetworkList(ctx, list, rc); err != nil {
		t.Fatalf("DEL after the netns is gone: %v", err)
	}
	if l := leases(t, e.ipamDir); len(l) != 0 {
		t.Errorf("leases left: %v", l)
	}
	if recs, _ := filepath.Glob(filepath.Join(e.state, "records", "*.json")); len(recs) != 0 {
		t.Errorf("records left: %v", recs)
	}
}

func TestCNICheck(t *testing.T) {
	e := newCNIEnv(t, 1)
	list := e.conflist(t, "1.1.0", nil)
	ns := e.netns(t)
	ctx := context.Background()
	rc := rt("c1", ns, "net1", vfBDF(0))
	if _, err := e.cni.AddNetworkList(ctx, list, rc); err != nil {
		t.Fatal(err)
	}
	if err := e.cni.CheckNetworkList(ctx, list, rc); err != nil {
		t.Fatalf("CHECK of a good attachment: %v", err)
	}
	pod := filepath.Base(ns)
	mac, _ := exec.Command("ip", "-n", pod, "-br", "link", "show", "net1").CombinedOutput()
	exec.Command("ip", "-n", pod, "link", "set", "net1", "address", "02:de:ad:be:ef:01").Run()
	if err := e.cni.CheckNetworkList(ctx, list, rc); err == nil || !strings.Contains(err.Error(), "MAC") {
		t.Errorf("CHECK after a MAC change: %v", err)
	}
	exec.Command("ip", "-n", pod, "link", "set", "net1", "address", strings.Fields(string(mac))[2]).Run()
	if err := e.cni.CheckNetworkList(ctx, list, rc); err != nil {
		t.Fatalf("CHECK after restoring the MAC: %v", err)
	}
	exec.Command("ip", "-n", pod, "addr", "flush", "dev", "net1").Run()
	if err := e.cni.CheckNetworkList(ctx, list, rc); err == nil || !strings.Contains(err.Error(), "address") {
		t.Errorf("CHECK after removing the address: %v", err)
	}
	if err := e.cni.DelNetworkList(ctx, list, rc); err != nil {
		t.Fatal(err)
	}
}

func TestCNIGCFreesEverything(t *testing.T) {
	e := newCNIEnv(t, 2)
	list := e.conflist(t, "1.1.0", nil)
	ctx := context.Background()
	for i := range 3 {
		if _, err := e.cni.AddNetworkList(ctx, list, rt(fmt.Sprintf("c%d", i), e.netns(t), "net1", vfBDF(i))); err != nil {
			t.Fatal(err)
		}
	}
	if l := leases(t, e.ipamDir); len(l) != 3 {
		t.Fatalf("leases before GC: %v", l)
	}
	// Keep c2; everything else goes.
	if err := e.cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: "c2", IfName: "net1"}}}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	for i := range 2 {
		if _, ok := hostLink(t, e.vfName(i)); !ok {
			t.Errorf("%s not returned by GC", e.vfName(i))
		}
	}
	if _, ok := hostLink(t, e.vfName(2)); ok {
		t.Error("GC took a valid attachment's device")
	}
	if l := leases(t, e.ipamDir); len(l) != 1 {
		t.Errorf("leases after GC: %v", l)
	}
	if err := e.cni.GCNetworkList(ctx, list, &libcni.GCArgs{}); err != nil {
		t.Fatalf("GC (empty valid list): %v", err)
	}
	if _, ok := hostLink(t, e.vfName(2)); !ok {
		t.Error("GC with an empty valid list left a device in a pod")
	}
	if l := leases(t, e.ipamDir); len(l) != 0 {
		t.Errorf("leases after GC: %v", l)
	}
	if err := e.cni.GetStatusNetworkList(ctx, list); err != nil {
		t.Errorf("STATUS: %v", err)
	}
}

func TestCNIParallel(t *testing.T) {
	e := newCNIEnv(t, 10)
	list := e.conflist(t, "1.0.0", nil)
	ctx := context.Background()
	nss := make([]string, 20)
	for i := range nss {
		nss[i] = e.netns(t)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rc := rt(fmt.Sprintf("p%d", i), nss[i], "net1", vfBDF(i))
			// One CNIConfig per runtime thread: libcni's lazy init is not
			// safe for concurrent use of one value.
			cni := libcni.NewCNIConfigWithCacheDir([]string{binDir, cniPluginDir}, e.cache, nil)
			if _, err := cni.AddNetworkList(ctx, list, rc); err != nil {
				errs <- fmt.Errorf("ADD %d: %w", i, err)
				return
			}
			if err := cni.DelNetworkList(ctx, list, rc); err != nil {
				errs <- fmt.Errorf("DEL %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := range 20 {
		if _, ok := hostLink(t, e.vfName(i)); !ok {
			t.Errorf("%s not back", e.vfName(i))
		}
	}
	if l := leases(t, e.ipamDir); len(l) != 0 {
		t.Errorf("leases left: %v", l)
	}
}

func TestCNIDeviceInUse(t *testing.T) {
	e := newCNIEnv(t, 1)
	list := e.conflist(t, "1.0.0", nil)
	ctx := context.Background()
	ns1, ns2 := e.netns(t), e.netns(t)
	if _, err := e.cni.AddNetworkList(ctx, list, rt("c1", ns1, "net1", vfBDF(0))); err != nil {
		t.Fatal(err)
	}
	recBefore, _ := os.ReadFile(filepath.Join(e.state, "records", "c1-net1.json"))
	_, err := e.cni.AddNetworkList(ctx, list, rt("c2", ns2, "net1", vfBDF(0)))
	if cniCode(err) != types.ErrTryAgainLater {
		t.Fatalf("ADD of a device in use: %v (code %d), want code 11", err, cniCode(err))
	}
	out, _ := exec.Command("ip", "-n", filepath.Base(ns2), "-o", "link").CombinedOutput()
	if strings.Count(string(out), "\n") != 1 {
		t.Errorf("the second pod got links: %s", out)
	}
	recAfter, _ := os.ReadFile(filepath.Join(e.state, "records", "c1-net1.json"))
	if !bytes.Equal(recBefore, recAfter) {
		t.Error("the holder's record changed")
	}
	if l := leases(t, e.ipamDir); len(l) != 1 {
		t.Errorf("leases: %v", l)
	}
	if err := e.cni.CheckNetworkList(ctx, list, rt("c1", ns1, "net1", vfBDF(0))); err != nil {
		t.Errorf("the holder's attachment broke: %v", err)
	}
}

// The static IPAM plugin with addresses from runtimeConfig.ips (Multus'
// "ips" capability) and a CNI_ARGS-style pod identity.
func TestCNIStaticIPAM(t *testing.T) {
	e := newCNIEnv(t, 1)
	list := e.conflist(t, "1.1.0", map[string]any{
		"capabilities": map[string]bool{"deviceID": true, "ips": true},
		"ipam":         map[string]any{"type": "static"}})
	ns := e.netns(t)
	ctx := context.Background()
	rc := rt("st1", ns, "net1", vfBDF(0))
	rc.CapabilityArgs["ips"] = []string{"198.18.90.7/24"}
	rc.Args = [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "trainer-0"}} // as CRI runtimes pass them
	res, err := e.cni.AddNetworkList(ctx, list, rc)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if js, _ := json.Marshal(res); !strings.Contains(string(js), "198.18.90.7/24") {
		t.Errorf("result: %s", js)
	}
	out, _ := exec.Command("ip", "-n", filepath.Base(ns), "-4", "-o", "addr", "show", "net1").CombinedOutput()
	if !strings.Contains(string(out), "198.18.90.7/24") {
		t.Errorf("address in the pod: %s", out)
	}
	if err := e.cni.DelNetworkList(ctx, list, rc); err != nil {
		t.Fatal(err)
	}
	if _, ok := hostLink(t, e.vfName(0)); !ok {
		t.Error("not back")
	}
}

// The DaemonSet's reconciler releases the attachments whose pod netns is
// gone (Multus never sends GC for secondary networks) and leaves live ones.
func TestReconcilerReleasesOrphans(t *testing.T) {
	e := newCNIEnv(t, 2) // VFs 0 and 2: ends of different veth pairs
	list := e.conflist(t, "1.1.0", nil)
	ctx := context.Background()
	ns1, ns2 := e.netns(t), e.netns(t)
	for i, ns := range []string{ns1, ns2} {
		if _, err := e.cni.AddNetworkList(ctx, list, rt(fmt.Sprintf("r%d", i), ns, "net1", vfBDF(2*i))); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("ip", "netns", "del", filepath.Base(ns1)).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	r := &agent.Reconciler{StateDir: e.state, CNIBinary: filepath.Join(binDir, "railnet"), CNIPath: cniPluginDir + ":" + binDir}
	n, err := r.Once(ctx)
	if err != nil || n != 1 {
		t.Fatalf("reconciler released %d: %v", n, err)
	}
	if _, err := os.Stat(filepath.Join(e.state, "records", "r0-net1.json")); !os.IsNotExist(err) {
		t.Errorf("orphan's record: %v", err)
	}
	if l := leases(t, e.ipamDir); len(l) != 1 {
		t.Errorf("leases after reconcile: %v", l)
	}
	if err := e.cni.CheckNetworkList(ctx, list, rt("r1", ns2, "net1", vfBDF(2))); err != nil {
		t.Errorf("the live attachment broke: %v", err)
	}
	if n, err := r.Once(ctx); err != nil || n != 0 {
		t.Errorf("second pass released %d: %v", n, err)
	}
}

// Addresses and routes in the pod are what the reference host-device
// plugin (v1.10.0, ipam.ConfigureIface) makes of the same IPAM result:
// IPv4 and IPv6 with gateways, routes with and without their own gateway,
// a metric, link up, IPv6 enabled; railnet configures them itself.
func TestCNIAddressesAndRoutesAsReference(t *testing.T) {
	e := newCNIEnv(t, 1)
	ipam := map[string]any{"type": "static",
		"addresses": []any{
			map[string]string{"address": "198.18.91.7/24", "gateway": "198.18.91.1"},
			map[string]string{"address": "fd00:91::7/64", "gateway": "fd00:91::1"},
		},
		"routes": []any{
			map[string]any{"dst": "198.18.200.0/24"},
			map[string]any{"dst": "198.18.201.0/24", "gw": "198.18.91.254", "priority": 77},
			map[string]any{"dst": "fd00:200::/48"},
			map[string]any{"dst": "0.0.0.0/0"},
		}}
	view := func(ns string) string {
		var out []string
		for _, args := range [][]string{{"-4", "-o", "addr", "show", "net1"}, {"-6", "-o", "addr", "show", "net1", "scope", "global"},
			{"-4", "route", "show", "dev", "net1"}, {"-6", "route", "show", "dev", "net1"}, {"-o", "link", "show", "net1"}} {
			b, err := exec.Command("ip", append([]string{"-n", filepath.Base(ns)}, args...)...).CombinedOutput()
			if err != nil {
				t.Fatalf("ip %v: %v %s", args, err, b)
			}
			for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				f := strings.Fields(l)
				switch {
				case len(f) > 3 && f[2] == "inet" || len(f) > 3 && f[2] == "inet6":
					out = append(out, f[2]+" "+f[3]) // family and address/prefix
				case strings.Contains(l, "mtu"):
					out = append(out, "link up "+fmt.Sprint(strings.Contains(l, ",UP")))
				case strings.HasPrefix(l, "fe80::/64"):
				default:
					l = strings.Join(strings.Fields(strings.ReplaceAll(l, "pref medium", "")), " ")
					out = append(out, "route "+l)
				}
			}
		}
		slices.Sort(out)
		return strings.Join(out, "\n")
	}
	var got []string
	for _, plugin := range []string{"railnet", "host-device"} {
		extra := map[string]any{"type": plugin, "ipam": ipam}
		if plugin == "host-device" {
			extra["device"], extra["sysfsRoot"], extra["stateDir"], extra["capabilities"] = e.vfName(0), nil, nil, nil
		}
		list := e.conflist(t, "1.0.0", extra)
		ns := e.netns(t)
		rc := rt("ar-"+plugin, ns, "net1", vfBDF(0))
		if _, err := e.cni.AddNetworkList(context.Background(), list, rc); err != nil {
			t.Fatalf("%s ADD: %v", plugin, err)
		}
		got = append(got, view(ns))
		if err := e.cni.DelNetworkList(context.Background(), list, rc); err != nil {
			t.Fatalf("%s DEL: %v", plugin, err)
		}
	}
	if got[0] != got[1] {
		t.Fatalf("railnet's pod:\n%s\n\nhost-device's:\n%s", got[0], got[1])
	}
	for _, want := range []string{"inet 198.18.91.7/24", "inet6 fd00:91::7/64", "link up true", "via 198.18.91.254", "metric 77",
		"route default via 198.18.91.1", "route fd00:200::/48 via fd00:91::1"} {
		if !strings.Contains(got[0], want) {
			t.Errorf("pod lacks %q:\n%s", want, got[0])
		}
	}
}
