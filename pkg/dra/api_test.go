package dra

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	resourceapi "k8s.io/api/resource/v1"

	"github.com/railnet/railnet/pkg/dra/claims"
	"github.com/railnet/railnet/pkg/dra/kubeapi/kubeapitest"
	"github.com/railnet/railnet/pkg/state"
)

// A checkpoint whose claim the API no longer has (a pod force-deleted
// before the kubelet unprepared it) neither holds its device against a new
// claim nor outlives Collect; one whose claim exists is kept.
func TestStaleCheckpoints(t *testing.T) {
	s := scan(t, "dgx-h100-like")
	ps := everyNIC(t, s, "")
	dir := t.TempDir()
	srv := kubeapitest.Start(t)
	o := Options{NodeName: "n", ClaimsDir: filepath.Join(dir, "dra"), CDIDir: filepath.Join(dir, "cdi"), Client: srv.Client(t)}
	d := New(o)
	d.Publish(ps, s.inv, s.topo)
	pool := PoolName("n", "all")
	a, b := DeviceName(ps[0].Devices[0].ID), DeviceName(ps[0].Devices[1].ID)
	gone := allocated("uid-gone", "gone", []string{"p1"}, result("nic", pool, a))
	kept := allocated("uid-kept", "kept", []string{"p2"}, result("nic", pool, b))
	for _, c := range []*resourceapi.ResourceClaim{gone, kept} {
		if _, err := d.Prepare(c); err != nil {
			t.Fatal(err)
		}
	}
	srv.AddClaim(kept)
	// A new claim for the device the vanished claim held: prepared.
	if _, err := d.Prepare(allocated("uid-new", "new", []string{"p3"}, result("nic", pool, a))); err != nil {
		t.Fatalf("a device held by a claim that is gone: %v", err)
	}
	if _, err := claims.Load(o.ClaimsDir, "uid-gone"); !os.IsNotExist(err) {
		t.Fatalf("the vanished claim's checkpoint: %v", err)
	}
	// The existing claim's device stays its own.
	if _, err := d.Prepare(allocated("uid-x", "x", nil, result("nic", pool, b))); err == nil {
		t.Fatal("a device of an existing claim was prepared for another")
	}
	d.Collect(context.Background())
	all, _ := claims.List(o.ClaimsDir)
	var uids []string
	for _, c := range all {
		uids = append(uids, c.UID)
	}
	if !slices.Equal(uids, []string{"uid-kept"}) {
		t.Fatalf("after Collect: %v, want only uid-kept (uid-new's claim is not in the API either)", uids)
	}
}

// networkData: a CNI record of a claim's device, once ADD is done, becomes
// the claim's status.devices entry; other drivers' entries stay.
func TestNetworkData(t *testing.T) {
	dir := t.TempDir()
	c := allocated("uid-1", "pod-nic", []string{"p1"}, result("nic", "n/all", "pci-0000-04-00-2"))
	c.Status.Devices = []resourceapi.AllocatedDeviceStatus{{Driver: "gpu.example.com", Pool: "x", Device: "gpu-0"}}
	srv := kubeapitest.Start(t)
	srv.AddClaim(c)
	store, err := state.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	rec := &state.Record{ContainerID: "c1", IfName: "net1", Phase: state.PhaseIPAM, DeviceID: "0000:04:00.2",
		Claim: &state.ClaimRef{UID: "uid-1", Namespace: "ns", Name: "pod-nic", Request: "nic", Driver: DriverName, Pool: "n/all", Device: "pci-0000-04-00-2"},
		Net:   &state.NetData{IfName: "net1", MAC: "02:00:00:00:00:01", IPs: []string{"10.79.0.5/24"}}}
	if err := store.Save(rec); err != nil {
		t.Fatal(err)
	}
	nd := &NetworkData{Driver: New(Options{Client: srv.Client(t)}), StateDir: dir}
	get := func() []resourceapi.AllocatedDeviceStatus { return srv.Claim("ns", "pod-nic").Status.Devices }
	nd.Sync(context.Background())
	if devs := get(); len(devs) != 1 {
		t.Fatalf("written before ADD was done: %+v", devs)
	}
	rec.Phase = state.PhaseDone
	if err := store.Save(rec); err != nil {
		t.Fatal(err)
	}
	nd.Sync(context.Background())
	devs := get()
	if len(devs) != 2 || devs[0].Driver != "gpu.example.com" || devs[1].Driver != DriverName || devs[1].Device != "pci-0000-04-00-2" ||
		devs[1].NetworkData == nil || devs[1].NetworkData.InterfaceName != "net1" || !slices.Equal(devs[1].NetworkData.IPs, []string{"10.79.0.5/24"}) ||
		devs[1].NetworkData.HardwareAddress != "02:00:00:00:00:01" {
		t.Fatalf("status.devices: %+v", devs)
	}
	// A claim of the same name but another UID is not written.
	rec.Claim.UID, rec.ContainerID = "uid-other", "c2"
	rec.Net.IfName = "net2"
	if err := store.Save(rec); err != nil {
		t.Fatal(err)
	}
	nd.Sync(context.Background())
	for _, d := range get() {
		if d.NetworkData != nil && d.NetworkData.InterfaceName == "net2" {
			t.Fatal("networkData written to a claim with another UID")
		}
	}
}
