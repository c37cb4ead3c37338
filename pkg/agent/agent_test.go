package agent_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/railnet/railnet/pkg/agent"
	"github.com/railnet/railnet/pkg/deviceinfo"
	"github.com/railnet/railnet/pkg/deviceplugin"
	"github.com/railnet/railnet/pkg/deviceplugin/kubelettest"
	"github.com/railnet/railnet/pkg/fakesys"
	"github.com/railnet/railnet/pkg/fakesys/fakesystest"
)

const h100Config = `{
  "railPools": true,
  "pools": [
    {"name": "storage", "selectors": {"pfNames": ["enp41s0f1np1#0-1", "enp170s0f1np1"]}},
    {"name": "hca", "kind": "rdma", "shared": 4, "selectors": {"linkTypes": ["ether"], "pfNames": ["enp41s0f0np0", "enp170s0f0np0"]}}
  ]
}`

type env struct {
	tree    fakesys.Tree
	kubelet *kubelettest.Kubelet
	mgr     *deviceplugin.Manager
	agent   *agent.Agent
	cfg     string
	devinfo string
	cdi     string
	cancel  context.CancelFunc
	done    chan error
	reload  chan struct{}
	metrics *deviceplugin.Metrics
}

func start(t testing.TB, fixture, config string) *env {
	t.Helper()
	_, tree := fakesystest.Build(t, fixture)
	base := fakesystest.TempDir(t)
	e := &env{tree: tree, cfg: filepath.Join(base, "config.json"), devinfo: filepath.Join(base, "devinfo"),
		done: make(chan error, 1), reload: make(chan struct{}, 1)}
	kdir := filepath.Join(base, "kubelet")
	os.MkdirAll(kdir, 0o755)
	if err := os.WriteFile(e.cfg, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	e.kubelet = kubelettest.Start(t, kdir)
	sys, dev := fakesystest.Open(t, tree)
	metrics := deviceplugin.NewMetrics()
	e.metrics = metrics
	e.cdi = filepath.Join(base, "cdi")
	e.mgr = deviceplugin.NewManager(deviceplugin.Options{KubeletDir: kdir, DevInfoDir: e.devinfo, CDI: true, CDIDir: e.cdi,
		DevfsRoot: tree.Dev, Metrics: metrics, RegisterBackoff: 20 * time.Millisecond, RegisterBackoffMax: 200 * time.Millisecond})
	var err error
	e.agent, err = agent.New(agent.Options{ConfigPath: e.cfg, Sys: sys, Dev: dev, Manager: e.mgr, Metrics: metrics,
		RescanInterval: time.Hour, MinInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	mdone := make(chan error, 1)
	go func() { mdone <- e.mgr.Run(ctx) }()
	go func() {
		err := e.agent.Run(ctx, e.reload)
		<-mdone
		e.done <- err
	}()
	t.Cleanup(e.stop)
	return e
}

func (e *env) stop() {
	if e.cancel != nil {
		e.cancel()
		<-e.done
		e.cancel = nil
	}
}

func waitAll(t testing.TB, k *kubelettest.Kubelet, resources ...string) map[string]*pluginapi.RegisterRequest {
	t.Helper()
	got := map[string]*pluginapi.RegisterRequest{}
	deadline := time.Now().Add(5 * time.Second)
	missing := func() bool {
		for _, res := range resources {
			if got[res] == nil {
				return true
			}
		}
		return false
	}
	for missing() && time.Now().Before(deadline) {
		r := k.WaitRegistration(t, "", time.Until(deadline))
		got[r.ResourceName] = r
	}
	for _, res := range resources {
		if got[res] == nil {
			t.Fatalf("%s never registered; got %v", res, got)
		}
	}
	return got
}

func allResources() []string {
	out := []string{"railnet.io/storage", "railnet.io/hca"}
	for i := range 8 {
		out = append(out, "railnet.io/rail"+string(rune('0'+i)))
	}
	return out
}

func TestRegistersEveryPoolAndServesIt(t *testing.T) {
	e := start(t, "dgx-h100-like", h100Config)
	regs := waitAll(t, e.kubelet, allResources()...)
	for res, r := range regs {
		if r.Version != pluginapi.Version || !r.Options.GetPreferredAllocationAvailable || !strings.HasSuffix(r.Endpoint, ".sock") {
			t.Errorf("%s: registration %+v", res, r)
		}
	}
	p := e.kubelet.Dial(t, regs["railnet.io/rail0"].Endpoint)
	list := kubelettest.Next(t, p.Watch(t), 2*time.Second, func([]*pluginapi.Device) bool { return true })
	if len(list) != 8 || list[0].ID != "0000:18:00.1" || list[0].Health != pluginapi.Healthy || list[0].Topology.Nodes[0].ID != 0 {
		t.Fatalf("rail0 list: %v", list)
	}
	// Device-info files for every advertised device, 0444, spec 1.1.0:
	// written once the pools serve and register, so not necessarily yet.
	want := 4*8 + 4 + 2*4 + 6 // rails: 4 HCAs x 8 VFs + 4 PFs without VFs; hca 2 x 4 slots; storage 2+4
	var files []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		files, _ = filepath.Glob(filepath.Join(e.devinfo, "*.json"))
		if len(files) >= want || time.Now().After(deadline) {
			break
		}
	}
	if len(files) != want {
		t.Errorf("%d device-info files, want %d", len(files), want)
	}
	f := filepath.Join(e.devinfo, "railnet.io-rail0-0000:18:00.1-device.json")
	st, err := os.Stat(f)
	if err != nil || st.Mode().Perm() != 0o444 {
		t.Fatalf("device-info file: %v %v", st, err)
	}
	info, err := deviceinfo.Read(f)
	if err != nil || info.Version != "1.1.0" || info.Type != "pci" || info.PCI.PCIAddress != "0000:18:00.1" ||
		info.PCI.RDMADevice != "mlx5_12" || info.PCI.PFPCIAddress != "0000:18:00.0" {
		t.Errorf("device-info = %+v %+v, %v", info, info.PCI, err)
	}
	// A rescan that changes nothing rewrites no device-info file.
	before, _ := os.Stat(f)
	if err := e.agent.Rescan(); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.Stat(f); !os.SameFile(before, after) {
		t.Error("an unchanged device-info file was recreated by a rescan")
	}
	specPath := filepath.Join(e.cdi, "railnet.io-rail0.json")
	specBefore, _ := os.Stat(specPath)
	if err := e.agent.Rescan(); err != nil {
		t.Fatal(err)
	}
	if specAfter, _ := os.Stat(specPath); specBefore == nil || !os.SameFile(specBefore, specAfter) {
		t.Error("an unchanged CDI spec was rewritten by a rescan")
	}
	// The CDI spec of the pool names every device with its character devices.
	var spec struct {
		Kind    string `json:"kind"`
		Devices []struct {
			Name  string `json:"name"`
			Edits struct {
				DeviceNodes []struct{ Path, HostPath string } `json:"deviceNodes"`
			} `json:"containerEdits"`
		} `json:"devices"`
	}
	b, err := os.ReadFile(filepath.Join(e.cdi, "railnet.io-rail0.json"))
	if err != nil || json.Unmarshal(b, &spec) != nil || spec.Kind != "railnet.io/rail0" || len(spec.Devices) != 8 ||
		spec.Devices[0].Name != "0000:18:00.1" || len(spec.Devices[0].Edits.DeviceNodes) != 4 {
		t.Errorf("CDI spec: %v %s", err, b)
	} else if n := spec.Devices[0].Edits.DeviceNodes[0]; n.Path != "/dev/infiniband/uverbs12" || n.HostPath != filepath.Join(e.tree.Dev, "infiniband/uverbs12") {
		t.Errorf("CDI device node %+v: want /dev/infiniband/uverbs12 from %s", n, e.tree.Dev)
	}
	// Shutdown removes sockets and files.
	e.stop()
	files, _ = filepath.Glob(filepath.Join(e.devinfo, "*.json"))
	socks, _ := filepath.Glob(filepath.Join(e.kubelet.Dir, "railnet-*.sock"))
	specs, _ := filepath.Glob(filepath.Join(e.cdi, "*.json"))
	if len(files) != 0 || len(socks) != 0 || len(specs) != 0 {
		t.Errorf("after shutdown: %d device-info files, sockets %v, CDI specs %v", len(files), socks, specs)
	}
}

func TestAllocate(t *testing.T) {
	e := start(t, "dgx-h100-like", h100Config)
	regs := waitAll(t, e.kubelet, "railnet.io/rail0", "railnet.io/hca", "railnet.io/storage")
	p := e.kubelet.Dial(t, regs["railnet.io/rail0"].Endpoint)
	resp, err := p.Allocate(context.Background(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
		{DevicesIds: []string{"0000:18:00.1", "0000:18:00.3"}}}})
	if err != nil {
		t.Fatal(err)
	}
	c := resp.ContainerResponses[0]
	if got := c.Envs["PCIDEVICE_RAILNET_IO_RAIL0"]; got != "0000:18:00.1,0000:18:00.3" {
		t.Errorf("PCIDEVICE env = %q", got)
	}
	if got := c.Envs["NCCL_IB_HCA"]; got != "=mlx5_12,mlx5_14" {
		t.Errorf("NCCL_IB_HCA = %q", got)
	}
	// InfiniBand: GID 0 is the port's, known ahead.
	if got, ok := c.Envs["NCCL_IB_GID_INDEX"]; got != "0" || !ok {
		t.Errorf("NCCL_IB_GID_INDEX = %q (set %v) on an InfiniBand rail", got, ok)
	}
	// RoCE (the shared hca pool's slots): the GID index follows the pod's
	// address, unknown ahead; not set.
	hp := e.kubelet.Dial(t, regs["railnet.io/hca"].Endpoint)
	hr, err := hp.Allocate(context.Background(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
		{DevicesIds: []string{"0000:29:00.0#0"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if hc := hr.ContainerResponses[0]; hc.Envs["NCCL_IB_HCA"] != "=mlx5_1" || hc.Envs["NCCL_IB_GID_INDEX"] != "" {
		t.Errorf("shared RoCE slot: NCCL_IB_HCA %q, NCCL_IB_GID_INDEX %q", hc.Envs["NCCL_IB_HCA"], hc.Envs["NCCL_IB_GID_INDEX"])
	}
	var info map[string]map[string]any
	if err := json.Unmarshal([]byte(c.Envs["PCIDEVICE_RAILNET_IO_RAIL0_INFO"]), &info); err != nil || info["0000:18:00.3"]["pci"].(map[string]any)["rdma-device"] != "mlx5_14" {
		t.Errorf("_INFO = %s (%v)", c.Envs["PCIDEVICE_RAILNET_IO_RAIL0_INFO"], err)
	}
	// Pods see /dev/infiniband/...; the runtime opens the node's devfs
	// root (here the mocked tree's).
	var paths []string
	for _, d := range c.Devices {
		paths = append(paths, d.ContainerPath)
		if d.HostPath != filepath.Join(e.tree.Dev, strings.TrimPrefix(d.ContainerPath, "/dev/")) || d.Permissions != "rw" {
			t.Errorf("device spec %+v: host path not below the devfs root %s", d, e.tree.Dev)
		}
		if _, err := os.Stat(d.HostPath); err != nil {
			t.Errorf("device spec host path: %v", err)
		}
	}
	// VF0 of mlx5_0 is mlx5_12: uverbs/umad/issm 12 (PF RDMA devices first, 0-11).
	want := []string{"/dev/infiniband/uverbs12", "/dev/infiniband/umad12", "/dev/infiniband/issm12",
		"/dev/infiniband/uverbs14", "/dev/infiniband/umad14", "/dev/infiniband/issm14", "/dev/infiniband/rdma_cm"}
	if !slices.Equal(paths, want) {
		t.Errorf("devices %v, want %v", paths, want)
	}
	if len(c.CdiDevices) != 2 || c.CdiDevices[0].Name != "railnet.io/rail0=0000:18:00.1" {
		t.Errorf("CDI = %v", c.CdiDevices)
	}
	// An ID of another pool is refused.
	if _, err := p.Allocate(context.Background(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
		{DevicesIds: []string{"0000:29:02.2"}}}}); err == nil {
		t.Error("Allocate of a foreign device succeeded")
	}
}

func TestGetPreferredAllocation(t *testing.T) {
	cfg := `{"pools":[{"name":"ib","selectors":{"linkTypes":["infiniband"]}}]}`
	e := start(t, "dgx-h100-like", cfg)
	reg := e.kubelet.WaitRegistration(t, "railnet.io/ib", 5*time.Second)
	p := e.kubelet.Dial(t, reg.Endpoint)
	list := kubelettest.Next(t, p.Watch(t), 2*time.Second, func([]*pluginapi.Device) bool { return true })
	var avail []string
	for _, d := range list {
		avail = append(avail, d.ID)
	}
	ask := func(must []string, n int) []string {
		t.Helper()
		r, err := p.GetPreferredAllocation(context.Background(), &pluginapi.PreferredAllocationRequest{ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{
			{AvailableDeviceIDs: avail, MustIncludeDeviceIDs: must, AllocationSize: int32(n)}}})
		if err != nil {
			t.Fatal(err)
		}
		return r.ContainerResponses[0].DeviceIDs
	}
	numa := func(id string) int {
		for _, d := range list {
			if d.ID == id {
				if d.Topology == nil {
					return -1
				}
				return int(d.Topology.Nodes[0].ID)
			}
		}
		return -2
	}
	pf := func(id string) string {
		if !strings.HasPrefix(id, "0000:") {
			return id
		}
		return id[:10] // bus: on this host each HCA and its VFs share a bus
	}
	// Four devices: one NUMA node, four distinct PFs (rails).
	got := ask(nil, 4)
	pfs := map[string]bool{}
	for _, id := range got {
		if numa(id) != numa(got[0]) {
			t.Errorf("%v spans NUMA nodes", got)
		}
		pfs[pf(id)] = true
	}
	if len(got) != 4 || len(pfs) != 4 {
		t.Errorf("preferred %v: want 4 devices on 4 PFs", got)
	}
	// Must-include on NUMA 1 pulls the set there.
	got = ask([]string{"0000:9a:00.1"}, 3)
	if got[0] != "0000:9a:00.1" || numa(got[1]) != 1 || numa(got[2]) != 1 || pf(got[1]) == pf(got[0]) || pf(got[1]) == pf(got[2]) {
		t.Errorf("with must-include: %v", got)
	}
	// Asking for more than is available is an error.
	if _, err := p.GetPreferredAllocation(context.Background(), &pluginapi.PreferredAllocationRequest{ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{
		{AvailableDeviceIDs: avail[:2], AllocationSize: 3}}}); err == nil {
		t.Error("oversized request succeeded")
	}
}

// Every scan exports doctor's findings as railnet_doctor_findings; the
// devices stay Healthy (a slow link works).
func TestDoctorMetrics(t *testing.T) {
	e := start(t, "doctor-planted", `{"railPools": true}`)
	e.kubelet.WaitRegistration(t, "railnet.io/rail0", 5*time.Second)
	want := []string{"acs error 0000:02:00.0", "gpudirect warn node", "iommu warn 0000:03:00.0", "numa warn 0000:83:00.0",
		"numa warn 0000:84:00.0", "pcie-link warn 0000:83:00.0", "rail-consistency warn 0000:84:00.0"}
	var got []string
	// Doctor runs beside the scan, off the registration path.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if got = doctorFindings(t, e); slices.Equal(got, want) {
			break
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("railnet_doctor_findings:\n%v\nwant\n%v", got, want)
	}
}

func doctorFindings(t *testing.T, e *env) []string {
	families, err := e.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range families {
		if mf.GetName() != "railnet_doctor_findings" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			got = append(got, l["check"]+" "+l["severity"]+" "+l["device"])
		}
	}
	slices.Sort(got)
	return got
}

// Each doctor finding is logged once, when it first appears, not on every
// scan.
func TestDoctorLogsNewFindingsOnce(t *testing.T) {
	_, tree := fakesystest.Build(t, "doctor-planted")
	sys, dev := fakesystest.Open(t, tree)
	var logs lockedBuffer
	kdir := t.TempDir()
	mgr := deviceplugin.NewManager(deviceplugin.Options{KubeletDir: kdir, DevInfoDir: "-"})
	defer mgr.Close()
	a, err := agent.New(agent.Options{Sys: sys, Dev: dev, Manager: mgr, Metrics: deviceplugin.NewMetrics(),
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := a.Rescan(); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(logs.String(), `"msg":"doctor: link trained at 16.0 GT/s PCIe x16`); n != 1 {
		t.Errorf("the pcie-link finding was logged %d times over 3 scans, want once:\n%s", n, logs.String())
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
