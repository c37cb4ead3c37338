package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/railnet/railnet/pkg/cni"
	"github.com/railnet/railnet/pkg/netdev"
	"github.com/railnet/railnet/pkg/state"
)

// recordingVF is a VFConfigurer that keeps VF state in memory: the PF of
// the stand-in tree is a veth, which has no VFs to program. The netlink
// implementation runs against netdevsim in the kernel test tier.
type recordingVF struct {
	mu    sync.Mutex
	vfs   map[string]state.VFState
	calls []string
	fail  error // returned by Set when not nil
}

func newRecordingVF() *recordingVF { return &recordingVF{vfs: map[string]state.VFState{}} }

func (r *recordingVF) key(pf string, vf int) string { return fmt.Sprintf("%s/%d", pf, vf) }

func (r *recordingVF) Get(pf string, vf int) (state.VFState, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.vfs[r.key(pf, vf)]
	if !ok {
		s = state.VFState{MAC: "00:00:00:00:00:00", SpoofChk: true, LinkState: netdev.VFLinkAuto, VLANProto: netdev.VLANProto8021Q}
	}
	return s, nil
}

func (r *recordingVF) Set(pf string, vf int, s netdev.VFSettings) error {
	cur, _ := r.Get(pf, vf)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "set "+r.key(pf, vf))
	if r.fail != nil {
		return r.fail
	}
	if len(s.MAC) > 0 {
		cur.MAC = s.MAC.String()
	}
	if s.VLAN != nil {
		cur.VLAN = *s.VLAN
	}
	if s.QoS != nil {
		cur.QoS = *s.QoS
	}
	if s.VLANProto != nil {
		cur.VLANProto = *s.VLANProto
	}
	if s.SpoofChk != nil {
		cur.SpoofChk = *s.SpoofChk
	}
	if s.Trust != nil {
		cur.Trust = *s.Trust
	}
	if s.LinkState != nil {
		cur.LinkState = *s.LinkState
	}
	if s.MinTxRate != nil {
		cur.MinTxRate = uint32(*s.MinTxRate)
	}
	if s.MaxTxRate != nil {
		cur.MaxTxRate = uint32(*s.MaxTxRate)
	}
	r.vfs[r.key(pf, vf)] = cur
	return nil
}

func (r *recordingVF) Restore(pf string, vf int, o state.VFState) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "restore "+r.key(pf, vf))
	r.vfs[r.key(pf, vf)] = o
	return nil
}

func (e *cniEnv) inProcess(t *testing.T, vf *recordingVF) *cni.Plugin {
	t.Setenv("CNI_PATH", cniPluginDir)
	return &cni.Plugin{VF: func(*netdev.Namespace) netdev.VFConfigurer { return vf }, Stderr: io.Discard}
}

// quietStdout keeps ADD's result off the test output.
func quietStdout(t *testing.T) {
	old := os.Stdout
	devnull, _ := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	os.Stdout = devnull
	t.Cleanup(func() { os.Stdout = old; devnull.Close() })
}

func TestCNIVFSettingsThroughPF(t *testing.T) {
	e := newCNIEnv(t, 1)
	quietStdout(t)
	vf := newRecordingVF()
	p := e.inProcess(t, vf)
	pod := e.netns(t)
	conf, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "rn" + e.tag, "type": "railnet", "sysfsRoot": e.sys,
		"stateDir": e.state, "deviceID": vfBDF(1), "vlan": 100, "vlanQoS": 3, "vlanProto": "802.1ad", "spoofchk": "off",
		"trust": "on", "link_state": "enable", "min_tx_rate": 100, "max_tx_rate": 1000, "mac": "02:11:22:33:44:55",
		"ipam": map[string]any{"type": "host-local", "dataDir": e.ipamDir, "ranges": []any{[]any{map[string]string{"subnet": "198.18.79.0/24"}}}}})
	args := &skel.CmdArgs{ContainerID: "vf1", Netns: pod, IfName: "net1", StdinData: conf}
	orig, _ := vf.Get("rn"+e.tag+"pf", 1)
	result := addResult(t, p, args)
	got, _ := vf.Get("rn"+e.tag+"pf", 1)
	want := state.VFState{MAC: "02:11:22:33:44:55", VLAN: 100, QoS: 3, VLANProto: netdev.VLANProto8021AD, SpoofChk: false, Trust: true,
		LinkState: netdev.VFLinkEnable, MinTxRate: 100, MaxTxRate: 1000}
	if got != want {
		t.Errorf("VF 1 on the PF after ADD: %+v, want %+v", got, want)
	}
	// CHECK sees the VF as configured; a change behind railnet's back fails it.
	if err := p.Check(withPrev(t, args, result)); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	// CHECK compares the pod with ADD's result: an address gone from the
	// pod fails it.
	var res struct {
		IPs []struct{ Address string } `json:"ips"`
	}
	if json.Unmarshal(result, &res); len(res.IPs) != 1 {
		t.Fatalf("ADD result: %s", result)
	}
	ns := filepath.Base(pod)
	exec.Command("ip", "-n", ns, "addr", "del", res.IPs[0].Address, "dev", "net1").Run()
	if err := p.Check(withPrev(t, args, result)); err == nil || !strings.Contains(err.Error(), "lacks address "+res.IPs[0].Address) {
		t.Errorf("CHECK without the address of ADD's result: %v", err)
	}
	exec.Command("ip", "-n", ns, "addr", "add", res.IPs[0].Address, "dev", "net1").Run()
	vlan := 7
	vf.Set("rn"+e.tag+"pf", 1, netdev.VFSettings{VLAN: &vlan})
	if err := p.Check(withPrev(t, args, result)); err == nil || !strings.Contains(err.Error(), "VLAN 7") {
		t.Errorf("CHECK after a VLAN change: %v", err)
	}
	if err := p.Del(args); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if got, _ := vf.Get("rn"+e.tag+"pf", 1); got != orig {
		t.Errorf("VF 1 after DEL: %+v, want the original %+v", got, orig)
	}
	if _, ok := hostLink(t, e.vfName(1)); !ok {
		t.Error("VF netdev not back")
	}
}

// A VF setting the PF refuses fails ADD, and everything is rolled back.
func TestCNIRollbackOnVFFailure(t *testing.T) {
	e := newCNIEnv(t, 1)
	quietStdout(t)
	vf := newRecordingVF()
	vf.fail = errors.New("operation not supported")
	p := e.inProcess(t, vf)
	pod := e.netns(t)
	before := hostView(t, e)
	conf, _ := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "rn" + e.tag, "type": "railnet", "sysfsRoot": e.sys,
		"stateDir": e.state, "deviceID": vfBDF(0), "trust": "on",
		"ipam": map[string]any{"type": "host-local", "dataDir": e.ipamDir, "ranges": []any{[]any{map[string]string{"subnet": "198.18.80.0/24"}}}}})
	err := p.Add(&skel.CmdArgs{ContainerID: "rb", Netns: pod, IfName: "net1", StdinData: conf})
	if err == nil || !strings.Contains(err.Error(), "operation not supported") {
		t.Fatalf("ADD: %v", err)
	}
	if after := hostView(t, e); after != before {
		t.Errorf("host changed:\n%s\n%s", before, after)
	}
	if !strings.Contains(strings.Join(vf.calls, ","), "restore") {
		t.Errorf("VF not restored: %v", vf.calls)
	}
}

// A whole netdev (the PF itself) moves like a VF and comes back.
func TestCNIWholeNetdev(t *testing.T) {
	e := newCNIEnv(t, 1)
	quietStdout(t)
	p := e.inProcess(t, newRecordingVF())
	pod := e.netns(t)
	before, _ := hostLink(t, "rn"+e.tag+"pf")
	conf, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "rn" + e.tag, "type": "railnet", "sysfsRoot": e.sys,
		"stateDir": e.state, "pciBusID": e.pfBDF, "mtu": 8000})
	args := &skel.CmdArgs{ContainerID: "whole", Netns: pod, IfName: "eth9", StdinData: conf}
	if err := p.Add(args); err != nil {
		t.Fatal(err)
	}
	if _, ok := hostLink(t, "rn"+e.tag+"pf"); ok {
		t.Error("PF still in the host")
	}
	if err := p.Del(args); err != nil {
		t.Fatal(err)
	}
	after, _ := hostLink(t, "rn"+e.tag+"pf")
	before.Index, after.Index = 0, 0
	if after != before {
		t.Errorf("PF after DEL %+v, before %+v", after, before)
	}
}

// addResult runs ADD in-process and returns the result it printed.
func addResult(t *testing.T, p *cni.Plugin, args *skel.CmdArgs) []byte {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "stdout")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	old := os.Stdout
	os.Stdout = f
	err = p.Add(args)
	os.Stdout = old
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	b, err := os.ReadFile(f.Name())
	if err != nil || len(b) == 0 {
		t.Fatalf("ADD printed no result: %v", err)
	}
	return b
}

// withPrev adds ADD's printed result as prevResult, as a runtime does for
// CHECK (not the live link: CHECK would compare it with itself).
func withPrev(t *testing.T, args *skel.CmdArgs, result []byte) *skel.CmdArgs {
	t.Helper()
	var conf map[string]any
	json.Unmarshal(args.StdinData, &conf)
	conf["prevResult"] = json.RawMessage(result)
	b, _ := json.Marshal(conf)
	c := *args
	c.StdinData = b
	return &c
}

// A VF bound to vfio-pci (DPDK) has no netdev: its settings are applied on
// the PF, nothing moves, and the result says so (no sandbox).
func TestCNIUserspaceVF(t *testing.T) {
	e := newCNIEnv(t, 2)
	quietStdout(t)
	vf := newRecordingVF()
	p := e.inProcess(t, vf)
	pod := e.netns(t)
	dir, err := filepath.EvalSymlinks(filepath.Join(e.sys, "bus/pci/devices", vfBDF(2)))
	if err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(dir, "net"))
	os.Remove(filepath.Join(dir, "driver"))
	os.MkdirAll(filepath.Join(e.sys, "bus/pci/drivers/vfio-pci"), 0o755)
	rel, _ := filepath.Rel(dir, filepath.Join(e.sys, "bus/pci/drivers/vfio-pci"))
	os.Symlink(rel, filepath.Join(dir, "driver"))
	conf, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "rn" + e.tag, "type": "railnet", "sysfsRoot": e.sys,
		"stateDir": e.state, "deviceID": vfBDF(2), "vlan": 300, "spoofchk": "off"})
	args := &skel.CmdArgs{ContainerID: "dpdk", Netns: pod, IfName: "net1", StdinData: conf}
	r, w, _ := os.Pipe()
	os.Stdout = w
	err = p.Add(args)
	w.Close()
	out, _ := io.ReadAll(r)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if !strings.Contains(string(out), `"pciID": "`+vfBDF(2)+`"`) || strings.Contains(string(out), "sandbox") {
		t.Errorf("result: %s", out)
	}
	if got, _ := vf.Get("rn"+e.tag+"pf", 2); got.VLAN != 300 || got.SpoofChk {
		t.Errorf("VF 2 = %+v", got)
	}
	links, _ := netdev.OpenNamespace(pod)
	defer links.Close()
	if l, _ := links.Handle.LinkList(); len(l) != 1 {
		t.Errorf("the pod got %d links", len(l))
	}
	if err := p.Del(args); err != nil {
		t.Fatal(err)
	}
	if got, _ := vf.Get("rn"+e.tag+"pf", 2); got.VLAN != 0 || !got.SpoofChk {
		t.Errorf("VF 2 after DEL = %+v", got)
	}
}
