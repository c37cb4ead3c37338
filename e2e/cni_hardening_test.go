package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cniconfig "github.com/railnet/railnet/pkg/cni/config"
	"github.com/railnet/railnet/pkg/netdev"
	"github.com/railnet/railnet/pkg/state"
)

// useNode points the plugins this test runs at a node settings file.
func useNode(t *testing.T, node map[string]any) {
	t.Helper()
	b, _ := json.Marshal(node)
	f := filepath.Join(t.TempDir(), "cni.json")
	if err := os.WriteFile(f, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(cniconfig.EnvNodeFile, f)
}

// Only devices the node offers may be attached: what a device plugin
// advertises (a root-owned device-info file), or what the node lists; a
// netdev that carries the host's traffic only when listed.
func TestCNIOnlyOfferedDevices(t *testing.T) {
	e := newCNIEnv(t, 1)
	pod := e.netns(t)
	devinfo := t.TempDir()
	useNode(t, map[string]any{"allowNetconfPaths": true, "devInfoDir": devinfo})
	conf := func(dev string) []byte {
		b, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "rn" + e.tag, "type": "railnet", "sysfsRoot": e.sys,
			"stateDir": e.state, "deviceID": dev})
		return b
	}
	before := hostView(t, e)
	msg, code, stderr := runPlugin(t, "ADD", "o1", pod, "net1", conf(vfBDF(0)))
	if code != 7 || !strings.Contains(msg, "deviceID: "+vfBDF(0)+" is not a device this node offers") {
		t.Fatalf("ADD of an unadvertised VF: code %d %q (%s)", code, msg, stderr)
	}
	if after := hostView(t, e); after != before {
		t.Errorf("a refused ADD changed the host:\n%s\n%s", before, after)
	}
	// A file of another name, or not a regular file, advertises nothing.
	os.Symlink("/etc/hostname", filepath.Join(devinfo, "railnet.io-x-"+vfBDF(0)+"-device.json"))
	if _, code, _ := runPlugin(t, "ADD", "o1", pod, "net1", conf(vfBDF(0))); code != 7 {
		t.Errorf("a symlinked device-info file advertised the VF (code %d)", code)
	}
	os.Remove(filepath.Join(devinfo, "railnet.io-x-"+vfBDF(0)+"-device.json"))
	os.WriteFile(filepath.Join(devinfo, "railnet.io-x-"+vfBDF(0)+"-device.json"), []byte(`{}`), 0o444)
	if msg, code, stderr := runPlugin(t, "ADD", "o1", pod, "net1", conf(vfBDF(0))); code != 0 {
		t.Fatalf("ADD of an advertised VF: code %d %q (%s)", code, msg, stderr)
	}
	if msg, code, _ := runPlugin(t, "DEL", "o1", pod, "net1", conf(vfBDF(0))); code != 0 {
		t.Fatalf("DEL: %d %s", code, msg)
	}

	// The PF's netdev carries a host address: refused even where any
	// device may be attached, accepted once the node lists it.
	pf := "rn" + e.tag + "pf"
	if out, err := exec.Command("ip", "addr", "add", "198.18.201.1/24", "dev", pf).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	useNode(t, map[string]any{"allowNetconfPaths": true, "allowUnadvertisedDevices": true})
	msg, code, _ = runPlugin(t, "ADD", "o2", pod, "net1", conf(e.pfBDF))
	if code != 7 || !strings.Contains(msg, "carries the host's traffic (address 198.18.201.1/24)") {
		t.Fatalf("ADD of the host's PF: code %d %q", code, msg)
	}
	useNode(t, map[string]any{"allowNetconfPaths": true, "allowDevices": []string{e.pfBDF}})
	if msg, code, stderr := runPlugin(t, "ADD", "o2", pod, "net1", conf(e.pfBDF)); code != 0 {
		t.Fatalf("ADD of a listed PF: code %d %q (%s)", code, msg, stderr)
	}
	if msg, code, _ := runPlugin(t, "DEL", "o2", pod, "net1", conf(e.pfBDF)); code != 0 {
		t.Fatalf("DEL: %d %s", code, msg)
	}
}

// STATUS without its IPAM plugin cannot serve an ADD: code 50.
func TestCNIStatusWithoutIPAM(t *testing.T) {
	e := newCNIEnv(t, 1)
	conf, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "rn" + e.tag, "type": "railnet", "sysfsRoot": e.sys,
		"stateDir": e.state, "ipam": map[string]any{"type": "no-such-ipam"}})
	if msg, code, _ := runPlugin(t, "STATUS", "", "", "", conf); code != 50 || !strings.Contains(msg, "no-such-ipam") {
		t.Errorf("STATUS: code %d %q, want 50", code, msg)
	}
}

// runtimeConfig.CNIDeviceInfoFile is confined to the node's device-info
// root: ADD refuses (before touching anything) a path outside it or through
// a symlink, and DEL never deletes such a file.
func TestCNIDeviceInfoFileConfined(t *testing.T) {
	e := newCNIEnv(t, 1)
	pod := e.netns(t)
	victim := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(victim, []byte("precious"), 0o600)
	link := filepath.Join(devInfoRoot, "link-"+e.tag)
	os.MkdirAll(devInfoRoot, 0o755)
	os.Symlink(filepath.Dir(victim), link)
	t.Cleanup(func() { os.Remove(link) })
	conf := func(file string) []byte {
		b, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "rn" + e.tag, "type": "railnet", "sysfsRoot": e.sys,
			"stateDir": e.state, "deviceID": vfBDF(0), "runtimeConfig": map[string]any{"CNIDeviceInfoFile": file}})
		return b
	}
	for _, file := range []string{victim, devInfoRoot + "/../" + filepath.Base(victim), filepath.Join(link, "victim"), "relative/file"} {
		before := hostView(t, e)
		msg, code, _ := runPlugin(t, "ADD", "d1", pod, "net1", conf(file))
		if code != 7 || !strings.Contains(msg, "runtimeConfig.CNIDeviceInfoFile") {
			t.Errorf("ADD with CNIDeviceInfoFile %s: code %d %q", file, code, msg)
		}
		if after := hostView(t, e); after != before {
			t.Errorf("a refused ADD changed the host")
		}
		runPlugin(t, "DEL", "d1", pod, "net1", conf(file))
		if b, err := os.ReadFile(victim); err != nil || string(b) != "precious" {
			t.Fatalf("%s: the file outside the root was touched: %q %v", file, b, err)
		}
	}
	good := filepath.Join(devInfoRoot, "cni", e.tag+"-d1")
	if msg, code, _ := runPlugin(t, "ADD", "d1", pod, "net1", conf(good)); code != 0 {
		t.Fatalf("ADD with a file below the root: %d %s", code, msg)
	}
	if _, err := os.Stat(good); err != nil {
		t.Errorf("device-info file: %v", err)
	}
	if msg, code, _ := runPlugin(t, "DEL", "d1", pod, "net1", conf(good)); code != 0 {
		t.Fatalf("DEL: %d %s", code, msg)
	}
	if _, err := os.Stat(good); !os.IsNotExist(err) {
		t.Errorf("DEL left the device-info file: %v", err)
	}
}

// DEL finds the device by what it is, not by what the pod calls it: a pod
// with CAP_NET_ADMIN renames the VF and makes a veth "net1" carrying the
// VF's alias; DEL brings the real VF home and leaves the impostor.
func TestCNIDelFindsTheDeviceByHardware(t *testing.T) {
	e := newCNIEnv(t, 1)
	list := e.conflist(t, "1.1.0", nil)
	ns := e.netns(t)
	ctx := t.Context()
	rc := rt("imp", ns, "net1", vfBDF(0))
	before, _ := hostLink(t, e.vfName(0))
	if _, err := e.cni.AddNetworkList(ctx, list, rc); err != nil {
		t.Fatal(err)
	}
	in := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", append([]string{"-n", filepath.Base(ns)}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	in("link", "set", "net1", "down")
	in("link", "set", "net1", "name", "hidden0")
	in("link", "add", "net1", "type", "veth", "peer", "name", "net1p")
	in("link", "set", "net1", "alias", e.vfName(0))
	if err := e.cni.DelNetworkList(ctx, list, rc); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	out, err := exec.Command("ip", "-o", "link", "show", e.vfName(0)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), e.vfName(0)+"@"+e.vfName(1)) || !strings.Contains(string(out), before.MAC) {
		t.Errorf("the real VF (peer of %s) is not home as it was: %v %s", e.vfName(1), err, out)
	}
	podLinks, _ := exec.Command("ip", "-n", filepath.Base(ns), "-o", "link").CombinedOutput()
	if !strings.Contains(string(podLinks), "net1@net1p") || strings.Contains(string(podLinks), "hidden0") {
		t.Errorf("in the pod after DEL:\n%s", podLinks)
	}
}

// GC lists records without the device locks; a DEL(c1) and an ADD(c2) of
// the same VF may pass before it takes the lock. It must undo only what
// the record says under the lock: c1 vanished, so c2's VF stays in its pod.
func TestCNIGCRereadsUnderTheLock(t *testing.T) {
	e := newCNIEnv(t, 1)
	list := e.conflist(t, "1.1.0", nil)
	ns := e.netns(t)
	if _, err := e.cni.AddNetworkList(t.Context(), list, rt("c1", ns, "net1", vfBDF(0))); err != nil {
		t.Fatal(err)
	}
	store, err := state.Open(e.state)
	if err != nil {
		t.Fatal(err)
	}
	lock, err := store.LockDevice(vfBDF(0), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conf, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "rn" + e.tag, "type": "railnet", "sysfsRoot": e.sys,
		"stateDir": e.state, "cni.dev/valid-attachments": []any{map[string]string{"containerID": "c2", "ifname": "net1"}}})
	done := make(chan string, 1)
	go func() {
		msg, code, stderr := runPlugin(t, "GC", "", "", "", conf)
		done <- fmt.Sprintf("%d %s %s", code, msg, stderr)
	}()
	time.Sleep(500 * time.Millisecond) // GC has listed c1 and waits for the lock
	// What DEL(c1) then ADD(c2) of the same VF into the same netns leave.
	rec, err := store.Load("c1", "net1")
	if err != nil {
		t.Fatal(err)
	}
	store.Delete("c1", "net1")
	rec.ContainerID, rec.Created = "c2", time.Now().UTC()
	if err := store.Save(rec); err != nil {
		t.Fatal(err)
	}
	lock.Unlock()
	res := <-done
	if _, ok := hostLink(t, e.vfName(0)); ok {
		t.Errorf("GC undid c2's attachment from c1's stale record (GC: %s)", res)
	}
	if _, err := store.Load("c2", "net1"); err != nil {
		t.Errorf("c2's record: %v", err)
	}
	if err := e.cni.DelNetworkList(t.Context(), list, rt("c2", ns, "net1", vfBDF(0))); err != nil {
		t.Errorf("DEL c2: %v", err)
	}
}

// Every IPAM delegate call has a deadline: a plugin that hangs makes ADD
// fail (code 11) and roll back instead of holding the device's lock.
func TestCNIIPAMDeadline(t *testing.T) {
	e := newCNIEnv(t, 1)
	pod := e.netns(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hang-ipam"), []byte("#!/bin/sh\n[ \"$CNI_COMMAND\" = ADD ] && exec sleep 600\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("RAILNET_IPAM_TIMEOUT", "1s")
	conf, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "rn" + e.tag, "type": "railnet", "sysfsRoot": e.sys,
		"stateDir": e.state, "deviceID": vfBDF(0), "ipam": map[string]any{"type": "hang-ipam"}})
	before := hostView(t, e)
	c := exec.Command(filepath.Join(binDir, "railnet"))
	c.Env = append(os.Environ(), "CNI_COMMAND=ADD", "CNI_CONTAINERID=hang", "CNI_NETNS="+pod, "CNI_IFNAME=net1", "CNI_PATH="+dir)
	c.Stdin = strings.NewReader(string(conf))
	start := time.Now()
	out, _ := c.Output()
	took := time.Since(start)
	var res struct {
		Code uint   `json:"code"`
		Msg  string `json:"msg"`
	}
	json.Unmarshal(out, &res)
	if res.Code != 11 || !strings.Contains(res.Msg, "did not answer in time") || took > 20*time.Second {
		t.Fatalf("ADD with a hung IPAM plugin: %s after %v", out, took)
	}
	if after := hostView(t, e); after != before {
		t.Errorf("the failed ADD was not rolled back:\n%s\n%s", before, after)
	}
}

// Two ADDs racing for one device: exactly one wins, the other gets code 11
// and leaves nothing behind; the device is in exactly one pod.
func TestCNIRacingAddsForOneDevice(t *testing.T) {
	e := newCNIEnv(t, 1)
	conf, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "rn" + e.tag, "type": "railnet", "sysfsRoot": e.sys,
		"stateDir": e.state, "deviceID": vfBDF(0)})
	for round := 0; round < 5; round++ {
		nss := []string{e.netns(t), e.netns(t)}
		codes := make(chan uint, 2)
		for i, ns := range nss {
			go func() {
				_, code, _ := runPlugin(t, "ADD", fmt.Sprintf("race%d-%d", round, i), ns, "net1", conf)
				codes <- code
			}()
		}
		got := []uint{<-codes, <-codes}
		if !(got[0] == 0 && got[1] == 11 || got[0] == 11 && got[1] == 0) {
			t.Fatalf("round %d: codes %v, want one 0 and one 11", round, got)
		}
		winner := -1
		for i, ns := range nss {
			if exec.Command("ip", "-n", filepath.Base(ns), "link", "show", "net1").Run() == nil {
				if winner >= 0 {
					t.Fatalf("round %d: the VF is in two pods", round)
				}
				winner = i
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: the VF is in no pod", round)
		}
		if _, err := os.Stat(filepath.Join(e.state, "records", fmt.Sprintf("race%d-%d-net1.json", round, 1-winner))); !os.IsNotExist(err) {
			t.Errorf("round %d: the loser left a record: %v", round, err)
		}
		if msg, code, _ := runPlugin(t, "DEL", fmt.Sprintf("race%d-%d", round, winner), nss[winner], "net1", conf); code != 0 {
			t.Fatalf("DEL: %d %s", code, msg)
		}
	}
}

// The staged way (host → staging netns, renamed there → pod), which ADD
// takes when the kernel refuses the one-message move, still moves and
// restores a link exactly.
func TestStagedMove(t *testing.T) {
	requireRoot(t)
	tag := randTag()
	name := "rn" + tag + "s0"
	if out, err := exec.Command("ip", "link", "add", name, "mtu", "1400", "type", "veth", "peer", "name", name+"p").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "link", "del", name+"p").Run() })
	before, _ := hostLink(t, name)
	var nss []*netdev.Namespace
	for _, n := range []string{"rn" + tag + "-pod", "rn" + tag + "-stage"} {
		if out, err := exec.Command("ip", "netns", "add", n).CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		t.Cleanup(func() { exec.Command("ip", "netns", "del", n).Run() })
		ns, err := netdev.OpenNamespace("/var/run/netns/" + n)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ns.Close() })
		nss = append(nss, ns)
	}
	host, err := netdev.OpenNamespace("")
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	pod, stage := nss[0], nss[1]
	if err := netdev.MoveIn(host, stage, pod, name, "net1", nil, 1300); err != nil {
		t.Fatalf("staged MoveIn: %v", err)
	}
	l, err := pod.Handle.LinkByName("net1")
	if err != nil || l.Attrs().MTU != 1300 || l.Attrs().Alias != name {
		t.Fatalf("in the pod: %v %+v", err, l)
	}
	hs := netdev.HostState{Name: before.Name, MAC: before.MAC, MTU: before.MTU, Alias: before.Alias, Up: before.Up}
	if err := netdev.MoveOut(host, stage, pod, hs, "net1"); err != nil {
		t.Fatalf("MoveOut: %v", err)
	}
	if after, ok := hostLink(t, name); !ok || after.MAC != before.MAC || after.MTU != before.MTU || after.Alias != before.Alias {
		t.Errorf("home: %+v, was %+v", after, before)
	}
}
