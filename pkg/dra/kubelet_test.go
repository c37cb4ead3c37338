package dra

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/railnet/railnet/pkg/dra/claims"
	"github.com/railnet/railnet/pkg/dra/kubeapi/kubeapitest"
	"github.com/railnet/railnet/pkg/pools"
)

// startDriver runs a driver against a fake API server with its kubelet
// sockets in a temporary directory.
func startDriver(t *testing.T, srv *kubeapitest.Server, maxPerSlice int) (*Driver, Options) {
	t.Helper()
	dir := t.TempDir()
	o := Options{NodeName: "node-a", Client: srv.Client(t), ClaimsDir: filepath.Join(dir, "dra"), CDIDir: filepath.Join(dir, "cdi"),
		RegistrarDir: filepath.Join(dir, "reg"), PluginDir: filepath.Join(dir, "plugin"), MaxPerSlice: maxPerSlice}
	d := New(o)
	ctx, cancel := context.WithCancel(context.Background())
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop(); cancel() })
	return d, o
}

// railnetSlices: this node's railnet.io slices of a pool, in name order.
func railnetSlices(srv *kubeapitest.Server, pool string) []resourceapi.ResourceSlice {
	var out []resourceapi.ResourceSlice
	for _, s := range srv.Slices() {
		if s.Spec.Driver == DriverName && s.Spec.Pool.Name == pool {
			out = append(out, s)
		}
	}
	return out
}

// waitSlices waits until the pool's slices hold want devices in one
// complete generation, and returns them.
func waitSlices(t *testing.T, srv *kubeapitest.Server, pool string, want int) []resourceapi.ResourceSlice {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := railnetSlices(srv, pool)
		n, complete := 0, len(got) > 0
		for _, s := range got {
			n += len(s.Spec.Devices)
			complete = complete && s.Spec.Pool.Generation == got[0].Spec.Pool.Generation && s.Spec.Pool.ResourceSliceCount == int64(len(got))
		}
		if complete && n == want {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool %s: %d devices in %d slices, want %d devices", pool, n, len(got), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The publisher writes a pool as slices in the allocator's order, owned by
// the node; leaves it alone while nothing changes; writes a new
// generation when a device goes; puts back a slice someone deleted; drops
// pools no longer published; leaves other drivers' and nodes' slices; and
// retries after the API fails.
func TestPublishSlices(t *testing.T) {
	s := scan(t, "dgx-h100-like")
	ps := everyNIC(t, s, "")
	n := len(Devices(&ps[0], s.inv, s.topo)) // the healthy ones
	if n < 10 {
		t.Fatalf("%d devices", n)
	}
	srv := kubeapitest.Start(t)
	srv.AddNode("node-a", "uid-node-a")
	other := "node-b"
	c := srv.Client(t)
	for _, sl := range []*resourceapi.ResourceSlice{
		{Spec: resourceapi.ResourceSliceSpec{Driver: DriverName, NodeName: &other, Pool: resourceapi.ResourcePool{Name: "node-b/all", ResourceSliceCount: 1}}},
		{Spec: resourceapi.ResourceSliceSpec{Driver: "gpu.example.com", NodeName: new("node-a"), Pool: resourceapi.ResourcePool{Name: "gpus", ResourceSliceCount: 1}}},
		{Spec: resourceapi.ResourceSliceSpec{Driver: DriverName, NodeName: new("node-a"), Pool: resourceapi.ResourcePool{Name: "node-a/gone", ResourceSliceCount: 1}}},
	} {
		sl.GenerateName = "x-"
		if _, err := c.CreateSlice(context.Background(), sl, "test"); err != nil {
			t.Fatal(err)
		}
	}
	var fails atomic.Int32
	fails.Store(2)
	srv.Fail = func(r *http.Request) int {
		if r.Method == http.MethodPost && fails.Add(-1) >= 0 {
			return http.StatusInternalServerError
		}
		return 0
	}
	d, _ := startDriver(t, srv, 4)
	d.Publish(ps, s.inv, s.topo)
	pool := PoolName("node-a", "all")
	got := waitSlices(t, srv, pool, n)
	if fails.Load() >= 0 {
		t.Fatal("the publisher never met the injected failures")
	}
	if len(got) != (n+3)/4 || got[0].Spec.Pool.Generation != 1 {
		t.Fatalf("%d slices of generation %d, want %d of 1", len(got), got[0].Spec.Pool.Generation, (n+3)/4)
	}
	var names []string
	for _, sl := range got {
		if sl.Spec.NodeName == nil || *sl.Spec.NodeName != "node-a" || len(sl.OwnerReferences) != 1 ||
			sl.OwnerReferences[0].UID != "uid-node-a" || sl.OwnerReferences[0].Kind != "Node" {
			t.Fatalf("slice %s: node %v, owners %+v", sl.Name, sl.Spec.NodeName, sl.OwnerReferences)
		}
		for _, dv := range sl.Spec.Devices {
			names = append(names, dv.Name)
		}
	}
	var want []string
	for _, dv := range Devices(&ps[0], s.inv, s.topo) {
		want = append(want, dv.Name)
	}
	if !slices.Equal(names, want) {
		t.Fatalf("devices in name order:\n%v\nwant\n%v", names, want)
	}
	// A pass of its own: after the publisher's (passes take turns), so the
	// pool no longer published is gone by now.
	if err := d.syncSlices(context.Background()); err != nil {
		t.Fatal(err)
	}
	left := srv.Slices()
	if len(left) != len(got)+2 || len(railnetSlices(srv, "node-a/gone")) != 0 {
		t.Fatalf("other slices: %d in all, %d of this pool", len(left), len(got))
	}
	// Nothing changed: a pass reads and writes nothing.
	w := srv.Writes()
	if err := d.syncSlices(context.Background()); err != nil || srv.Writes() != w {
		t.Fatalf("an unchanged pool was written: %d writes, %v", srv.Writes()-w, err)
	}
	// A device goes (its PF is unhealthy): generation 2, fewer devices.
	gone := ps[0].Devices[0].PF
	for i := range ps[0].Devices {
		if ps[0].Devices[i].PF == gone {
			ps[0].Devices[i].Health = pools.Unhealthy
		}
	}
	m := len(Devices(&ps[0], s.inv, s.topo))
	d.Publish(ps, s.inv, s.topo)
	got = waitSlices(t, srv, pool, m)
	if got[0].Spec.Pool.Generation != 2 || len(got) != (m+3)/4 {
		t.Fatalf("after a change: %d slices of generation %d", len(got), got[0].Spec.Pool.Generation)
	}
	// Someone deletes a slice: the next pass writes the pool again.
	srv.DeleteSlice(got[0].Name)
	if err := d.syncSlices(context.Background()); err != nil {
		t.Fatal(err)
	}
	got = waitSlices(t, srv, pool, m)
	if got[0].Spec.Pool.Generation != 3 {
		t.Fatalf("after a deletion: generation %d", got[0].Spec.Pool.Generation)
	}
}

// The kubelet's view: registration names the driver, its DRA socket and
// v1.DRAPlugin; NodePrepareResources reads each claim from the API and
// answers per claim (prepared, replaced, not allocated, missing);
// NodeUnprepareResources removes the checkpoint; Stop removes the sockets.
func TestKubeletPlugin(t *testing.T) {
	s := scan(t, "dgx-h100-like")
	ps := everyNIC(t, s, "")
	srv := kubeapitest.Start(t)
	srv.AddNode("node-a", "uid-node-a")
	d, o := startDriver(t, srv, 0)
	d.Publish(ps, s.inv, s.topo)
	ctx := context.Background()
	dial := func(path string) *grpc.ClientConn {
		cc, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	regPath := filepath.Join(o.RegistrarDir, "railnet.io-reg.sock")
	reg := registerapi.NewRegistrationClient(dial(regPath))
	info, err := reg.GetInfo(ctx, &registerapi.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Type != registerapi.DRAPlugin || info.Name != DriverName || info.Endpoint != filepath.Join(o.PluginDir, "dra.sock") ||
		!slices.Equal(info.SupportedVersions, []string{drapb.DRAPluginService}) {
		t.Fatalf("GetInfo: %+v", info)
	}
	if _, err := reg.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(regPath); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("registration socket: %v %v", st, err)
	}

	pool := PoolName("node-a", "all")
	dev := DeviceName(ps[0].Devices[0].ID)
	ok := allocated("uid-ok", "ok", []string{"p1"}, result("nic/alt", pool, dev))
	replaced := allocated("uid-new", "replaced", nil, result("nic", pool, DeviceName(ps[0].Devices[1].ID)))
	unalloc := allocated("uid-un", "unalloc", nil)
	unalloc.Status.Allocation = nil
	for _, c := range []*resourceapi.ResourceClaim{ok, replaced, unalloc} {
		srv.AddClaim(c)
	}
	plugin := drapb.NewDRAPluginClient(dial(info.Endpoint))
	resp, err := plugin.NodePrepareResources(ctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{
		{Namespace: "ns", Name: "ok", Uid: "uid-ok"},
		{Namespace: "ns", Name: "replaced", Uid: "uid-old"},
		{Namespace: "ns", Name: "unalloc", Uid: "uid-un"},
		{Namespace: "ns", Name: "missing", Uid: "uid-missing"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	r := resp.Claims["uid-ok"]
	if r == nil || r.Error != "" || len(r.Devices) != 1 || r.Devices[0].PoolName != pool || r.Devices[0].DeviceName != dev ||
		!slices.Equal(r.Devices[0].RequestNames, []string{"nic"}) || len(r.Devices[0].CdiDeviceIds) != 1 {
		t.Fatalf("prepared claim: %+v", r)
	}
	for uid, want := range map[string]string{"uid-old": "another claim now", "uid-un": "not allocated", "uid-missing": "not found"} {
		if r := resp.Claims[uid]; r == nil || !strings.Contains(r.Error, want) {
			t.Fatalf("claim %s: %+v, want an error saying %q", uid, r, want)
		}
	}
	if _, err := claims.Load(o.ClaimsDir, "uid-ok"); err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	if _, err := claims.Load(o.ClaimsDir, "uid-new"); !os.IsNotExist(err) {
		t.Fatalf("a replaced claim was prepared: %v", err)
	}
	un, err := plugin.NodeUnprepareResources(ctx, &drapb.NodeUnprepareResourcesRequest{Claims: []*drapb.Claim{
		{Namespace: "ns", Name: "ok", Uid: "uid-ok"}, {Namespace: "ns", Name: "never", Uid: "uid-never"}}})
	if err != nil || un.Claims["uid-ok"].Error != "" || un.Claims["uid-never"].Error != "" {
		t.Fatalf("unprepare: %+v %v", un, err)
	}
	if _, err := claims.Load(o.ClaimsDir, "uid-ok"); !os.IsNotExist(err) {
		t.Fatalf("checkpoint after unprepare: %v", err)
	}
	d.Stop()
	for _, p := range []string{regPath, info.Endpoint} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s after Stop: %v", p, err)
		}
	}
}
