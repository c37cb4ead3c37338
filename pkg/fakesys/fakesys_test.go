package fakesys_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/railnet/railnet/pkg/fakesys"
	"github.com/railnet/railnet/pkg/fakesys/fakesystest"
)

func TestAllFixturesLoad(t *testing.T) {
	for _, name := range fakesystest.Fixtures(t) {
		m := fakesystest.Load(t, name)
		if m.Name != name {
			t.Errorf("%s: name %q", name, m.Name)
		}
	}
}

// The tree is the kernel's: relative links, attributes where the kernel has them.
func TestMaterializeLayout(t *testing.T) {
	_, tree := fakesystest.Build(t, "dgx-h100-like")
	sys := tree.Sys
	link := func(rel, want string) {
		t.Helper()
		got, err := os.Readlink(filepath.Join(sys, rel))
		if err != nil || got != want {
			t.Errorf("link %s = %q, %v; want %q", rel, got, err, want)
		}
	}
	read := func(rel, want string) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(sys, rel))
		if err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", rel, b, err, want)
		}
	}
	pf := "devices/pci0000:15/0000:15:01.0/0000:16:00.0/0000:17:00.0/0000:18:00.0"
	link("bus/pci/devices/0000:18:00.0", "../../../"+pf)
	link("bus/pci/drivers/mlx5_core/0000:18:00.0", "../../../../"+pf)
	link(pf+"/driver", "../../../../../../bus/pci/drivers/mlx5_core")
	link(pf+"/virtfn0", "../0000:18:00.1")
	link(strings.TrimSuffix(pf, "0000:18:00.0")+"0000:18:00.1/physfn", "../0000:18:00.0")
	link("class/net/ibp24s0", "../../"+pf+"/net/ibp24s0")
	link("class/infiniband/mlx5_0", "../../"+pf+"/infiniband/mlx5_0")
	link("class/infiniband_verbs/uverbs0", "../../"+pf+"/infiniband_verbs/uverbs0")
	link("class/pci_bus/0000:16", "../../devices/pci0000:15/0000:15:01.0/pci_bus/0000:16")
	link(pf+"/net/ibp24s0/device", "../../../0000:18:00.0")
	read(pf+"/vendor", "0x15b3\n")
	read(pf+"/sriov_vf_device", "101e\n")
	read(pf+"/sriov_numvfs", "8\n")
	read(pf+"/numa_node", "0\n")
	read(pf+"/modalias", "pci:v000015B3d00001021sv000015B3sd00000023bc02sc07i00\n")
	read(pf+"/net/ibp24s0/type", "32\n")
	read(pf+"/net/ibp24s0/address", "00:00:10:29:fe:80:00:00:00:00:00:00:b8:3f:d2:03:00:e0:00:18\n")
	read(pf+"/net/ibp24s0/ifindex", "2\n")
	read(pf+"/infiniband/mlx5_0/hca_type", "MT4129\n")
	read(pf+"/infiniband/mlx5_0/ports/1/state", "4: ACTIVE\n")
	read(pf+"/infiniband/mlx5_0/ports/1/gids/0", "fe80:0000:0000:0000:b83f:d203:00e0:0018\n")
	read("devices/pci0000:15/0000:15:01.0/secondary_bus_number", "22\n")
	read("devices/system/node/online", "0-1\n")
	read("class/net/lo/ifindex", "1\n")
	// RoCE port: GID from the EUI-64 of the MAC, ndevs names the netdev.
	roce := "devices/pci0000:27/0000:27:01.0/0000:29:00.1"
	read(roce+"/infiniband/mlx5_2/ports/1/gid_attrs/ndevs/0", "enp41s0f1np1\n")
	read(roce+"/infiniband/mlx5_2/ports/1/gids/0", "fe80:0000:0000:0000:ba3f:d2ff:fee0:2901\n")
	// A down link: speed -1, port DOWN.
	read("devices/pci0000:27/0000:27:01.0/0000:29:00.0/net/enp41s0f0np0/speed", "-1\n")
	for _, d := range []string{"infiniband/uverbs0", "infiniband/umad0", "infiniband/issm0", "infiniband/rdma_cm", "nvidia0", "nvidia7", "nvidiactl", "nvidia-uvm"} {
		if _, err := os.Stat(filepath.Join(tree.Dev, d)); err != nil {
			t.Errorf("devfs %s: %v", d, err)
		}
	}
	// Every symlink resolves inside the tree.
	filepath.Walk(sys, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.Mode()&os.ModeSymlink == 0 {
			return err
		}
		tgt, _ := os.Readlink(p)
		if filepath.IsAbs(tgt) {
			t.Errorf("%s: absolute link %s", p, tgt)
		}
		abs := filepath.Join(filepath.Dir(p), tgt)
		if !strings.HasPrefix(abs, sys+"/") {
			t.Errorf("%s: link leaves the tree: %s", p, tgt)
		}
		if _, err := os.Stat(p); err != nil && !strings.Contains(p, "/bus/pci/drivers/") {
			t.Errorf("%s: dangling: %v", p, err)
		}
		return nil
	})
}

func TestMaterializeRefusesExistingTree(t *testing.T) {
	m := fakesystest.Load(t, "single-nic-ethernet")
	dir := t.TempDir()
	if _, err := fakesys.Materialize(m, dir); err != nil {
		t.Fatal(err)
	}
	if _, err := fakesys.Materialize(m, dir); err == nil {
		t.Fatal("materializing over an existing tree succeeded")
	}
}

func TestParseErrorsNameTheField(t *testing.T) {
	base, err := os.ReadFile(filepath.Join(fakesystest.FixtureDir(), "mixed-ib-eth-gpu-noswitch.json"))
	if err != nil {
		t.Fatal(err)
	}
	src := string(base)
	for _, tc := range []struct {
		name, old, new, want string
	}{
		{"unknown key", `"schemaVersion": 1`, `"schemaVersion": 1, "bogus": 2`, `unknown field "bogus"`},
		{"schema version", `"schemaVersion": 1`, `"schemaVersion": 2`, "schemaVersion"},
		{"bad bdf", `"bdf": "0000:02:00.0"`, `"bdf": "0000:02:00"`, "bdf"},
		{"wrong bus", `"bdf": "0000:02:00.0"`, `"bdf": "0000:03:00.0"`, "secondary bus"},
		{"bad vendor", `"vendor": "0x15b3"`, `"vendor": "15b3"`, "vendor"},
		{"link layer", `"linkLayer": "infiniband"`, `"linkLayer": "fddi"`, "linkLayer"},
		{"numvfs", `"numVfs": 4`, `"numVfs": 40`, "numVfs"},
		{"pattern", `"vfRdma": "mlx5_{n+4}"`, `"vfRdma": "mlx5_{m}"`, "vfRdma"},
		{"numa", `"numa": 1,`, `"numa": 5,`, "numa"},
		{"duplicate netdev", `"netdev": "ibp130s0"`, `"netdev": "ibp2s0"`, "netdev"},
		{"mac on ib", `"nodeGuid": "a088:c203:0082:0000",`, `"nodeGuid": "a088:c203:0082:0000", "mac": "02:00:00:00:00:01",`, "mac"},
		{"expected counts", `"vfs": 6`, `"vfs": 7`, "expected.inventory"},
		{"truncated", `"expected"`, `"expected`, "decode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := strings.Replace(src, tc.old, tc.new, 1)
			if bad == src {
				t.Fatalf("replacement %q not found", tc.old)
			}
			_, err := fakesys.Parse([]byte(bad))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse error = %v, want one naming %q", err, tc.want)
			}
		})
	}
	if _, err := fakesys.Parse([]byte(src + "{}")); err == nil {
		t.Error("trailing data accepted")
	}
}

func TestLoadChecksName(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(fakesystest.FixtureDir(), "single-nic-ethernet.json"))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "other.json")
	os.WriteFile(p, b, 0o644)
	if _, err := fakesys.Load(p); err == nil || !strings.Contains(err.Error(), "name") {
		t.Fatalf("Load of a renamed fixture: %v", err)
	}
}

func TestCPUListRoundTrip(t *testing.T) {
	for _, s := range []string{"0-55,112-167", "0", "0-1", "1,3,5-7"} {
		c, err := fakesys.ParseCPUList(s)
		if err != nil || fakesys.FormatCPUList(c) != s {
			t.Errorf("%q -> %v -> %q (%v)", s, c, fakesys.FormatCPUList(c), err)
		}
	}
	for _, s := range []string{"a", "3-1", "-1"} {
		if _, err := fakesys.ParseCPUList(s); err == nil {
			t.Errorf("ParseCPUList(%q) accepted", s)
		}
	}
}

// With DeviceNodes, /dev entries are character devices with the kernel's
// numbers, so a container runtime can create them in a pod (root only).
func TestMaterializeDeviceNodes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mknod needs root; CI runs as root")
	}
	m := fakesystest.Load(t, "dgx-h100-like")
	tree, err := fakesys.MaterializeWith(m, fakesystest.TempDir(t), fakesys.Options{DeviceNodes: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path         string
		major, minor uint32
	}{
		{"infiniband/uverbs0", 231, 192}, {"infiniband/uverbs31", 231, 223}, {"infiniband/uverbs32", 241, 0},
		{"infiniband/umad5", 231, 5}, {"infiniband/issm5", 231, 69}, {"infiniband/rdma_cm", 10, 58},
		{"nvidia0", 195, 0}, {"nvidia7", 195, 7}, {"nvidiactl", 195, 255},
	} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(tree.Dev, c.path), &st); err != nil {
			t.Errorf("%s: %v", c.path, err)
			continue
		}
		if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != c.major || unix.Minor(st.Rdev) != c.minor || st.Mode&0o777 != 0o666 {
			t.Errorf("%s: mode %o %d:%d, want a 0666 character device %d:%d", c.path, st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev), c.major, c.minor)
		}
	}
	// Without the option they stay empty regular files (no root needed).
	plain, err := fakesys.Materialize(m, fakesystest.TempDir(t))
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Lstat(filepath.Join(plain.Dev, "infiniband/uverbs0")); err != nil || !st.Mode().IsRegular() {
		t.Errorf("plain tree: %v %v", st, err)
	}
}
