package discovery_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/railnet/railnet/pkg/discovery"
	"github.com/railnet/railnet/pkg/fakesys"
	"github.com/railnet/railnet/pkg/fakesys/fakesystest"
	"github.com/railnet/railnet/pkg/topology"
)

func TestRealMachineQuirks(t *testing.T) {
	m, err := fakesys.Load("testdata/quirks.json")
	if err != nil {
		t.Fatal(err)
	}
	tree, err := fakesys.Materialize(m, fakesystest.TempDir(t))
	if err != nil {
		t.Fatal(err)
	}
	sys := tree.Sys
	write := func(rel, content string) {
		t.Helper()
		p := filepath.Join(sys, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		os.Remove(p)
		if err := os.WriteFile(p, []byte(content), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	symlink := func(target, rel string) {
		t.Helper()
		if err := os.Symlink(target, filepath.Join(sys, rel)); err != nil {
			t.Fatal(err)
		}
	}
	// The LAG: the bond's RDMA device carries the bond master's traffic.
	write("class/infiniband/mlx5_bond_0/ports/1/gid_attrs/ndevs/0", "bond0\n")
	write("devices/virtual/net/bond0/ifindex", "20\n")
	symlink("../../devices/virtual/net/bond0", "class/net/bond0")
	// A software RoCE device on a netdev: virtual, no PCI parent.
	for k, v := range map[string]string{"parent": "enp5s0f1np1", "node_type": "1: CA", "node_guid": "0200:05ff:fe00:0001",
		"sys_image_guid": "0200:05ff:fe00:0001", "ports/1/link_layer": "Ethernet", "ports/1/state": "4: ACTIVE",
		"ports/1/gid_attrs/ndevs/0": "enp5s0f1np1"} {
		write("devices/virtual/infiniband/rxe0/"+k, v+"\n")
	}
	symlink("../../devices/virtual/infiniband/rxe0", "class/infiniband/rxe0")
	write("devices/virtual/infiniband_verbs/uverbs9/ibdev", "rxe0\n")
	symlink("../../devices/virtual/infiniband_verbs/uverbs9", "class/infiniband_verbs/uverbs9")
	if err := os.WriteFile(filepath.Join(tree.Dev, "infiniband/uverbs9"), nil, 0o666); err != nil {
		t.Fatal(err)
	}

	inv := scanTree(t, tree)
	if len(inv.Warnings) != 0 {
		t.Fatalf("warnings: %v", inv.Warnings)
	}
	// The NVIDIA GPU in VGA mode is a GPU; the NIC-vendor bridges and the
	// root complex function are not NICs.
	if len(inv.GPUs) != 1 || inv.GPUs[0].Class != "0x030000" {
		t.Fatalf("GPUs = %+v", inv.GPUs)
	}
	var nics []string
	for _, n := range inv.NICs {
		nics = append(nics, n.BDF)
	}
	if want := []string{"0000:03:00.0", "0000:05:00.0", "0000:05:00.1", "0000:41:00.0"}; !cmp.Equal(nics, want) {
		t.Errorf("NICs = %v, want %v", nics, want)
	}
	bond := inv.RDMADevice("mlx5_bond_0")
	if bond == nil || bond.PCI != "0000:05:00.0" || bond.Netdev != "bond0" {
		t.Errorf("mlx5_bond_0 = %+v, want PCI 0000:05:00.0 on bond0", bond)
	}
	rxe := inv.RDMADevice("rxe0")
	if rxe == nil || rxe.PCI != "" || rxe.Netdev != "enp5s0f1np1" || !cmp.Equal(rxe.CharDevs, []string{"/dev/infiniband/uverbs9"}) {
		t.Errorf("rxe0 = %+v", rxe)
	}
	vmvf := inv.NIC("0000:41:00.0")
	if vmvf.Kind != discovery.KindVF || vmvf.PFVisible || vmvf.PF != "" {
		t.Errorf("VF in a VM = kind %s pfVisible %v pf %q", vmvf.Kind, vmvf.PFVisible, vmvf.PF)
	}
	got := map[string]map[string]string{}
	for g, row := range topology.Build(inv).Matrix {
		got[g] = map[string]string{}
		for n, c := range row {
			got[g][n] = c.String()
		}
	}
	if diff := cmp.Diff(m.Expected.GPUNic, got); diff != "" {
		t.Errorf("matrix (-want +got):\n%s", diff)
	}
}
