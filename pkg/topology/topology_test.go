package topology_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/railnet/railnet/pkg/discovery"
	"github.com/railnet/railnet/pkg/fakesys/fakesystest"
	"github.com/railnet/railnet/pkg/topology"
)

func scan(tb testing.TB, name string) (*discovery.Inventory, map[string]map[string]string) {
	tb.Helper()
	m, tree := fakesystest.Build(tb, name)
	return fakesystest.Scan(tb, tree, false), m.Expected.GPUNic
}

// TestFixtureMatrices reproduces expected.gpuNic of every fixture exactly.
func TestFixtureMatrices(t *testing.T) {
	for _, name := range fakesystest.Fixtures(t) {
		t.Run(name, func(t *testing.T) {
			inv, want := scan(t, name)
			if len(inv.Warnings) > 0 {
				t.Errorf("warnings on a complete fixture: %v", inv.Warnings)
			}
			topo := topology.Build(inv)
			got := map[string]map[string]string{}
			for g, row := range topo.Matrix {
				got[g] = map[string]string{}
				for n, c := range row {
					got[g][n] = c.String()
				}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("matrix (-want +got):\n%s", diff)
			}
			// Every VF has exactly its PF's class to every GPU.
			vfs := 0
			for _, n := range inv.NICs {
				if n.Kind != discovery.KindVF {
					continue
				}
				vfs++
				for _, g := range inv.GPUs {
					cv, ok1 := topo.Class(g.Name, n.BDF)
					cp, ok2 := topo.Class(g.Name, n.PF)
					if !ok1 || !ok2 || cv != cp {
						t.Errorf("%s: VF %s is %v, its PF %s is %v", g.Name, n.BDF, cv, n.PF, cp)
					}
				}
			}
			if vfs == 0 && name == "dgx-h100-like" {
				t.Error("no VFs found on dgx-h100-like")
			}
		})
	}
}

func TestClassify(t *testing.T) {
	sw := []string{"pci0000:15", "0000:15:01.0", "0000:16:00.0"}
	at := func(p []string, e ...string) []string { return append(append([]string(nil), p...), e...) }
	for _, tc := range []struct {
		name       string
		a, b       []string
		numaA, nmB int
		want       topology.Class
	}{
		{"switch siblings", at(sw, "0000:17:03.0", "0000:1b:00.0"), at(sw, "0000:17:00.0", "0000:18:00.0"), 0, 0, topology.PIX},
		{"same root port", []string{"pci0000:27", "0000:27:01.0", "0000:29:00.0"}, []string{"pci0000:27", "0000:27:01.0", "0000:29:00.1"}, 0, 0, topology.PIX},
		{"two switch levels", at(sw, "0000:17:00.0", "0000:18:00.0", "0000:19:00.0", "0000:1a:00.0"), at(sw, "0000:17:01.0", "0000:20:00.0"), 0, 0, topology.PXB},
		{"host bridge", []string{"pci0000:00", "0000:00:01.1", "0000:01:00.0"}, []string{"pci0000:00", "0000:00:03.1", "0000:02:00.0"}, 0, 0, topology.PHB},
		{"same numa", []string{"pci0000:00", "0000:00:01.1"}, []string{"pci0000:40", "0000:40:01.1"}, 0, 0, topology.NODE},
		{"other numa", []string{"pci0000:00", "0000:00:01.1"}, []string{"pci0000:40", "0000:40:01.1"}, 0, 1, topology.SYS},
		{"unknown numa both", []string{"pci0000:00", "0000:00:01.1"}, []string{"pci0000:40", "0000:40:01.1"}, -1, -1, topology.SYS},
		{"unknown numa one", []string{"pci0000:00", "0000:00:01.1"}, []string{"pci0000:40", "0000:40:01.1"}, 0, -1, topology.SYS},
		{"unknown numa same host bridge", []string{"pci0000:60", "0000:60:01.1", "0000:61:00.0"}, []string{"pci0000:60", "0000:60:03.1", "0000:62:00.0"}, -1, -1, topology.PHB},
		{"no ancestry", nil, []string{"pci0000:40"}, 0, 0, topology.NODE},
	} {
		if got := topology.Classify(tc.a, tc.numaA, tc.b, tc.nmB); got != tc.want {
			t.Errorf("%s: Classify = %v, want %v", tc.name, got, tc.want)
		}
		if got := topology.Classify(tc.b, tc.nmB, tc.a, tc.numaA); got != tc.want {
			t.Errorf("%s (swapped): Classify = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestRails(t *testing.T) {
	inv, _ := scan(t, "dgx-h100-like")
	topo := topology.Build(inv)
	// Eight compute HCAs, one per GPU at PIX; the storage NICs are NODE to
	// the GPUs of their socket.
	pix := 0
	for _, r := range topo.Rails {
		if r.Class == topology.PIX {
			pix++
			if len(r.GPUs) != 1 || len(r.NICs) != 1 {
				t.Errorf("%s: PIX rail %v / %v, want one GPU and one NIC", r.Name, r.GPUs, r.NICs)
			}
		}
	}
	if pix != 8 {
		t.Errorf("%d PIX rails, want 8: %+v", pix, topo.Rails)
	}
	if topo.Rails[0].GPUs[0] != "GPU0" || topo.Rails[0].NICs[0] != "mlx5_0" {
		t.Errorf("rail0 = %+v, want GPU0/mlx5_0", topo.Rails[0])
	}
}

func TestRailNamesFollowGPUs(t *testing.T) {
	inv, _ := scan(t, "dgx-h100-like")
	topo := topology.Build(inv)
	want := []string{"mlx5_0", "mlx5_3", "mlx5_4", "mlx5_5", "mlx5_6", "mlx5_9", "mlx5_10", "mlx5_11"}
	for i, nic := range want {
		r := topo.Rails[i]
		if r.Name != "rail"+string(rune('0'+i)) || r.GPUs[0] != "GPU"+string(rune('0'+i)) || r.NICs[0] != nic {
			t.Errorf("rail %d = %+v, want GPU%d/%s", i, r, i, nic)
		}
	}
}
