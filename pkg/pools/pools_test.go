package pools_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/railnet/railnet/pkg/discovery"
	"github.com/railnet/railnet/pkg/fakesys/fakesystest"
	"github.com/railnet/railnet/pkg/pools"
	"github.com/railnet/railnet/pkg/topology"
)

func scan(t *testing.T, fixture string) (*discovery.Inventory, *topology.Topology) {
	t.Helper()
	_, tree := fakesystest.Build(t, fixture)
	inv := fakesystest.Scan(t, tree, false)
	return inv, topology.Build(inv)
}

func ids(p pools.Resolved) []string {
	var out []string
	for _, d := range p.Devices {
		out = append(out, d.ID)
	}
	return out
}

func TestConfigErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct{ name, cfg, want string }{
		{"unknown field", `{"pools":[{"name":"a","selectors":{"drivers":["x"]},"color":"red"}]}`, `unknown field "color"`},
		{"unknown selector", `{"pools":[{"name":"a","selectors":{"drivrs":["x"]}}]}`, `unknown field "drivrs"`},
		{"bad vf range", `{"pools":[{"name":"a","selectors":{"pfNames":["ens1f0#3-1"]}}]}`, "pools[0].selectors.pfNames[0]"},
		{"bad vf index", `{"pools":[{"name":"a","selectors":{"pfNames":["ens1f0#x"]}}]}`, "pools[0].selectors.pfNames[0]"},
		{"link type", `{"pools":[{"name":"a","selectors":{"linkTypes":["fddi"]}}]}`, "pools[0].selectors.linkTypes[0]"},
		{"empty pool", `{"pools":[{"name":"a","selectors":{}}]}`, "pools[0].selectors: empty"},
		{"no selectors key", `{"pools":[{"name":"a"}]}`, "pools[0].selectors: empty"},
		{"duplicate names", `{"pools":[{"name":"a","selectors":{"drivers":["x"]}},{"name":"a","selectors":{"drivers":["y"]}}]}`, "pools[1].name"},
		{"bad name", `{"pools":[{"name":"A B","selectors":{"drivers":["x"]}}]}`, "pools[0].name"},
		{"kind", `{"pools":[{"name":"a","kind":"gpu","selectors":{"drivers":["x"]}}]}`, "pools[0].kind"},
		{"shared sriov", `{"pools":[{"name":"a","shared":4,"selectors":{"drivers":["x"]}}]}`, "pools[0].shared"},
		{"vendor", `{"pools":[{"name":"a","selectors":{"vendors":["15b"]}}]}`, "pools[0].selectors.vendors[0]"},
		{"pci address", `{"pools":[{"name":"a","selectors":{"pciAddresses":["0000:18:00"]}}]}`, "pools[0].selectors.pciAddresses[0]"},
		{"gpu class", `{"pools":[{"name":"a","selectors":{"gpuClass":"NEAR"}}]}`, "pools[0].selectors.gpuClass"},
		{"prefix", `{"resourcePrefix":"Not A Domain","pools":[{"name":"a","selectors":{"drivers":["x"]}}]}`, "resourcePrefix"},
		{"nothing", `{}`, "nothing to advertise"},
		{"dra name 51 long", `{"pools":[{"name":"` + strings.Repeat("a", 51) + `","api":"dra","selectors":{"drivers":["x"]}}]}`, "pools[0].name"},
		{"dra name not a label", `{"pools":[{"name":"a_b","api":"dra","selectors":{"drivers":["x"]}}]}`, "pools[0].name"},
		{"rail name clash", `{"railPools":true,"pools":[{"name":"rail0","selectors":{"drivers":["x"]}}]}`, "reserved for rail pools"},
		{"yaml unknown", "pools:\n- name: a\n  selector:\n    drivers: [x]\n", `unknown field "selector"`},
		{"garbage", `{"pools":`, "parse config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := pools.Parse([]byte(tc.cfg))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestDRANameAtItsLongest(t *testing.T) {
	if _, err := pools.Parse([]byte(`{"pools":[{"name":"` + strings.Repeat("a", 49) + `z","api":"dra","selectors":{"drivers":["x"]}}]}`)); err != nil {
		t.Fatal(err)
	}
}

func TestYAMLAndJSONAgree(t *testing.T) {
	y := "resourcePrefix: example.com\nrailPools: true\npools:\n- name: storage\n  selectors:\n    vendors: [\"15b3\"]\n    pfNames: [\"enp41s0f1np1#0-1,3\"]\n    isRdma: true\n"
	j := `{"resourcePrefix":"example.com","railPools":true,"pools":[{"name":"storage","selectors":{"vendors":["15b3"],"pfNames":["enp41s0f1np1#0-1,3"],"isRdma":true}}]}`
	a, err := pools.Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	b, err := pools.Parse([]byte(j))
	if err != nil {
		t.Fatal(err)
	}
	if a.Prefix() != "example.com" || b.Prefix() != "example.com" || len(a.Pools) != 1 || *a.Pools[0].Selectors.IsRDMA != *b.Pools[0].Selectors.IsRDMA {
		t.Fatalf("%+v vs %+v", a, b)
	}
}

func resolve(t *testing.T, fixture, cfg string) ([]pools.Resolved, []string, error) {
	t.Helper()
	c, err := pools.Parse([]byte(cfg))
	if err != nil {
		t.Fatal(err)
	}
	inv, topo := scan(t, fixture)
	return pools.Resolve(c, inv, topo)
}

func TestSelectors(t *testing.T) {
	// dgx-h100-like: storage PFs 29:00.0 (enp41s0f0np0) and 29:00.1 (enp41s0f1np1), 4 VFs each.
	for _, tc := range []struct {
		name, sel string
		kind      string
		want      []string
	}{
		{"pf range", `"pfNames":["enp41s0f1np1#0-1,3"]`, "", []string{"0000:29:02.2", "0000:29:02.3", "0000:29:02.5"}},
		{"pf all vfs", `"pfNames":["enp41s0f0np0"]`, "", []string{"0000:29:00.2", "0000:29:00.3", "0000:29:00.4", "0000:29:00.5"}},
		{"vendor without 0x and device with", `"vendors":["15B3"],"devices":["0x101e"],"pciAddresses":["29:02.2","0000:aa:02.2"]`, "", []string{"0000:29:02.2", "0000:aa:02.2"}},
		{"link type and numa", `"linkTypes":["ether"],"numaNodes":[1],"pfNames":["enp170s0f0np0#2"]`, "", []string{"0000:aa:00.4"}},
		{"PF without VFs enabled", `"pciAddresses":["0000:5e:00.0","0000:18:00.0"]`, "", []string{"0000:5e:00.0"}},
		{"rdma HCAs", `"linkTypes":["ether"]`, "rdma", []string{"0000:29:00.0", "0000:29:00.1", "0000:aa:00.0", "0000:aa:00.1"}},
		{"gpu class PIX", `"gpuClass":"PIX","numaNodes":[0],"drivers":["mlx5_core"],"pfNames":["ibp24s0#0","ibp64s0"]`, "", []string{"0000:18:00.1", "0000:40:00.0"}},
		{"gpu class excludes storage", `"gpuClass":"PHB","linkTypes":["ether"]`, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kind := ""
			if tc.kind != "" {
				kind = `"kind":"` + tc.kind + `",`
			}
			ps, _, err := resolve(t, "dgx-h100-like", `{"pools":[{"name":"p",`+kind+`"selectors":{`+tc.sel+`}}]}`)
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(ps[0]); !slices.Equal(got, tc.want) {
				t.Errorf("selected %v, want %v", got, tc.want)
			}
		})
	}
}

func TestIsRDMAFalseAndNoNetdevVFs(t *testing.T) {
	// single-nic-ethernet: the E810's iavf VFs have no RDMA device.
	ps, _, err := resolve(t, "single-nic-ethernet", `{"pools":[{"name":"iavf","selectors":{"isRdma":false,"drivers":["iavf"]}}]}`)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(ps[0]); len(got) != 4 || got[0] != "0000:61:01.0" {
		t.Errorf("iavf VFs = %v", got)
	}
}

func TestDeviceInTwoPools(t *testing.T) {
	_, _, err := resolve(t, "dgx-h100-like", `{"pools":[{"name":"a","selectors":{"pfNames":["enp41s0f0np0#0-1"]}},{"name":"b","selectors":{"pfNames":["enp41s0f0np0#1-2"]}}]}`)
	if err == nil || !strings.Contains(err.Error(), "0000:29:00.3") || !strings.Contains(err.Error(), `"a" and "b"`) {
		t.Fatalf("overlap error = %v", err)
	}
}

func TestRailPoolsAndShared(t *testing.T) {
	ps, warnings, err := resolve(t, "dgx-h100-like", `{"railPools":true,"pools":[{"name":"hca","kind":"rdma","shared":3,"selectors":{"linkTypes":["ether"],"numaNodes":[0]}},{"name":"none","selectors":{"drivers":["ice"]}}]}`)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]pools.Resolved{}
	for _, p := range ps {
		byName[p.Name] = p
	}
	if len(ps) != 10 { // hca, none, rail0..rail7 (the NODE-class storage groups stay out)
		t.Fatalf("%d pools: %v", len(ps), ps)
	}
	r0 := byName["rail0"]
	if r0.Resource != "railnet.io/rail0" || len(r0.Devices) != 8 || r0.Devices[0].ID != "0000:18:00.1" || r0.Devices[0].PF != "0000:18:00.0" || r0.Devices[0].Rail != "rail0" {
		t.Errorf("rail0 = %+v", r0)
	}
	if r1 := byName["rail1"]; len(r1.Devices) != 1 || r1.Devices[0].ID != "0000:40:00.0" {
		t.Errorf("rail1 (PF without SR-IOV) = %+v", r1)
	}
	hca := byName["hca"]
	if got := ids(hca); !slices.Equal(got, []string{"0000:29:00.0#0", "0000:29:00.0#1", "0000:29:00.0#2", "0000:29:00.1#0", "0000:29:00.1#1", "0000:29:00.1#2"}) {
		t.Errorf("shared hca IDs = %v", got)
	}
	// 29:00.0's link is down: its HCA is unhealthy (port DOWN, PF down).
	if d := hca.Devices[0]; d.Health != pools.Unhealthy || pools.BDFOfID(d.ID) != "0000:29:00.0" {
		t.Errorf("hca 29:00.0 = %+v", d)
	}
	if d := hca.Devices[3]; d.Health != pools.Healthy || len(d.CharDevs) != 3 {
		t.Errorf("hca 29:00.1 = %+v", d)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], `"none"`) {
		t.Errorf("warnings = %v", warnings)
	}
}

func TestHealthOfVFsFollowsPF(t *testing.T) {
	ps, _, err := resolve(t, "dgx-h100-like", `{"pools":[{"name":"s","selectors":{"linkTypes":["ether"],"numaNodes":[0]}}]}`)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ps[0].Devices {
		wantHealthy := d.PF == "0000:29:00.1" // 29:00.0's link is down
		if (d.Health == pools.Healthy) != wantHealthy {
			t.Errorf("%s (PF %s): %s %s", d.ID, d.PF, d.Health, d.Reason)
		}
	}
}
