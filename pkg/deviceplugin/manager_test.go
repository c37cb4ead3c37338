package deviceplugin

import (
	"os"
	"path/filepath"
	"testing"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/railnet/railnet/pkg/deviceinfo"
)

// On start, device-info files, CDI specs and temp files an earlier run
// left that no current pool owns are removed; other vendors' are kept.
func TestStartSweepsStaleFiles(t *testing.T) {
	base := t.TempDir()
	devinfo, cdi, kubelet := filepath.Join(base, "dp"), filepath.Join(base, "cdi"), filepath.Join(base, "kubelet")
	for _, d := range []string{devinfo, cdi, kubelet} {
		os.MkdirAll(d, 0o755)
	}
	stale := []string{
		filepath.Join(devinfo, deviceinfo.FileName("railnet.io/old", "0000:99:00.1")),
		filepath.Join(devinfo, deviceinfo.FileName("railnet.io/rail0", "0000:18:00.7")), // a device the pool no longer has
		filepath.Join(devinfo, "."+deviceinfo.FileName("railnet.io/rail0", "0000:18:00.1")+".12345"),
		filepath.Join(cdi, "railnet.io-old.json"),
	}
	kept := []string{
		filepath.Join(devinfo, deviceinfo.FileName("other.io/nic", "0000:99:00.1")),
		filepath.Join(cdi, "nvidia.com-gpu.json"),
	}
	for _, f := range append(append([]string{}, stale...), kept...) {
		if err := os.WriteFile(f, []byte("{}"), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	m := NewManager(Options{KubeletDir: kubelet, DevInfoDir: devinfo, CDI: true, CDIDir: cdi})
	defer m.Close()
	pool := Pool{Name: "rail0", Resource: "railnet.io/rail0", Kind: "sriov",
		Devices: []Device{{ID: "0000:18:00.1", BDF: "0000:18:00.1", NUMA: -1, Healthy: true}}}
	if err := m.Update([]Pool{pool}); err != nil {
		t.Fatal(err)
	}
	for _, f := range stale {
		if _, err := os.Lstat(f); !os.IsNotExist(err) {
			t.Errorf("%s survived the start: %v", f, err)
		}
	}
	for _, f := range append(kept, filepath.Join(devinfo, deviceinfo.FileName("railnet.io/rail0", "0000:18:00.1")),
		filepath.Join(cdi, "railnet.io-rail0.json")) {
		if _, err := os.Lstat(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// A rescan that finishes after shutdown must not bring sockets or files
// back: a closed manager ignores updates.
func TestClosedManagerIgnoresUpdates(t *testing.T) {
	base := t.TempDir()
	devinfo, kubelet := filepath.Join(base, "dp"), filepath.Join(base, "kubelet")
	os.MkdirAll(kubelet, 0o755)
	m := NewManager(Options{KubeletDir: kubelet, DevInfoDir: devinfo})
	pool := Pool{Name: "rail0", Resource: "railnet.io/rail0", Kind: "sriov",
		Devices: []Device{{ID: "0000:18:00.1", BDF: "0000:18:00.1", NUMA: -1, Healthy: true}}}
	if err := m.Update([]Pool{pool}); err != nil {
		t.Fatal(err)
	}
	m.Close()
	if err := m.Update([]Pool{pool}); err != nil {
		t.Fatal(err)
	}
	socks, _ := filepath.Glob(filepath.Join(kubelet, "*.sock"))
	files, _ := filepath.Glob(filepath.Join(devinfo, "*.json"))
	if len(socks) != 0 || len(files) != 0 || len(m.Pools()) != 0 {
		t.Errorf("after Close, an update served %v, wrote %v, pools %v", socks, files, m.Pools())
	}
}

// Allocate writes a device's device-info file when it is not there yet:
// Multus reads it after Allocate, whatever Update has written so far.
func TestAllocateWritesMissingDevInfo(t *testing.T) {
	base := t.TempDir()
	devinfo, kubelet := filepath.Join(base, "dp"), filepath.Join(base, "kubelet")
	os.MkdirAll(kubelet, 0o755)
	m := NewManager(Options{KubeletDir: kubelet, DevInfoDir: devinfo})
	defer m.Close()
	pool := Pool{Name: "rail0", Resource: "railnet.io/rail0", Kind: "sriov",
		Devices: []Device{{ID: "0000:18:00.1", BDF: "0000:18:00.1", PF: "0000:18:00.0", RDMA: []string{"mlx5_12"}, NUMA: -1, Healthy: true}}}
	if err := m.Update([]Pool{pool}); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(devinfo, deviceinfo.FileName("railnet.io/rail0", "0000:18:00.1"))
	os.Remove(f)
	if _, err := m.servers["rail0"].Allocate(t.Context(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
		{DevicesIds: []string{"0000:18:00.1"}}}}); err != nil {
		t.Fatal(err)
	}
	info, err := deviceinfo.Read(f)
	if err != nil || info.PCI.PCIAddress != "0000:18:00.1" || info.PCI.RDMADevice != "mlx5_12" || info.PCI.PFPCIAddress != "0000:18:00.0" {
		t.Errorf("device-info after Allocate: %+v %v", info, err)
	}
}
