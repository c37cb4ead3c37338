package e2e

import (
	"bytes"
	"encoding/json"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCNICrashSafety kills ADD with SIGKILL at random points, then runs DEL
// (or GC) and checks that the device is back in the host under its
// original name, MAC, MTU and alias, with no IPAM lease, record or temp
// netns left.
func TestCNICrashSafety(t *testing.T) {
	e := newCNIEnv(t, 1)
	pod := e.netns(t)
	name := e.vfName(0)
	orig, _ := hostLink(t, name)
	killedAdds(t, e, pod, vfBDF(0), "198.18.81.0/24", 120, func(i int, how string, delay time.Duration) {
		now, ok := hostLink(t, name)
		now.Index, orig.Index = 0, 0
		if !ok || now != orig {
			t.Fatalf("iteration %d (kill after %v, %s): host link %+v (present %v), want %+v", i, delay, how, now, ok, orig)
		}
		if l := leases(t, e.ipamDir); len(l) != 0 {
			content, _ := os.ReadFile(filepath.Join(e.ipamDir, "rn"+e.tag, l[0]))
			t.Fatalf("iteration %d (kill after %v, %s): leases left %v (%q)", i, delay, how, l, content)
		}
		left, _ := filepath.Glob(filepath.Join(e.state, "records", "*.json"))
		nss := tempNetns(e)
		if len(left) != 0 || len(nss) != 0 {
			t.Fatalf("iteration %d (kill after %v, %s): records %v, temp netns %v", i, delay, how, left, nss)
		}
		links, _ := exec.Command("ip", "-n", filepath.Base(pod), "-o", "link").CombinedOutput()
		if strings.Count(string(links), "\n") != 1 {
			t.Fatalf("iteration %d (%s): the pod kept links: %s", i, how, links)
		}
	})
}

// killedAdds runs ADD of deviceID through the real binary, kills it with
// SIGKILL at a random point (anywhere inside a whole ADD's time), runs DEL
// or GC (in turn), and calls check after each iteration.
func killedAdds(t *testing.T, e *cniEnv, pod, deviceID, subnet string, iterations int, check func(i int, how string, delay time.Duration)) {
	t.Helper()
	ipamConf := map[string]any{"type": "host-local", "dataDir": e.ipamDir, "ranges": []any{[]any{map[string]string{"subnet": subnet}}}}
	conf, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "rn" + e.tag, "type": "railnet", "sysfsRoot": e.sys,
		"stateDir": e.state, "deviceID": deviceID, "mtu": 1450, "ipam": ipamConf})
	gcConf, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "rn" + e.tag, "type": "railnet", "sysfsRoot": e.sys,
		"stateDir": e.state, "cni.dev/valid-attachments": []any{}, "ipam": ipamConf})
	cniPath := "CNI_PATH=" + cniPluginDir + ":" + binDir
	command := func(cmd string, stdin []byte) *exec.Cmd {
		c := exec.Command(filepath.Join(binDir, "railnet"))
		c.Env = append(os.Environ(), "CNI_COMMAND="+cmd, "CNI_CONTAINERID=crash", "CNI_NETNS="+pod, "CNI_IFNAME=net1", cniPath)
		if cmd == "GC" {
			c.Env = append(os.Environ(), "CNI_COMMAND=GC", cniPath)
		}
		c.Stdin = bytes.NewReader(stdin)
		return c
	}
	run := func(cmd string, stdin []byte) error {
		out, err := command(cmd, stdin).CombinedOutput()
		if err != nil {
			t.Logf("%s: %s", cmd, out)
		}
		return err
	}
	// How long a whole ADD takes here: kills land anywhere inside it.
	start := time.Now()
	if err := run("ADD", conf); err != nil {
		t.Fatal(err)
	}
	full := time.Since(start)
	if err := run("DEL", conf); err != nil {
		t.Fatal(err)
	}
	completed := 0
	for i := range iterations {
		c := command("ADD", conf)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		delay := time.Duration(mrand.Int64N(int64(full) * 12 / 10))
		time.Sleep(delay)
		c.Process.Signal(syscall.SIGKILL)
		if c.Wait() == nil {
			completed++
		}
		how, stdin := "DEL", conf
		if i%2 == 1 {
			how, stdin = "GC", gcConf
		}
		if err := run(how, stdin); err != nil {
			t.Fatalf("iteration %d (kill after %v): %s: %v", i, delay, how, err)
		}
		check(i, how, delay)
	}
	t.Logf("%d iterations; a whole ADD takes %v; %d ADDs finished before the kill", iterations, full, completed)
	if completed == iterations || completed == 0 {
		t.Errorf("kills did not land inside ADD (%d of %d finished)", completed, iterations)
	}
}
