// Package e2e runs railnet's binaries as a node would: built with
// `go build`, pointed at mocked sysfs trees, talking to a fake kubelet over
// real unix sockets.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	cniconfig "github.com/railnet/railnet/pkg/cni/config"
	"github.com/railnet/railnet/pkg/deviceplugin/kubelettest"
	"github.com/railnet/railnet/pkg/fakesys"
	"github.com/railnet/railnet/pkg/fakesys/fakesystest"
)

var binDir, cniPluginDir, devInfoRoot string

// cniPlugins are the reference plugins the CNI tests delegate to (IPAM) or
// compare with (host-device), at the version the issue names.
var cniPlugins = []string{
	"github.com/containernetworking/plugins/plugins/ipam/host-local@v1.10.0",
	"github.com/containernetworking/plugins/plugins/ipam/static@v1.10.0",
	"github.com/containernetworking/plugins/plugins/main/host-device@v1.10.0",
	"github.com/containernetworking/plugins/plugins/main/macvlan@v1.10.0",
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "railnet-e2e-bin-")
	if err != nil {
		panic(err)
	}
	binDir = dir
	cmd := exec.Command("go", "build", "-o", dir+"/", "../cmd/...")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		os.Exit(1)
	}
	// The CNI tests give each attachment its own mocked sysfs tree and state
	// directory in the netconf, as only a node that allows it may; the
	// devices of those trees are advertised by no device plugin.
	nodeFile := filepath.Join(dir, "cni.json")
	devInfoRoot = filepath.Join(dir, "devinfo")
	node, _ := json.Marshal(map[string]any{"allowNetconfPaths": true, "allowUnadvertisedDevices": true, "deviceInfoRoot": devInfoRoot})
	if err := os.WriteFile(nodeFile, node, 0o644); err != nil {
		panic(err)
	}
	os.Setenv(cniconfig.EnvNodeFile, nodeFile)
	cniPluginDir = filepath.Join(dir, "cni")
	if prebuilt := os.Getenv("RAILNET_CNI_PLUGINS"); prebuilt != "" {
		cniPluginDir = prebuilt
	} else {
		inst := exec.Command("go", append([]string{"install"}, cniPlugins...)...)
		inst.Env = append(os.Environ(), "GOBIN="+cniPluginDir, "GOFLAGS=-mod=mod")
		inst.Dir = os.TempDir() // outside our module: the plugins' own go.mod decides their deps
		inst.Stdout, inst.Stderr = os.Stderr, os.Stderr
		if err := inst.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "install CNI plugins:", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type daemon struct {
	cmd     *exec.Cmd
	kubelet *kubelettest.Kubelet
	devinfo string
	config  string
	metrics string
	logs    *logBuffer
	cniDir  string
	started time.Time // when the process was started (the tree is built before)
	tree    fakesys.Tree
}

// logBuffer is the daemon's stderr: every line kept (under a lock: the
// writer is exec's copying goroutine) and offered to waitLog.
type logBuffer struct {
	lines   chan string
	mu      sync.Mutex
	all     strings.Builder
	partial []byte
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.all.Write(p)
	b.partial = append(b.partial, p...)
	for {
		i := bytes.IndexByte(b.partial, '\n')
		if i < 0 {
			break
		}
		line := string(b.partial[:i])
		b.partial = b.partial[i+1:]
		select {
		case b.lines <- line:
		default:
		}
	}
	return len(p), nil
}

// String is everything logged so far.
func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.all.String()
}

func freePort(tb testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startDaemon(tb testing.TB, fixture, config string, extra ...string) *daemon {
	tb.Helper()
	_, tree := fakesystest.Build(tb, fixture)
	base := fakesystest.TempDir(tb)
	d := &daemon{devinfo: filepath.Join(base, "devinfo"), config: filepath.Join(base, "config.yaml"),
		metrics: freePort(tb), cniDir: filepath.Join(base, "cni-bin"), tree: tree}
	os.MkdirAll(d.cniDir, 0o755)
	os.WriteFile(d.config, []byte(config), 0o644)
	kdir := filepath.Join(base, "kubelet")
	os.MkdirAll(kdir, 0o755)
	d.kubelet = kubelettest.Start(tb, kdir)
	// Its own CNI state dir and no reconciler, no kubelet pod-resources,
	// no netlink events, unless a test asks (later flags win): a test must
	// never reconcile the host's real attachments.
	args := append([]string{"--config", d.config, "--sysfs-root", tree.Sys, "--devfs-root", tree.Dev,
		"--kubelet-dir", kdir, "--devinfo-dir", d.devinfo, "--metrics-addr", d.metrics, "--netlink-events=false",
		"--cni-state-dir", filepath.Join(base, "cni-state"), "--reconcile-interval=0", "--pod-resources-socket="}, extra...)
	d.cmd = exec.Command(filepath.Join(binDir, "railnet-deviceplugin"), args...)
	d.logs = &logBuffer{lines: make(chan string, 1024)}
	d.cmd.Stderr = d.logs
	d.started = time.Now()
	if err := d.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			d.cmd.Process.Kill()
			d.cmd.Wait()
		}
	})
	return d
}

func (d *daemon) waitLog(tb testing.TB, substr string, timeout time.Duration) {
	tb.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l := <-d.logs.lines:
			if strings.Contains(l, substr) {
				return
			}
		case <-deadline:
			tb.Fatalf("no log line with %q within %v", substr, timeout)
		}
	}
}

func TestDaemonStandalone(t *testing.T) {
	d := startDaemon(t, "dgx-h100-like", "railPools: true\npools:\n- name: storage\n  selectors:\n    linkTypes: [ether]\n    numaNodes: [0]\n",
		"--install-cni-dir", "", "--cdi", "--cdi-dir", filepath.Join(t.TempDir(), "cdi"))
	reg := d.kubelet.WaitRegistration(t, "railnet.io/rail0", 10*time.Second)
	d.kubelet.WaitRegistration(t, "railnet.io/storage", 5*time.Second)
	p := d.kubelet.Dial(t, reg.Endpoint)
	list := kubelettest.Next(t, p.Watch(t), 5*time.Second, func([]*pluginapi.Device) bool { return true })
	if len(list) != 8 {
		t.Fatalf("rail0: %v", list)
	}
	resp, err := p.Allocate(context.Background(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{list[0].ID}}}})
	if err != nil || resp.ContainerResponses[0].Envs["PCIDEVICE_RAILNET_IO_RAIL0"] != list[0].ID || len(resp.ContainerResponses[0].CdiDevices) != 1 {
		t.Fatalf("Allocate: %v %v", resp, err)
	}
	// Metrics over HTTP.
	r, err := http.Get("http://" + d.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	for _, want := range []string{`railnet_pool_devices{health="Healthy",pool="rail0",resource="railnet.io/rail0"} 8`,
		`railnet_allocations_total{pool="rail0"} 1`, `railnet_pool_registered{pool="rail0"} 1`, "railnet_scan_duration_seconds_count"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// SIGHUP with a bad config: logged, old pools keep serving.
	os.WriteFile(d.config, []byte("pools:\n- name: storage\n  selectors:\n    linkTypes: [token-ring]\n"), 0o644)
	d.cmd.Process.Signal(syscall.SIGHUP)
	d.waitLog(t, "config refused", 5*time.Second)
	if _, err := os.Stat(filepath.Join(d.kubelet.Dir, "railnet-storage.sock")); err != nil {
		t.Errorf("storage socket gone after a refused reload: %v", err)
	}
	// SIGTERM: graceful, sockets and device-info files removed, exit 0.
	files, _ := filepath.Glob(filepath.Join(d.devinfo, "*.json"))
	if len(files) == 0 {
		t.Fatal("no device-info files while serving")
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	if err := d.cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v\n%s", err, d.logs.String())
	}
	files, _ = filepath.Glob(filepath.Join(d.devinfo, "*.json"))
	socks, _ := filepath.Glob(filepath.Join(d.kubelet.Dir, "railnet-*.sock"))
	if len(files) != 0 || len(socks) != 0 {
		t.Errorf("left behind: %v %v", files, socks)
	}
}

func TestDaemonRefusesBadConfig(t *testing.T) {
	for name, cfg := range map[string]string{
		"unknown field":  `{"pools":[{"name":"a","selectors":{"drivers":["mlx5_core"]},"extra":true}]}`,
		"bad range":      `{"pools":[{"name":"a","selectors":{"pfNames":["ibp24s0#9-1"]}}]}`,
		"link type":      `{"pools":[{"name":"a","selectors":{"linkTypes":["atm"]}}]}`,
		"empty pool":     `{"pools":[{"name":"a","selectors":{}}]}`,
		"duplicate name": `{"pools":[{"name":"a","selectors":{"drivers":["x"]}},{"name":"a","selectors":{"drivers":["y"]}}]}`,
		"two pools":      `{"pools":[{"name":"a","selectors":{"pfNames":["ibp24s0"]}},{"name":"b","selectors":{"linkTypes":["infiniband"]}}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			d := startDaemon(t, "dgx-h100-like", cfg)
			err := d.cmd.Wait()
			if err == nil || d.cmd.ProcessState.ExitCode() != 1 {
				t.Fatalf("exit %v, want 1", err)
			}
			if !strings.Contains(d.logs.String(), `"level":"ERROR"`) {
				t.Errorf("no error logged: %s", d.logs.String())
			}
		})
	}
}

func TestInstallCNI(t *testing.T) {
	// The CNI plugin binary does not exist yet; any executable stands in.
	src := filepath.Join(t.TempDir(), "railnet")
	os.WriteFile(src, []byte("#!/bin/sh\necho railnet\n"), 0o755)
	d := startDaemon(t, "single-nic-ethernet", `{"pools":[{"name":"cx6","selectors":{"drivers":["mlx5_core"]}}]}`)
	d.cmd.Process.Kill()
	d.cmd.Wait()
	d2 := startDaemon(t, "single-nic-ethernet", `{"pools":[{"name":"cx6","selectors":{"drivers":["mlx5_core"]}}]}`,
		"--install-cni-dir", d.cniDir, "--cni-binary", src)
	d2.kubelet.WaitRegistration(t, "railnet.io/cx6", 10*time.Second)
	st, err := os.Stat(filepath.Join(d.cniDir, "railnet"))
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("installed CNI: %v %v", st, err)
	}
}

func vmHWM(pid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			f := strings.Fields(l)
			return strconv.Atoi(f[1])
		}
	}
	return 0, fmt.Errorf("no VmHWM")
}

// As the issue runs it for a demo: a tree and a kubelet directory, no config
// file: one pool per GPU rail. An explicit --config that is missing is an error.
func TestDaemonWithoutConfig(t *testing.T) {
	_, tree := fakesystest.Build(t, "dgx-h100-like")
	kdir := filepath.Join(fakesystest.TempDir(t), "kubelet")
	os.MkdirAll(kdir, 0o755)
	k := kubelettest.Start(t, kdir)
	cmd := exec.Command(filepath.Join(binDir, "railnet-deviceplugin"), "--sysfs-root", tree.Sys, "--devfs-root", tree.Dev,
		"--kubelet-dir", kdir, "--devinfo-dir", filepath.Join(t.TempDir(), "devinfo"), "--netlink-events=false")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	for i := range 8 {
		k.WaitRegistration(t, "railnet.io/rail"+strconv.Itoa(i), 10*time.Second)
	}
	out, err := exec.Command(filepath.Join(binDir, "railnet-deviceplugin"), "--config", "/nonexistent/railnet.yaml",
		"--sysfs-root", tree.Sys, "--kubelet-dir", kdir).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "nonexistent") {
		t.Errorf("missing explicit config: %v %s", err, out)
	}
}

// A link event (here a veth created and deleted in the host) makes the
// daemon rescan at once: with hourly rescans, a PF found down turns its
// VFs Unhealthy on the kubelet within seconds.
func TestDaemonRescansOnLinkEvents(t *testing.T) {
	requireRoot(t)
	d := startDaemon(t, "dgx-h100-like", "railPools: true\n", "--netlink-events=true", "--rescan-interval=1h")
	reg := d.kubelet.WaitRegistration(t, "railnet.io/rail0", 10*time.Second)
	p := d.kubelet.Dial(t, reg.Endpoint)
	w := p.Watch(t)
	kubelettest.Next(t, w, 5*time.Second, func(l []*pluginapi.Device) bool { return len(l) == 8 })
	nets, _ := filepath.Glob(filepath.Join(d.tree.Sys, "bus/pci/devices/0000:18:00.0/net/*"))
	if len(nets) != 1 {
		t.Fatalf("PF netdev: %v", nets)
	}
	os.WriteFile(filepath.Join(nets[0], "operstate"), []byte("down\n"), 0o644)
	os.WriteFile(filepath.Join(nets[0], "carrier"), []byte("0\n"), 0o644)
	name := "rn" + randTag() + "ev"
	if out, err := exec.Command("ip", "link", "add", name, "type", "veth", "peer", "name", name+"p").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	exec.Command("ip", "link", "del", name).Run()
	kubelettest.Next(t, w, 5*time.Second, func(l []*pluginapi.Device) bool {
		for _, dev := range l {
			if dev.Health != pluginapi.Unhealthy {
				return false
			}
		}
		return len(l) == 8
	})
	// A clean SIGTERM logs no warning (closing the subscription interrupts
	// its receive; that is not a netlink problem).
	d.cmd.Process.Signal(syscall.SIGTERM)
	if err := d.cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	if logs := d.logs.String(); strings.Contains(logs, `"level":"WARN","msg":"netlink`) {
		t.Errorf("shutdown warned about netlink:\n%s", logs)
	}
}
