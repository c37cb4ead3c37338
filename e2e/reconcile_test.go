package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	podresourcesapi "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/railnet/railnet/pkg/agent"
)

// fakePodResources is the kubelet's pod-resources v1 List over a real unix
// socket: pods → device IDs of resource railnet.io/test.
type fakePodResources struct {
	podresourcesapi.UnimplementedPodResourcesListerServer
	mu   sync.Mutex
	pods map[string][]string // "ns/name" → device IDs
	down bool
}

func (f *fakePodResources) List(context.Context, *podresourcesapi.ListPodResourcesRequest) (*podresourcesapi.ListPodResourcesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, fmt.Errorf("kubelet restarting")
	}
	resp := &podresourcesapi.ListPodResourcesResponse{}
	for key, ids := range f.pods {
		ns, name, _ := strings.Cut(key, "/")
		resp.PodResources = append(resp.PodResources, &podresourcesapi.PodResources{Namespace: ns, Name: name,
			Containers: []*podresourcesapi.ContainerResources{{Name: "c", Devices: []*podresourcesapi.ContainerDevices{
				{ResourceName: "railnet.io/test", DeviceIds: ids}}}}})
	}
	return resp, nil
}

func (f *fakePodResources) set(pods map[string][]string, down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pods, f.down = pods, down
}

func startPodResources(t *testing.T) (*fakePodResources, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "kubelet.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakePodResources{}
	srv := grpc.NewServer()
	podresourcesapi.RegisterPodResourcesListerServer(srv, f)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return f, sock
}

// podArgs is what Multus passes as CNI_ARGS.
func podArgs(ns, name string) [][2]string {
	return [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", ns}, {"K8S_POD_NAME", name}}
}

// With the kubelet's pod-resources, the reconciler releases what no
// running pod holds even when its netns path still exists (a sandbox
// removed without a CNI DEL), and never what a running pod holds even when
// its netns path is gone; without the API it falls back to the path, and
// only a path that does not exist (ENOENT) counts as gone.
func TestReconcilerPodResources(t *testing.T) {
	e := newCNIEnv(t, 3) // VFs 0, 2, 4: ends of different veth pairs
	list := e.conflist(t, "1.1.0", nil)
	ctx := context.Background()
	ns := []string{e.netns(t), e.netns(t), e.netns(t)}
	names := []string{"leftover", "lostpath", "running"}
	for i := range ns {
		rc := rt(fmt.Sprintf("p%d", i), ns[i], "net1", vfBDF(2*i))
		rc.Args = podArgs("team", names[i])
		if _, err := e.cni.AddNetworkList(ctx, list, rc); err != nil {
			t.Fatal(err)
		}
	}
	// "lostpath" keeps running in its netns, but the path is gone: a second
	// bind mount holds the namespace, the runtime's path is removed.
	keep := filepath.Join(t.TempDir(), "held")
	os.WriteFile(keep, nil, 0o600)
	if out, err := exec.Command("mount", "--bind", ns[1], keep).CombinedOutput(); err != nil {
		t.Fatalf("bind: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", keep).Run() })
	if out, err := exec.Command("ip", "netns", "del", filepath.Base(ns[1])).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}

	pods, sock := startPodResources(t)
	// Every device is a pool's; "leftover"'s pod is gone from the kubelet.
	pooled := func(id string) (string, bool) {
		return "railnet.io/test", id == vfBDF(0) || id == vfBDF(2) || id == vfBDF(4)
	}
	pods.set(map[string][]string{"team/lostpath": {vfBDF(2)}, "team/running": {vfBDF(4)}}, false)
	r := &agent.Reconciler{StateDir: e.state, CNIBinary: filepath.Join(binDir, "railnet"), CNIPath: cniPluginDir + ":" + binDir,
		Pods: &agent.KubeletPods{Socket: sock}, ResourceOf: pooled}
	// The kubelet's word alone takes two passes in a row: the first only
	// suspects.
	if n, err := r.Once(ctx); err != nil || n != 0 {
		t.Fatalf("first pass released %d: %v", n, err)
	}
	if _, ok := hostLink(t, e.vfName(0)); ok {
		t.Fatal("released on the first pass")
	}
	n, err := r.Once(ctx)
	if err != nil || n != 1 {
		t.Fatalf("reconciler released %d: %v", n, err)
	}
	if st, ok := hostLink(t, e.vfName(0)); !ok || st.Alias != "" {
		t.Errorf("leftover's VF is not back in the host, as it was: %+v %v", st, ok)
	}
	for i, want := range []bool{false, true, true} {
		_, err := os.Stat(filepath.Join(e.state, "records", fmt.Sprintf("p%d-net1.json", i)))
		if got := err == nil; got != want {
			t.Errorf("record of %s: exists=%v, want %v", names[i], got, want)
		}
	}
	if _, ok := hostLink(t, e.vfName(2)); ok {
		t.Error("lostpath's VF was pulled out of a running pod")
	}

	// A device the kubelet now gives another pod: the old record goes
	// (on the second pass that sees it so).
	pods.set(map[string][]string{"team/lostpath": {vfBDF(2)}, "team/someone-else": {vfBDF(4)}}, false)
	if n, err := r.Once(ctx); err != nil || n != 0 {
		t.Fatalf("released %d on the first pass: %v", n, err)
	}
	if n, err := r.Once(ctx); err != nil || n != 1 {
		t.Fatalf("released %d (device held by another pod): %v", n, err)
	}
	if _, ok := hostLink(t, e.vfName(4)); !ok {
		t.Error("VF 4 not back after its pod was replaced")
	}

	// The kubelet does not answer: only ENOENT counts, and lostpath's netns
	// path is gone. A record whose path cannot be checked (ENOTDIR here,
	// EMFILE or EACCES in life) is kept.
	rec := filepath.Join(e.state, "records", "p1-net1.json")
	raw, err := os.ReadFile(rec)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(raw, &m)
	notDir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notDir, nil, 0o600)
	m["netns"] = notDir + "/ns"
	raw, _ = json.Marshal(m)
	os.WriteFile(rec, raw, 0o600)
	pods.set(nil, true)
	if n, err := r.Once(ctx); err != nil || n != 0 {
		t.Fatalf("released %d with an uncheckable netns path: %v", n, err)
	}
	m["netns"] = ns[1] // gone: ENOENT
	raw, _ = json.Marshal(m)
	os.WriteFile(rec, raw, 0o600)
	if n, err := r.Once(ctx); err != nil || n != 1 {
		t.Fatalf("fallback released %d: %v", n, err)
	}
}

// HostRoot runs DEL chrooted into the host's root (here "/": the test's
// own), the way the DaemonSet does with the host's / mounted at /host.
func TestReconcilerHostRoot(t *testing.T) {
	e := newCNIEnv(t, 1)
	list := e.conflist(t, "1.1.0", nil)
	ctx := context.Background()
	ns := e.netns(t)
	rc := rt("h0", ns, "net1", vfBDF(0))
	rc.Args = podArgs("team", "gone")
	if _, err := e.cni.AddNetworkList(ctx, list, rc); err != nil {
		t.Fatal(err)
	}
	pods, sock := startPodResources(t)
	pods.set(map[string][]string{}, false)
	r := &agent.Reconciler{StateDir: e.state, CNIBinary: filepath.Join(binDir, "railnet"), CNIPath: cniPluginDir + ":" + binDir,
		HostRoot: "/", Pods: &agent.KubeletPods{Socket: sock}, ResourceOf: func(string) (string, bool) { return "railnet.io/test", true }}
	r.Once(ctx) // suspects
	if n, err := r.Once(ctx); err != nil || n != 1 {
		t.Fatalf("released %d: %v", n, err)
	}
	if _, ok := hostLink(t, e.vfName(0)); !ok {
		t.Error("VF not back")
	}
	if l := leases(t, e.ipamDir); len(l) != 0 {
		t.Errorf("leases after release: %v", l)
	}
}

// Right after a kubelet restart its pod list can be empty for a moment:
// one such answer releases nothing, and a pod seen again clears the
// suspicion.
func TestReconcilerKubeletRestartWindow(t *testing.T) {
	e := newCNIEnv(t, 1)
	list := e.conflist(t, "1.1.0", nil)
	ctx := context.Background()
	ns := e.netns(t)
	rc := rt("live", ns, "net1", vfBDF(0))
	rc.Args = podArgs("team", "live")
	if _, err := e.cni.AddNetworkList(ctx, list, rc); err != nil {
		t.Fatal(err)
	}
	pods, sock := startPodResources(t)
	r := &agent.Reconciler{StateDir: e.state, CNIBinary: filepath.Join(binDir, "railnet"), CNIPath: cniPluginDir + ":" + binDir,
		Pods: &agent.KubeletPods{Socket: sock}, ResourceOf: func(string) (string, bool) { return "railnet.io/test", true }}
	for round := 0; round < 3; round++ {
		pods.set(map[string][]string{}, false) // the kubelet just started
		if n, err := r.Once(ctx); err != nil || n != 0 {
			t.Fatalf("round %d: released %d on an empty pod list: %v", round, n, err)
		}
		pods.set(map[string][]string{"team/live": {vfBDF(0)}}, false) // it knows its pods again
		if n, err := r.Once(ctx); err != nil || n != 0 {
			t.Fatalf("round %d: released %d a live pod's device: %v", round, n, err)
		}
	}
	if _, ok := hostLink(t, e.vfName(0)); ok {
		t.Error("the live pod's VF was pulled")
	}
}

// Shared slots are records like any other: the reconciler keeps the slot a
// running pod holds and releases the one no pod holds (its child deleted,
// its lease freed), never touching the other slot's child or the parent.
func TestReconcilerSharedSlots(t *testing.T) {
	e := newSharedEnv(t)
	list := e.sharedList(t, nil)
	ctx := context.Background()
	want := parentView(t, e.parent())
	ns := []string{e.netns(t), e.netns(t)}
	for i, name := range []string{"gone", "running"} {
		rc := rt(fmt.Sprintf("s%d", i), ns[i], "net1", e.slot(i))
		rc.Args = podArgs("team", name)
		if _, err := e.cni.AddNetworkList(ctx, list, rc); err != nil {
			t.Fatal(err)
		}
	}
	pods, sock := startPodResources(t)
	pods.set(map[string][]string{"team/running": {e.slot(1)}}, false)
	pooled := func(id string) (string, bool) { return "railnet.io/roce", strings.HasPrefix(id, e.pfBDF+"#") }
	r := &agent.Reconciler{StateDir: e.state, CNIBinary: filepath.Join(binDir, "railnet"), CNIPath: cniPluginDir + ":" + binDir,
		Pods: &agent.KubeletPods{Socket: sock}, ResourceOf: pooled}
	if n, err := r.Once(ctx); err != nil || n != 0 {
		t.Fatalf("first pass released %d: %v", n, err)
	}
	if n, err := r.Once(ctx); err != nil || n != 1 {
		t.Fatalf("second pass released %d: %v", n, err)
	}
	if l := podLinks(t, ns[0]); len(l) != 0 {
		t.Errorf("the released slot's child is still in its pod: %v", l)
	}
	if l := podLinks(t, ns[1]); len(l) != 1 {
		t.Errorf("the running pod lost its child: %v", l)
	}
	if l := leases(t, e.ipamDir); len(l) != 1 {
		t.Errorf("leases %v, want the running pod's only", l)
	}
	if got := parentView(t, e.parent()); got != want {
		t.Errorf("parent %s, was %s", got, want)
	}
}
