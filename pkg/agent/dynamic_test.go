package agent_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/railnet/railnet/pkg/agent"
	"github.com/railnet/railnet/pkg/deviceplugin"
	"github.com/railnet/railnet/pkg/deviceplugin/kubelettest"
	"github.com/railnet/railnet/pkg/fakesys"
	"github.com/railnet/railnet/pkg/fakesys/fakesystest"
	"github.com/railnet/railnet/pkg/sysfs"
)

func health(l []*pluginapi.Device) map[string]string {
	m := map[string]string{}
	for _, d := range l {
		m[d.ID] = d.Health
	}
	return m
}

// replaceTree swaps the contents of a materialized tree for those of another
// machine, in place, as a kernel changes sysfs under a running daemon.
func replaceTree(t *testing.T, tree fakesys.Tree, m *fakesys.Machine) {
	t.Helper()
	next, err := fakesys.Materialize(m, fakesystest.TempDir(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, pair := range [][2]string{{tree.Sys, next.Sys}, {tree.Dev, next.Dev}} {
		old, _ := os.ReadDir(pair[0])
		for _, e := range old {
			if err := os.RemoveAll(filepath.Join(pair[0], e.Name())); err != nil {
				t.Fatal(err)
			}
		}
		fresh, _ := os.ReadDir(pair[1])
		for _, e := range fresh {
			if err := os.Rename(filepath.Join(pair[1], e.Name()), filepath.Join(pair[0], e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestListAndWatchFollowsSysfs(t *testing.T) {
	e := start(t, "dgx-h100-like", h100Config)
	reg := e.kubelet.WaitRegistration(t, "railnet.io/storage", 5*time.Second)
	p := e.kubelet.Dial(t, reg.Endpoint)
	watch := p.Watch(t)
	first := kubelettest.Next(t, watch, 2*time.Second, func([]*pluginapi.Device) bool { return true })
	if len(first) != 6 {
		t.Fatalf("storage pool: %v", first)
	}
	pfDir := func(bdf string) string {
		d, err := filepath.EvalSymlinks(filepath.Join(e.tree.Sys, "bus/pci/devices", bdf))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	// 1. The PF aa:00.1 goes down: its four VFs turn Unhealthy.
	oper := filepath.Join(pfDir("0000:aa:00.1"), "net/enp170s0f1np1/operstate")
	os.Remove(oper)
	os.WriteFile(oper, []byte("down\n"), 0o444)
	e.agent.Trigger()
	kubelettest.Next(t, watch, 2*time.Second, func(l []*pluginapi.Device) bool {
		h := health(l)
		return h["0000:aa:02.2"] == pluginapi.Unhealthy && h["0000:aa:02.5"] == pluginapi.Unhealthy && h["0000:29:02.2"] == pluginapi.Healthy
	})
	// ... and back up: Healthy again.
	os.Remove(oper)
	os.WriteFile(oper, []byte("up\n"), 0o444)
	e.agent.Trigger()
	kubelettest.Next(t, watch, 2*time.Second, func(l []*pluginapi.Device) bool {
		return health(l)["0000:aa:02.2"] == pluginapi.Healthy
	})
	// 2. A VF's PCI function vanishes: still listed, Unhealthy.
	vf := pfDir("0000:29:02.3")
	os.Remove(filepath.Join(e.tree.Sys, "bus/pci/devices/0000:29:02.3"))
	os.RemoveAll(vf)
	e.agent.Trigger()
	l := kubelettest.Next(t, watch, 2*time.Second, func(l []*pluginapi.Device) bool {
		return health(l)["0000:29:02.3"] == pluginapi.Unhealthy
	})
	if len(l) != 6 {
		t.Errorf("vanished VF not kept: %v", l)
	}
	if _, err := os.Stat(filepath.Join(e.devinfo, "railnet.io-storage-0000:29:02.3-device.json")); !os.IsNotExist(err) {
		t.Errorf("device-info file of a vanished VF: %v", err)
	}
	// 3. sriov_numvfs raised on enp170s0f1np1 (4 → 6): the new VFs appear without a restart.
	m := fakesystest.Load(t, "dgx-h100-like")
	for i := range m.Roots {
		for j := range m.Roots[i].Children {
			raiseVFs(&m.Roots[i].Children[j], "0000:aa:00.1", 6)
		}
	}
	m.Expected.Inventory.VFs += 2
	m.Expected.Inventory.Netdevs += 2
	m.Expected.Inventory.RDMADevices += 2
	replaceTree(t, e.tree, m)
	e.agent.Trigger()
	l = kubelettest.Next(t, watch, 2*time.Second, func(l []*pluginapi.Device) bool {
		h := health(l)
		return h["0000:aa:02.6"] == pluginapi.Healthy && h["0000:aa:02.7"] == pluginapi.Healthy
	})
	// The vanished VF is back with the fresh tree.
	if health(l)["0000:29:02.3"] != pluginapi.Healthy || len(l) != 8 {
		t.Errorf("after numvfs raise: %v", l)
	}
}

func raiseVFs(n *fakesys.Node, bdf string, num int) {
	if n.BDF == bdf && n.SRIOV != nil {
		n.SRIOV.NumVFs = num
	}
	for i := range n.Children {
		raiseVFs(&n.Children[i], bdf, num)
	}
}

func TestKubeletRestart(t *testing.T) {
	e := start(t, "dgx-h100-like", h100Config)
	waitAll(t, e.kubelet, allResources()...)
	e.kubelet.Restart(t)
	// How fast is BenchmarkReregisterAfterKubeletRestart's business, not a
	// test's: here, that every pool comes back.
	regs := waitAll(t, e.kubelet, allResources()...)
	// The sockets are back and serve.
	p := e.kubelet.Dial(t, regs["railnet.io/rail2"].Endpoint)
	l := kubelettest.Next(t, p.Watch(t), 2*time.Second, func([]*pluginapi.Device) bool { return true })
	if len(l) != 8 {
		t.Errorf("rail2 after restart: %v", l)
	}
}

func TestKubeletAbsentThenRefusingThenBack(t *testing.T) {
	e := start(t, "mixed-ib-eth-gpu-noswitch", `{"pools":[{"name":"ib","selectors":{"linkTypes":["infiniband"]}}]}`)
	e.kubelet.WaitRegistration(t, "railnet.io/ib", 5*time.Second)
	e.kubelet.Refuse(kubelettest.ErrRefused)
	e.kubelet.Restart(t)
	// Several refused attempts (backoff retries), counted, not slept for.
	for deadline := time.Now().Add(10 * time.Second); e.kubelet.Refused() < 3; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d refused Register calls, want retries", e.kubelet.Refused())
		}
	}
	if e.mgr.Registered("ib") {
		t.Fatal("registered although the kubelet refuses")
	}
	e.kubelet.Refuse(nil)
	e.kubelet.WaitRegistration(t, "railnet.io/ib", 3*time.Second)
}

func TestReloadBadConfigKeepsServing(t *testing.T) {
	e := start(t, "dgx-h100-like", `{"pools":[{"name":"ib","selectors":{"linkTypes":["infiniband"]}}]}`)
	e.kubelet.WaitRegistration(t, "railnet.io/ib", 5*time.Second)
	// A bad config (unknown field) written to the file: refused, "ib" keeps serving.
	os.WriteFile(e.cfg, []byte(`{"pools":[{"name":"ib","selectors":{"linkTypes":["infiniband"]},"bogus":1}]}`), 0o644)
	if err := e.agent.Reload(); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("reload of a config with an unknown field: %v", err)
	}
	// A config with a device in two pools: refused too.
	if err := os.WriteFile(e.cfg, []byte(`{"pools":[{"name":"a","selectors":{"pfNames":["ibp24s0#0-3"]}},{"name":"b","selectors":{"pfNames":["ibp24s0#3"]}}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.agent.Reload(); err == nil || !strings.Contains(err.Error(), "0000:18:00.4") {
		t.Fatalf("overlapping reload: %v", err)
	}
	if got := e.mgr.Pools(); len(got) != 1 || got[0] != "ib" || e.agent.Config().Pools[0].Name != "ib" {
		t.Fatalf("after bad reloads: pools %v", got)
	}
	// A good config: picked up from the file change alone.
	os.WriteFile(e.cfg, []byte(`{"pools":[{"name":"eth","selectors":{"linkTypes":["ether"]}}]}`), 0o644)
	e.kubelet.WaitRegistration(t, "railnet.io/eth", 10*time.Second)
	for deadline := time.Now().Add(10 * time.Second); len(e.mgr.Pools()) != 1 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if got := e.mgr.Pools(); len(got) != 1 || got[0] != "eth" {
		t.Errorf("after good reload: %v", got)
	}
	if _, err := os.Stat(filepath.Join(e.kubelet.Dir, "railnet-ib.sock")); !os.IsNotExist(err) {
		t.Errorf("old pool's socket still there: %v", err)
	}
}

func TestStartRefusesOverlap(t *testing.T) {
	_, tree := fakesystest.Build(t, "dgx-h100-like")
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(cfg, []byte("railPools: true\npools:\n- name: mine\n  selectors:\n    pfNames: [\"ibp24s0#0\"]\n"), 0o644)
	sys, _ := sysfs.New(tree.Sys)
	defer sys.Close()
	_, err := agent.New(agent.Options{ConfigPath: cfg, Sys: sys, Manager: deviceplugin.NewManager(deviceplugin.Options{KubeletDir: t.TempDir()})})
	if err == nil || !strings.Contains(err.Error(), `"mine" and "rail0"`) {
		t.Fatalf("overlap with a rail pool: %v", err)
	}
	os.WriteFile(cfg, []byte("pools:\n- name: x\n  selectors:\n    pfNames: [\"ibp24s0#4-2\"]\n"), 0o644)
	if _, err := agent.New(agent.Options{ConfigPath: cfg, Sys: sys}); err == nil || !strings.Contains(err.Error(), "pfNames[0]") {
		t.Fatalf("bad range: %v", err)
	}
	if _, err := agent.New(agent.Options{ConfigPath: filepath.Join(t.TempDir(), "missing"), Sys: sys}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing config: %v", err)
	}
}

func TestMetrics(t *testing.T) {
	_, tree := fakesystest.Build(t, "dgx-h100-like")
	sys, _ := sysfs.New(tree.Sys)
	defer sys.Close()
	cfg := filepath.Join(t.TempDir(), "c.json")
	os.WriteFile(cfg, []byte(`{"pools":[{"name":"eth","selectors":{"linkTypes":["ether"],"numaNodes":[0]}}]}`), 0o644)
	metrics := deviceplugin.NewMetrics()
	kdir := t.TempDir()
	k := kubelettest.Start(t, kdir)
	mgr := deviceplugin.NewManager(deviceplugin.Options{KubeletDir: kdir, DevInfoDir: "-", Metrics: metrics})
	defer mgr.Close()
	a, err := agent.New(agent.Options{ConfigPath: cfg, Sys: sys, Manager: mgr, Metrics: metrics})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Rescan(); err != nil {
		t.Fatal(err)
	}
	k.WaitRegistration(t, "railnet.io/eth", 3*time.Second)
	out, err := testutil.GatherAndCount(metrics.Registry, "railnet_pool_devices", "railnet_scan_duration_seconds", "railnet_pool_registered")
	if err != nil || out < 4 {
		t.Fatalf("series: %d, %v", out, err)
	}
	want := `
# HELP railnet_pool_devices Devices advertised per pool and health.
# TYPE railnet_pool_devices gauge
railnet_pool_devices{health="Healthy",pool="eth",resource="railnet.io/eth"} 4
railnet_pool_devices{health="Unhealthy",pool="eth",resource="railnet.io/eth"} 4
`
	if err := testutil.GatherAndCompare(metrics.Registry, strings.NewReader(want), "railnet_pool_devices"); err != nil {
		t.Error(err)
	}
}
