package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

const testKeyHex = "5eed0b5eed0b5eed0b5eed0b5eed0b5e" // 16 bytes: aes-gcm-128

// encNode gives the CNI a keys directory and an audit file through the
// node settings file (as the DaemonSet does), keys for namespace "ml".
type encNode struct {
	keysDir, audit, logFile string
}

func newEncNode(t *testing.T, files map[string]string) *encNode {
	t.Helper()
	dir := t.TempDir()
	n := &encNode{keysDir: filepath.Join(dir, "keys"), audit: filepath.Join(dir, "audit", "audit.log"), logFile: filepath.Join(dir, "cni.log")}
	os.MkdirAll(filepath.Join(n.keysDir, "ml"), 0o700)
	os.Chmod(n.keysDir, 0o700)
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(n.keysDir, "ml", name), []byte(body), 0o400); err != nil {
			t.Fatal(err)
		}
	}
	useNode(t, map[string]any{"allowNetconfPaths": true, "allowUnadvertisedDevices": true, "deviceInfoRoot": devInfoRoot,
		"keysDir": n.keysDir, "auditFile": n.audit, "logFile": n.logFile})
	return n
}

// noKeyMaterial fails when the key's hex (or its bytes) is in any file
// below the directories, or in the text.
func noKeyMaterial(t *testing.T, texts []string, dirs ...string) {
	t.Helper()
	raw := []byte{0x5e, 0xed, 0x0b, 0x5e, 0xed, 0x0b, 0x5e, 0xed}
	for _, s := range texts {
		if strings.Contains(strings.ToLower(s), testKeyHex[:16]) {
			t.Errorf("key material in %q", s)
		}
	}
	for _, d := range dirs {
		filepath.Walk(d, func(p string, info os.FileInfo, err error) error {
			if err != nil || info.IsDir() || filepath.Base(filepath.Dir(p)) == "ml" {
				return nil // the key files themselves
			}
			b, _ := os.ReadFile(p)
			if bytes.Contains(bytes.ToLower(b), []byte(testKeyHex[:16])) || bytes.Contains(b, raw) {
				t.Errorf("key material in %s", p)
			}
			return nil
		})
	}
}

// Key hygiene: a key file that is missing, open to others, not root's,
// empty, malformed, with a duplicate id or a wrong length, or a keys name
// that leaves keysDir, is refused with code 7 before anything is installed,
// the device comes back, the address is released, a refusal is audited,
// and no error, log, record or audit line holds key material.
func TestCNIEncryptionRefusals(t *testing.T) {
	good := "1 aes-gcm-128 " + testKeyHex + "\n"
	n := newEncNode(t, map[string]string{
		"good": good, "short": "1 aes-gcm-128 " + testKeyHex[:30] + "\n", "empty": "",
		"dup": good + good, "garbage": "this is not a key file\n", "open": good, "notroot": good,
	})
	os.Chmod(filepath.Join(n.keysDir, "ml", "open"), 0o444)
	os.Chown(filepath.Join(n.keysDir, "ml", "notroot"), 4321, 4321)
	e := newCNIEnv(t, 1)
	ctx := context.Background()
	pod := e.netns(t)
	orig, _ := hostLink(t, e.vfName(0))
	var texts []string
	for _, c := range []struct {
		enc  map[string]any
		want string
	}{
		{map[string]any{"mode": "ipsec", "keys": "missing"}, "does not exist"},
		{map[string]any{"mode": "ipsec", "keys": "short"}, "16-byte key"},
		{map[string]any{"mode": "ipsec", "keys": "empty"}, "no key"},
		{map[string]any{"mode": "ipsec", "keys": "dup"}, "used twice"},
		{map[string]any{"mode": "ipsec", "keys": "garbage"}, "line 1"},
		{map[string]any{"mode": "ipsec", "keys": "open"}, "group or others"},
		{map[string]any{"mode": "ipsec", "keys": "notroot"}, "not root"},
		{map[string]any{"mode": "ipsec", "keys": "../ml/good"}, "encryption.keys"},
		{map[string]any{"mode": "ipsec", "keys": "good", "maxPeers": 100}, "encryption.maxPeers"},
		{map[string]any{"mode": "ipsec", "keys": "good", "offload": "always"}, "encryption.offload"},
		{map[string]any{"mode": "wireguard", "keys": "good"}, "encryption.mode"},
	} {
		list := e.conflist(t, "1.1.0", map[string]any{"encryption": c.enc})
		rc := rt("enc", pod, "net1", vfBDF(0))
		rc.Args = podArgs("ml", "trainer")
		_, err := e.cni.AddNetworkList(ctx, list, rc)
		if cniCode(err) != 7 || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v (code %d), want 7 with %q", c.enc, err, cniCode(err), c.want)
			continue
		}
		texts = append(texts, err.Error())
		if now, ok := hostLink(t, e.vfName(0)); !ok || now.MAC != orig.MAC || now.MTU != orig.MTU {
			t.Fatalf("%v: the VF did not come back: %+v", c.enc, now)
		}
		if l := leases(t, e.ipamDir); len(l) != 0 {
			t.Fatalf("%v: leases left %v", c.enc, l)
		}
		if recs, _ := filepath.Glob(filepath.Join(e.state, "records", "*.json")); len(recs) != 0 {
			t.Fatalf("%v: records left %v", c.enc, recs)
		}
		if out, _ := exec.Command("ip", "-n", filepath.Base(pod), "xfrm", "state").CombinedOutput(); len(bytes.TrimSpace(out)) != 0 {
			t.Fatalf("%v: SAs left: %s", c.enc, out)
		}
	}
	audit, err := os.ReadFile(n.audit)
	if err != nil {
		t.Fatalf("no audit log: %v", err)
	}
	if st, _ := os.Stat(n.audit); st.Mode().Perm() != 0o600 {
		t.Errorf("audit log mode %v", st.Mode())
	}
	refusals := 0
	for _, line := range strings.Split(strings.TrimSpace(string(audit)), "\n") {
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		if ev["event"] == "refusal" && ev["podNamespace"] == "ml" && ev["podName"] == "trainer" && ev["containerID"] == "enc" && ev["outcome"] != "ok" {
			refusals++
		}
	}
	// The key file ones and maxPeers reach the step; the netconf ones are
	// refused before the attachment exists.
	if refusals != 8 {
		t.Errorf("%d refusals audited, want 8:\n%s", refusals, audit)
	}
	noKeyMaterial(t, texts, e.state, filepath.Dir(n.audit), filepath.Dir(n.logFile))
}

// On a kernel with ESP the attachment is encrypted (the kernel tier
// proves the traffic); this host's kernel has none, which ADD says, and
// takes everything back. Either way no key material leaks.
func TestCNIEncryptionOnThisKernel(t *testing.T) {
	n := newEncNode(t, map[string]string{"good": "1 aes-gcm-128 " + testKeyHex + "\n"})
	e := newCNIEnv(t, 1)
	ctx := context.Background()
	pod := e.netns(t)
	list := e.conflist(t, "1.1.0", map[string]any{"encryption": map[string]any{"mode": "ipsec", "keys": "good"}})
	rc := rt("enc", pod, "net1", vfBDF(0))
	rc.Args = podArgs("ml", "trainer")
	r, err := e.cni.AddNetworkList(ctx, list, rc)
	var texts []string
	if err == nil {
		out, _ := exec.Command("ip", "-n", filepath.Base(pod), "xfrm", "state").CombinedOutput()
		if n := strings.Count(string(out), "proto esp"); n != 2*253 {
			t.Errorf("%d SAs, want %d (2 per peer of a /24)", n, 2*253)
		}
		if err := e.cni.DelNetworkList(ctx, list, rc); err != nil {
			t.Fatal(err)
		}
		js, _ := json.Marshal(r)
		texts = append(texts, string(js))
	} else {
		if !strings.Contains(err.Error(), "ESP") {
			t.Fatalf("ADD on a kernel without ESP: %v", err)
		}
		texts = append(texts, err.Error())
		if recs, _ := filepath.Glob(filepath.Join(e.state, "records", "*.json")); len(recs) != 0 {
			t.Fatalf("records left: %v", recs)
		}
		if l := leases(t, e.ipamDir); len(l) != 0 {
			t.Fatalf("leases left %v", l)
		}
	}
	if out, _ := exec.Command("ip", "-n", filepath.Base(pod), "xfrm", "policy").CombinedOutput(); len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("policies left: %s", out)
	}
	noKeyMaterial(t, texts, e.state, filepath.Dir(n.audit), filepath.Dir(n.logFile))
	_ = libcni.RuntimeConf{}
}

// MACsec on this kernel: where it has no macsec, ADD says so and takes the
// device, the address and the record back (the kernel tier proves the
// traffic); where it has, net1 is a macsec link.
func TestCNIMACsecOnThisKernel(t *testing.T) {
	newEncNode(t, map[string]string{"good": "1 aes-gcm-128 " + testKeyHex + "\n", "mixed": "1 aes-gcm-128 " + testKeyHex + "\n5 aes-gcm-128 " + testKeyHex + "\n"})
	e := newCNIEnv(t, 1)
	ctx := context.Background()
	pod := e.netns(t)
	orig, _ := hostLink(t, e.vfName(0))
	bad := e.conflist(t, "1.1.0", map[string]any{"encryption": map[string]any{"mode": "macsec", "keys": "mixed"}})
	rc := rt("enc", pod, "net1", vfBDF(0))
	rc.Args = podArgs("ml", "trainer")
	if _, err := e.cni.AddNetworkList(ctx, bad, rc); cniCode(err) != 7 || !strings.Contains(err.Error(), "would share one") {
		t.Fatalf("keys 1 and 5 share MACsec AN 1: %v", err)
	}
	list := e.conflist(t, "1.1.0", map[string]any{"encryption": map[string]any{"mode": "macsec", "keys": "good"}})
	if _, err := e.cni.AddNetworkList(ctx, list, rc); err == nil {
		out, _ := exec.Command("ip", "-n", filepath.Base(pod), "-d", "link", "show", "net1").CombinedOutput()
		if !strings.Contains(string(out), "macsec") {
			t.Errorf("net1 is not a macsec link: %s", out)
		}
		if err := e.cni.DelNetworkList(ctx, list, rc); err != nil {
			t.Fatal(err)
		}
	} else if !strings.Contains(err.Error(), "macsec") {
		t.Fatalf("ADD on a kernel without MACsec: %v", err)
	}
	if now, ok := hostLink(t, e.vfName(0)); !ok || now.MAC != orig.MAC || now.Name != orig.Name {
		t.Errorf("the VF is not back as it was: %+v", now)
	}
	if recs, _ := filepath.Glob(filepath.Join(e.state, "records", "*.json")); len(recs) != 0 {
		t.Errorf("records left: %v", recs)
	}
	if l := leases(t, e.ipamDir); len(l) != 0 {
		t.Errorf("leases left %v", l)
	}
}
