package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

// runPlugin execs the railnet binary as a runtime does and returns its
// stdout and the CNI error code (0 on success).
func runPlugin(t *testing.T, cmd, containerID, netns, ifName string, conf []byte) (string, uint, string) {
	t.Helper()
	c := exec.Command(filepath.Join(binDir, "railnet"))
	c.Env = append(os.Environ(), "CNI_COMMAND="+cmd, "CNI_CONTAINERID="+containerID, "CNI_NETNS="+netns,
		"CNI_IFNAME="+ifName, "CNI_PATH="+cniPluginDir+":"+binDir)
	c.Stdin = bytes.NewReader(conf)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	if err == nil {
		return out.String(), 0, errb.String()
	}
	var e struct {
		Code uint   `json:"code"`
		Msg  string `json:"msg"`
	}
	if jerr := json.Unmarshal(out.Bytes(), &e); jerr != nil {
		t.Fatalf("%s failed without a CNI error on stdout: %v\nstdout %q\nstderr %q", cmd, err, out.String(), errb.String())
	}
	return e.Msg, e.Code, errb.String()
}

// hostView is what a failed ADD must leave exactly as it was.
func hostView(t *testing.T, e *cniEnv) string {
	t.Helper()
	var parts []string
	links, _ := netlink.LinkList()
	for _, l := range links {
		a := l.Attrs()
		if strings.HasPrefix(a.Name, "rn"+e.tag) {
			parts = append(parts, a.Name+" "+a.HardwareAddr.String()+" "+a.Alias+" "+a.Flags.String()+" "+itoa(a.MTU))
		}
	}
	slices.Sort(parts)
	recs, _ := filepath.Glob(filepath.Join(e.state, "records", "*"))
	nss := tempNetns(e)
	return strings.Join(parts, "\n") + "\nrecords " + strings.Join(recs, ",") + "\nnetns " + strings.Join(nss, ",") +
		"\nleases " + strings.Join(leases(t, e.ipamDir), ",")
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func TestCNIBadInput(t *testing.T) {
	e := newCNIEnv(t, 1)
	pod := e.netns(t)
	notNetns := filepath.Join(t.TempDir(), "regular-file")
	os.WriteFile(notNetns, nil, 0o644)
	blocker := filepath.Join(t.TempDir(), "a-file")
	os.WriteFile(blocker, nil, 0o644)
	conf := func(mod map[string]any) []byte {
		c := map[string]any{"cniVersion": "1.1.0", "name": "rn" + e.tag, "type": "railnet", "sysfsRoot": e.sys,
			"stateDir": e.state, "deviceID": vfBDF(0),
			"ipam": map[string]any{"type": "host-local", "dataDir": e.ipamDir, "ranges": []any{[]any{map[string]string{"subnet": "198.18.78.0/24"}}}}}
		for k, v := range mod {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		b, _ := json.Marshal(c)
		return b
	}
	for _, tc := range []struct {
		name  string
		conf  []byte
		netns string
		code  uint
		want  string
	}{
		{"unknown deviceID", conf(map[string]any{"deviceID": "0000:b1:1f.7"}), pod, 7, "deviceID"},
		{"malformed deviceID", conf(map[string]any{"deviceID": "b1-00-1"}), pod, 7, "deviceID"},
		{"missing deviceID", conf(map[string]any{"deviceID": nil}), pod, 7, "deviceID: missing"},
		{"not a network device", conf(map[string]any{"deviceID": "0000:b0:01.0"}), pod, 7, "not a network device"},
		{"mac of the wrong length", conf(map[string]any{"mac": "02:00:00:00:00"}), pod, 7, "mac"},
		{"vlan 4095", conf(map[string]any{"vlan": 4095}), pod, 7, "vlan: 4095"},
		{"qos without vlan", conf(map[string]any{"vlanQoS": 3}), pod, 7, "vlanQoS"},
		{"802.1ad without vlan", conf(map[string]any{"vlanProto": "802.1ad"}), pod, 7, "vlanProto"},
		{"spoofchk", conf(map[string]any{"spoofchk": "maybe"}), pod, 7, "spoofchk"},
		{"link_state", conf(map[string]any{"link_state": "up"}), pod, 7, "link_state"},
		{"rates", conf(map[string]any{"min_tx_rate": 500, "max_tx_rate": 100}), pod, 7, "min_tx_rate"},
		{"max rate that wraps to unlimited", conf(map[string]any{"max_tx_rate": 1 << 32}), pod, 7, "max_tx_rate: 4294967296 Mbps is outside 0-4294967295"},
		{"min rate above 32 bits", conf(map[string]any{"min_tx_rate": 1<<32 + 5}), pod, 7, "min_tx_rate"},
		{"mtu above the PF's", conf(map[string]any{"mtu": 9600}), pod, 7, "mtu: 9600 is above the MTU 9000"},
		{"ipam plugin missing", conf(map[string]any{"ipam": map[string]any{"type": "no-such-ipam"}}), pod, 7, "ipam.type"},
		{"rdma mode", conf(map[string]any{"rdma": "always"}), pod, 7, "rdma"},
		{"netns that is not a netns", conf(nil), notNetns, 8, "not a network namespace"},
		{"netns that does not exist", conf(nil), "/var/run/netns/rn" + e.tag + "-none", 3, "does not exist"},
		{"state dir not writable", conf(map[string]any{"stateDir": filepath.Join(blocker, "state")}), pod, 5, "state directory"},
		{"truncated JSON", conf(nil)[:40], pod, 6, "network config: unexpected end of JSON input"},
		{"garbage", []byte("\x00\x01not json"), pod, 6, "network config: invalid character '\\x00'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := hostView(t, e)
			msg, code, stderr := runPlugin(t, "ADD", "bad-"+e.tag, tc.netns, "net1", tc.conf)
			if code != tc.code || !strings.Contains(msg, tc.want) {
				t.Errorf("ADD: code %d %q, want code %d naming %q (stderr %s)", code, msg, tc.code, tc.want, stderr)
			}
			if after := hostView(t, e); after != before {
				t.Errorf("the host changed:\nbefore %s\nafter  %s", before, after)
			}
			podLinks, _ := exec.Command("ip", "-n", filepath.Base(pod), "-o", "link").CombinedOutput()
			if strings.Count(string(podLinks), "\n") != 1 {
				t.Errorf("the pod got links: %s", podLinks)
			}
		})
	}
}

// tempNetns lists namespaces pinned under the state dir, but for the shared
// staging one, which lives across attachments by design.
func tempNetns(e *cniEnv) []string {
	var out []string
	ents, _ := os.ReadDir(filepath.Join(e.state, "netns"))
	for _, ent := range ents {
		if ent.Name() != "staging" {
			out = append(out, ent.Name())
		}
	}
	return out
}

// VF settings on a function that is not a VF are a config error naming the field.
func TestCNIVFSettingOnPF(t *testing.T) {
	e := newCNIEnv(t, 1)
	pod := e.netns(t)
	conf, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "rn" + e.tag, "type": "railnet", "sysfsRoot": e.sys,
		"stateDir": e.state, "deviceID": e.pfBDF, "trust": "on"})
	before := hostView(t, e)
	msg, code, _ := runPlugin(t, "ADD", "pfvf", pod, "net1", conf)
	if code != 7 || !strings.Contains(msg, "trust") || !strings.Contains(msg, "not a VF") {
		t.Errorf("code %d %q", code, msg)
	}
	if hostView(t, e) != before {
		t.Error("host changed")
	}
}
