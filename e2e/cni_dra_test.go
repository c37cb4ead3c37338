package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"github.com/railnet/railnet/pkg/dra/claims"
	"github.com/railnet/railnet/pkg/state"
)

// With no deviceID from Multus, a NAD's "claim" and the pod's UID find the
// device the DRA driver prepared (its checkpoint); the record names the
// claim and what the pod got, for the claim's networkData. Another pod, or
// a name that selects nothing, is refused with code 7 naming "claim".
func TestCNIDeviceFromDRAClaim(t *testing.T) {
	e := newCNIEnv(t, 1)
	name := e.vfName(0)
	dir := claims.Dir(e.state)
	dev := claims.Device{Request: "nic", Pool: "e2e", DRAPool: "node/e2e", Device: "pci-" + strings.NewReplacer(":", "-", ".", "-").Replace(vfBDF(0)),
		ID: vfBDF(0), BDF: vfBDF(0), Resource: "railnet.io/e2e"}
	if err := claims.Save(dir, &claims.Claim{UID: "claim-uid-1", Namespace: "ml", Name: "trainer-nic-x7k2p", PodClaimName: "nic",
		Pods: []string{"pod-uid-1"}, Devices: []claims.Device{dev}}); err != nil {
		t.Fatal(err)
	}
	list := e.conflist(t, "1.1.0", map[string]any{"claim": "nic"})
	ctx := context.Background()
	pod := func(cid, ns, uid string) *libcni.RuntimeConf {
		return &libcni.RuntimeConf{ContainerID: cid, NetNS: ns, IfName: "net1",
			Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "ml"}, {"K8S_POD_NAME", "trainer"}, {"K8S_POD_UID", uid}}}
	}
	// Another pod: the claim is not its own.
	_, err := e.cni.AddNetworkList(ctx, list, pod("c0", e.netns(t), "pod-uid-2"))
	if cniCode(err) != 7 || !strings.Contains(err.Error(), "claim") || !strings.Contains(err.Error(), "no prepared") {
		t.Fatalf("ADD for another pod: %v", err)
	}
	if _, ok := hostLink(t, name); !ok {
		t.Fatal("a refused ADD moved the VF")
	}
	// A name none of the pod's devices has.
	other := e.conflist(t, "1.1.0", map[string]any{"claim": "storage"})
	if _, err := e.cni.AddNetworkList(ctx, other, pod("c0", e.netns(t), "pod-uid-1")); cniCode(err) != 7 || !strings.Contains(err.Error(), "names none") {
		t.Fatalf("ADD naming another claim: %v", err)
	}
	list = e.conflist(t, "1.1.0", map[string]any{"claim": "nic"})
	rc := pod("c1", e.netns(t), "pod-uid-1")
	res, err := e.cni.AddNetworkList(ctx, list, rc)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if _, ok := hostLink(t, name); ok {
		t.Fatal("the claim's VF is still in the host")
	}
	b, _ := json.Marshal(res)
	recs, _ := state.ReadOnly(e.state).List()
	if len(recs) != 1 {
		t.Fatalf("records: %d", len(recs))
	}
	r := recs[0]
	if r.DeviceID != vfBDF(0) || r.Claim == nil || r.Claim.UID != "claim-uid-1" || r.Claim.Name != "trainer-nic-x7k2p" || r.Claim.Device != dev.Device ||
		r.Claim.Pool != "node/e2e" || r.Claim.Driver != "railnet.io" {
		t.Fatalf("record: %+v claim %+v", r, r.Claim)
	}
	if r.Net == nil || r.Net.IfName != "net1" || len(r.Net.IPs) != 1 || !strings.HasPrefix(r.Net.IPs[0], "198.18.77.") || !strings.Contains(string(b), r.Net.MAC) || r.Net.MAC == "" {
		t.Fatalf("record's net %+v, result %s", r.Net, b)
	}
	if err := e.cni.DelNetworkList(ctx, list, rc); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if _, ok := hostLink(t, name); !ok {
		t.Fatal("the VF is not back in the host")
	}
	if left, _ := filepath.Glob(filepath.Join(e.state, "records", "*.json")); len(left) != 0 {
		t.Fatalf("records left: %v", left)
	}
	// The checkpoint is the driver's: DEL leaves it for Unprepare.
	if _, err := os.Stat(filepath.Join(dir, "claim-uid-1.json")); err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
}
