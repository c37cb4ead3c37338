//go:build kerneltest

package kernel

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/vishvananda/netlink"

	"github.com/railnet/railnet/pkg/fakesys"
	"github.com/railnet/railnet/pkg/fakesys/fakesystest"
	"github.com/railnet/railnet/pkg/netdev"
	"github.com/railnet/railnet/pkg/state"
)

// newNetdevsimPF creates a netdevsim device with one port and numVFs VFs and
// returns its PF netdev name.
func newNetdevsimPF(t *testing.T, id, numVFs int) string {
	t.Helper()
	if err := os.WriteFile("/sys/bus/netdevsim/new_device", []byte(fmt.Sprintf("%d 1", id)), 0o200); err != nil {
		t.Fatalf("netdevsim new_device: %v", err)
	}
	t.Cleanup(func() { os.WriteFile("/sys/bus/netdevsim/del_device", []byte(strconv.Itoa(id)), 0o200) })
	dev := fmt.Sprintf("/sys/bus/netdevsim/devices/netdevsim%d", id)
	var name string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		ents, _ := os.ReadDir(dev + "/net")
		if len(ents) > 0 {
			name = ents[0].Name()
			break
		}
	}
	if name == "" {
		t.Fatal("netdevsim port has no netdev")
	}
	if err := os.WriteFile(dev+"/sriov_numvfs", []byte(strconv.Itoa(numVFs)), 0o200); err != nil {
		t.Fatalf("sriov_numvfs: %v", err)
	}
	l, _ := netlink.LinkByName(name)
	netlink.LinkSetUp(l)
	return name
}

func hostNS(t *testing.T) *netdev.Namespace {
	t.Helper()
	h, err := netdev.OpenNamespace("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// The PF/VF interface ADD and DEL use, against the kernel's netdevsim.
func TestVFSettingsOnNetdevsim(t *testing.T) {
	pf := newNetdevsimPF(t, 11, 4)
	vf := netdev.NetlinkVF{NS: hostNS(t)}
	orig, err := vf.Get(pf, 2)
	if err != nil {
		t.Fatal(err)
	}
	mac, _ := net.ParseMAC("02:aa:00:00:00:02")
	vlan, qos, spoof, trust, ls, minR, maxR := 100, 5, false, true, netdev.VFLinkDisable, 100, 2000
	if err := vf.Set(pf, 2, netdev.VFSettings{MAC: mac, VLAN: &vlan, QoS: &qos, SpoofChk: &spoof, Trust: &trust,
		LinkState: &ls, MinTxRate: &minR, MaxTxRate: &maxR}); err != nil {
		t.Fatalf("Set: %v", err)
	}
	got, err := vf.Get(pf, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := state.VFState{MAC: mac.String(), VLAN: 100, QoS: 5, VLANProto: netdev.VLANProto8021Q, SpoofChk: false, Trust: true,
		LinkState: netdev.VFLinkDisable, MinTxRate: 100, MaxTxRate: 2000}
	if got != want {
		t.Errorf("VF 2 as the kernel reports it: %+v, want %+v", got, want)
	}
	// 802.1ad where the driver supports it: netdevsim answers EPROTONOSUPPORT.
	proto := netdev.VLANProto8021AD
	if err := vf.Set(pf, 2, netdev.VFSettings{VLAN: &vlan, VLANProto: &proto}); err != nil {
		t.Logf("802.1ad on netdevsim: %v (not supported by this driver)", err)
	} else if g, _ := vf.Get(pf, 2); g.VLANProto != netdev.VLANProto8021AD {
		t.Errorf("802.1ad accepted but VF reports proto %#x", g.VLANProto)
	}
	if err := vf.Restore(pf, 2, orig); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if got, _ := vf.Get(pf, 2); got != orig {
		t.Errorf("VF 2 after Restore: %+v, want %+v", got, orig)
	}
}

// The full CNI through libcni: the mocked sysfs maps a VF BDF to a veth
// that exists in this kernel, its PF to the netdevsim netdev; the VF
// settings must reach the kernel's PF, and go back on DEL.
func TestCNIOnNetdevsim(t *testing.T) {
	pf := newNetdevsimPF(t, 12, 4)
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "nsimvf1"}, PeerName: "nsimpeer1"}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if l, err := netlink.LinkByName("nsimpeer1"); err == nil {
			netlink.LinkDel(l)
		}
	}()
	tree := mockedPF(t, pf, "nsimvf{n}", 2)
	vfBefore, err := netdev.NetlinkVF{NS: hostNS(t)}.Get(pf, 1)
	if err != nil {
		t.Fatal(err)
	}
	pod := "/var/run/netns/nsimpod"
	if err := netdev.NewPinnedNetns(pod); err != nil {
		t.Fatal(err)
	}
	defer netdev.RemovePinnedNetns(pod)
	stateDir := t.TempDir()
	t.Cleanup(func() { netdev.RemovePinnedNetns(filepath.Join(stateDir, "netns", "staging")) })
	confDir := t.TempDir()
	list := map[string]any{"cniVersion": "1.1.0", "name": "nsim", "plugins": []any{map[string]any{
		"type": "railnet", "sysfsRoot": tree.Sys, "stateDir": stateDir, "vlan": 42, "vlanQoS": 2, "spoofchk": "off",
		"trust": "on", "link_state": "enable", "max_tx_rate": 1000, "mac": "02:bb:00:00:00:01",
		"capabilities": map[string]bool{"deviceID": true},
		"ipam":         map[string]any{"type": "host-local", "dataDir": t.TempDir(), "ranges": []any{[]any{map[string]string{"subnet": "198.18.98.0/24"}}}}}}}
	raw, _ := json.Marshal(list)
	os.WriteFile(filepath.Join(confDir, "10-nsim.conflist"), raw, 0o644)
	cl, err := libcni.LoadConfList(confDir, "nsim")
	if err != nil {
		t.Fatal(err)
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{"/opt/cni/bin"}, t.TempDir(), nil)
	rt := &libcni.RuntimeConf{ContainerID: "nsim1", NetNS: pod, IfName: "net1", CapabilityArgs: map[string]any{"deviceID": "0000:b1:00.2"}}
	ctx := context.Background()
	if _, err := cni.AddNetworkList(ctx, cl, rt); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	got, _ := netdev.NetlinkVF{NS: hostNS(t)}.Get(pf, 1)
	want := state.VFState{MAC: "02:bb:00:00:00:01", VLAN: 42, QoS: 2, VLANProto: netdev.VLANProto8021Q, SpoofChk: false, Trust: true,
		LinkState: netdev.VFLinkEnable, MinTxRate: vfBefore.MinTxRate, MaxTxRate: 1000}
	if got != want {
		t.Errorf("VF 1 on %s after ADD, as the kernel reports it: %+v, want %+v", pf, got, want)
	}
	if err := cni.CheckNetworkList(ctx, cl, rt); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := cni.DelNetworkList(ctx, cl, rt); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if got, _ := (netdev.NetlinkVF{NS: hostNS(t)}).Get(pf, 1); got != vfBefore {
		t.Errorf("VF 1 after DEL: %+v, want %+v", got, vfBefore)
	}
	if _, err := netlink.LinkByName("nsimvf1"); err != nil {
		t.Errorf("VF netdev not back: %v", err)
	}
}

// mockedPF is a one-PF sysfs tree whose PF netdev is pf and whose VFs'
// netdevs follow vfNetdev; VF n is 0000:b1:00.(n+1).
func mockedPF(t testing.TB, pf, vfNetdev string, numVFs int) fakesys.Tree {
	drv := "mlx5_core"
	return fakesystest.OneNIC(t, fakesys.Node{Vendor: "0x15b3", Device: "0x101d", Class: "0x020000", Driver: &drv,
		Netdev: pf, LinkLayer: "ethernet", MAC: "02:00:b1:00:00:00", MTU: 1500, SpeedMbps: 100000, OperState: "up",
		SRIOV: &fakesys.SRIOV{TotalVFs: numVFs, NumVFs: numVFs, VFDevice: "0x101e", VFOffset: 1, VFStride: 1, VFDriver: drv,
			VFNetdev: vfNetdev, VFMac: "02:00:b1:00:01:{n:02x}"}})
}
