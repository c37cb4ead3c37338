package deviceplugin

import (
	"fmt"
	"slices"
	"testing"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

func TestEnvName(t *testing.T) {
	for in, want := range map[string]string{
		"railnet.io/rail0":      "PCIDEVICE_RAILNET_IO_RAIL0",
		"example.com/ib-shared": "PCIDEVICE_EXAMPLE_COM_IB_SHARED",
	} {
		if got := EnvName(in); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestKubeletDevicesNUMAHint(t *testing.T) {
	l := kubeletDevices(Pool{Devices: []Device{{ID: "a", NUMA: 1, Healthy: true}, {ID: "b", NUMA: -1}}})
	if l[0].Topology == nil || l[0].Topology.Nodes[0].ID != 1 || l[0].Health != pluginapi.Healthy {
		t.Errorf("a = %v", l[0])
	}
	if l[1].Topology != nil || l[1].Health != pluginapi.Unhealthy {
		t.Errorf("b (NUMA unknown) = %v, want no Topology", l[1])
	}
}

// pool of 2 NUMA nodes x 2 PFs x 4 VFs.
func testPool() map[string]*Device {
	m := map[string]*Device{}
	for numa := range 2 {
		for pf := range 2 {
			for vf := range 4 {
				id := fmt.Sprintf("n%d-pf%d-vf%d", numa, pf, vf)
				m[id] = &Device{ID: id, NUMA: numa, PF: fmt.Sprintf("n%d-pf%d", numa, pf), Rail: fmt.Sprintf("rail%d", numa*2+pf), Healthy: true}
			}
		}
	}
	return m
}

func TestPreferred(t *testing.T) {
	byID := testPool()
	var all []string
	for id := range byID {
		all = append(all, id)
	}
	slices.Sort(all)
	for _, tc := range []struct {
		name      string
		avail     []string
		must      []string
		size      int
		want      []string
		wantError bool
	}{
		{"two: one NUMA, two PFs", all, nil, 2, []string{"n0-pf0-vf0", "n0-pf1-vf0"}, false},
		{"must on NUMA 1", all, []string{"n1-pf1-vf3"}, 3, []string{"n1-pf1-vf3", "n1-pf0-vf0", "n1-pf0-vf1"}, false},
		{"NUMA that fits wins", append(slices.Clone(all[:3]), all[8:]...), nil, 4, []string{"n1-pf0-vf0", "n1-pf1-vf0", "n1-pf0-vf1", "n1-pf1-vf1"}, false},
		{"spill over", all, nil, 10, nil, false},
		{"too many", all[:2], nil, 3, nil, true},
		{"must larger than size", all, all[:3], 2, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := preferred(byID, tc.avail, tc.must, tc.size)
			if (err != nil) != tc.wantError {
				t.Fatalf("err = %v", err)
			}
			if tc.wantError {
				return
			}
			if len(got) != tc.size {
				t.Fatalf("got %d devices: %v", len(got), got)
			}
			if tc.want != nil && !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
			for _, m := range tc.must {
				if !slices.Contains(got, m) {
					t.Errorf("must-include %s missing from %v", m, got)
				}
			}
			if tc.name == "spill over" {
				n0 := 0
				for _, id := range got {
					if byID[id].NUMA == 0 {
						n0++
					}
				}
				if n0 != 8 && n0 != 2 {
					t.Errorf("10 devices should fill one NUMA node first: %v", got)
				}
			}
		})
	}
	// Unhealthy devices are not preferred while healthy ones remain.
	byID["n0-pf0-vf0"].Healthy = false
	got, _ := preferred(byID, all, nil, 1)
	if got[0] == "n0-pf0-vf0" {
		t.Errorf("picked an unhealthy device: %v", got)
	}
}
