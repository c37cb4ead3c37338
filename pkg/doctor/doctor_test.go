package doctor_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/railnet/railnet/pkg/discovery"
	"github.com/railnet/railnet/pkg/doctor"
	"github.com/railnet/railnet/pkg/fakesys"
	"github.com/railnet/railnet/pkg/fakesys/fakesystest"
	"github.com/railnet/railnet/pkg/pools"
	"github.com/railnet/railnet/pkg/topology"
)

func run(t testing.TB, tree fakesys.Tree, cfg *pools.Config) []doctor.Finding {
	t.Helper()
	sys, dev := fakesystest.Open(t, tree)
	inv, err := discovery.NewScanner(sys, dev).Scan()
	if err != nil {
		t.Fatal(err)
	}
	return doctor.Run(doctor.Options{Sys: sys, Config: cfg}, inv, topology.Build(inv))
}

func testPools(t *testing.T) *pools.Config {
	t.Helper()
	b, err := os.ReadFile("testdata/doctor-pools.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := pools.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func keys(fs []doctor.Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Severity+" "+f.Check+" "+f.Device)
	}
	slices.Sort(out)
	return out
}

// Each check fires on its planted problem, once, and nothing else fires.
func TestPlantedProblems(t *testing.T) {
	_, tree := fakesystest.Build(t, "doctor-planted")
	got := run(t, tree, testPools(t))
	want := []string{
		"error acs 0000:02:00.0", "error rdma-mode pool hca1", "warn gpudirect node", "warn iommu 0000:03:00.0",
		"warn numa 0000:83:00.0", "warn numa 0000:84:00.0", "warn pcie-link 0000:83:00.0",
		"warn rail-consistency 0000:84:00.0", "warn sriov 0000:04:00.0",
	}
	slices.Sort(want)
	if k := keys(got); !slices.Equal(k, want) {
		t.Errorf("findings:\n%s\nwant:\n%s", strings.Join(k, "\n"), strings.Join(want, "\n"))
	}
	if doctor.ExitCode(got) != 2 {
		t.Errorf("exit code %d", doctor.ExitCode(got))
	}
	for _, f := range got {
		if f.Found == "" || f.Want == "" || f.Fix == "" {
			t.Errorf("incomplete finding %+v", f)
		}
		switch f.Check {
		case doctor.CheckPCIeLink:
			if !strings.Contains(f.Found, "16.0 GT/s PCIe x16, the slowest hop of GPU1↔mlx5_1") || f.Want != "32.0 GT/s PCIe x16" {
				t.Errorf("pcie-link: %+v", f)
			}
		case doctor.CheckACS:
			if !strings.Contains(f.Found, "P2P Request Redirect, P2P Completion Redirect") || strings.Contains(f.Found, "Upstream") {
				t.Errorf("acs: %+v", f)
			}
		}
	}
}

// The clean node and the shared fixtures are clean; the one shared fixture
// with findings has them by design (a mixed IB/RoCE node, a port left
// down, a root complex without NUMA), and exactly those.
func TestCleanTrees(t *testing.T) {
	_, tree := fakesystest.Build(t, "doctor-clean")
	if got := run(t, tree, testPools(t)); len(got) != 0 {
		t.Errorf("doctor-clean: %v", keys(got))
	}
	for _, name := range []string{"dgx-a100-like", "dgx-h100-like", "single-nic-ethernet", "vf-scale"} {
		_, tree := fakesystest.Build(t, name)
		if got := run(t, tree, nil); len(got) != 0 {
			t.Errorf("%s: %v", name, keys(got))
		}
	}
	_, tree = fakesystest.Build(t, "mixed-ib-eth-gpu-noswitch")
	want := []string{"error rail-consistency 0000:62:00.1", "warn numa 0000:61:00.0", "warn numa 0000:62:00.0", "warn numa 0000:62:00.1",
		"warn rail-consistency 0000:62:00.0", "warn rail-consistency 0000:62:00.1"}
	if got := keys(run(t, tree, nil)); !slices.Equal(got, want) {
		t.Errorf("mixed-ib-eth-gpu-noswitch:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// A config space as a non-root reader gets it (256 bytes) is a finding of
// its own, not a crash and not "no ACS".
func TestACSUnreadable(t *testing.T) {
	_, tree := fakesystest.Build(t, "doctor-clean")
	cfg := filepath.Join(tree.Sys, "bus/pci/devices/0000:02:00.0/config")
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(cfg, 0o644)
	os.WriteFile(cfg, b[:256], 0o644)
	got := run(t, tree, nil)
	if len(got) != 1 || got[0].Check != doctor.CheckACS || got[0].Device != "0000:02:00.0" || !strings.Contains(got[0].Found, "256 bytes") {
		t.Errorf("findings %+v", got)
	}
}

func FuzzACSControl(f *testing.F) {
	good := fakesys.ConfigSpace("0x1000", "0xc030", "0x060400", true, &fakesys.ACS{RequestRedirect: true})
	f.Add(good)
	f.Add(good[:256])
	loop := append([]byte{}, good...)
	loop[0x102], loop[0x103] = 0x01, 0x10 // next → 0x100: itself
	loop[0x100] = 0x01                    // not ACS
	f.Add(loop)
	bad := append([]byte{}, good...)
	bad[0x103] = 0xff // next beyond the space
	bad[0x100] = 0x42
	f.Add(bad)
	f.Fuzz(func(t *testing.T, b []byte) {
		ctl, ok, err := doctor.ACSControl(b)
		if err != nil && ok {
			t.Fatalf("ok with an error: %v", err)
		}
		if !ok && ctl != 0 {
			t.Fatalf("control %x without ACS", ctl)
		}
	})
}

func TestACSControl(t *testing.T) {
	ctl, ok, err := doctor.ACSControl(fakesys.ConfigSpace("0x1000", "0xc030", "0x060400", true, &fakesys.ACS{CompletionRedirect: true, UpstreamForwarding: true}))
	if err != nil || !ok || ctl != fakesys.ACSCompletionRedirect|fakesys.ACSUpstreamForwarding {
		t.Errorf("ACS control %x %v %v", ctl, ok, err)
	}
	if _, ok, err := doctor.ACSControl(fakesys.ConfigSpace("0x10de", "0x2330", "0x030200", false, nil)); ok || err != nil {
		t.Errorf("no ACS: %v %v", ok, err)
	}
}

func BenchmarkDoctorVFScale(b *testing.B) {
	_, tree := fakesystest.Build(b, "vf-scale")
	sys, dev := fakesystest.Open(b, tree)
	b.Run("inventory", func(b *testing.B) {
		for b.Loop() {
			if _, err := discovery.NewScanner(sys, dev).Scan(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("inventory+doctor", func(b *testing.B) {
		for b.Loop() {
			inv, err := discovery.NewScanner(sys, dev).Scan()
			if err != nil {
				b.Fatal(err)
			}
			doctor.Run(doctor.Options{Sys: sys}, inv, topology.Build(inv))
		}
	})
}
