package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/railnet/railnet/pkg/fakesys/fakesystest"
	"github.com/railnet/railnet/pkg/state"
)

func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return out.String(), errb.String(), code
}

// mustRun is runCLI for a command that must succeed: its output, once the
// exit code says it is one.
func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, stderr, code := runCLI(t, args...)
	if code != 0 {
		t.Fatalf("railnetctl %v: exit %d: %s", args, code, stderr)
	}
	return out
}

func fixtureTree(t *testing.T, name string) (string, string) {
	t.Helper()
	dir := fakesystest.TempDir(t)
	fixture := filepath.Join(fakesystest.FixtureDir(), name+".json")
	out, stderr, code := runCLI(t, "fakesys", "build", fixture, dir)
	if code != 0 {
		t.Fatalf("fakesys build: %d %s", code, stderr)
	}
	if !strings.Contains(out, "--sysfs-root "+filepath.Join(dir, "sys")) {
		t.Errorf("fakesys build output: %s", out)
	}
	return filepath.Join(dir, "sys"), filepath.Join(dir, "dev")
}

func TestTopologyJSONShape(t *testing.T) {
	sys, dev := fixtureTree(t, "mixed-ib-eth-gpu-noswitch")
	out, stderr, code := runCLI(t, "--sysfs-root", sys, "topology", "--devfs-root", dev, "--format", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var got map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got["gpus"] == nil || got["nics"] == nil || got["matrix"] == nil {
		t.Fatalf("top-level keys: %s", out)
	}
	var gpus []map[string]any
	var nics []map[string]any
	var matrix map[string]map[string]string
	json.Unmarshal(got["gpus"], &gpus)
	json.Unmarshal(got["nics"], &nics)
	json.Unmarshal(got["matrix"], &matrix)
	if len(gpus) != 4 || gpus[2]["name"] != "GPU2" || gpus[2]["bdf"] != "0000:61:00.0" || gpus[2]["numa"] != float64(-1) || len(gpus[0]) != 3 {
		t.Errorf("gpus = %v", gpus)
	}
	if len(nics) != 4 || nics[0]["name"] != "mlx5_0" || nics[0]["netdev"] != "ibp2s0" || nics[0]["bdf"] != "0000:02:00.0" || nics[0]["numa"] != float64(0) || len(nics[0]) != 4 {
		t.Errorf("nics = %v", nics)
	}
	if matrix["GPU2"]["mlx5_1"] != "PHB" || matrix["GPU0"]["mlx5_1"] != "SYS" || matrix["GPU1"]["mlx5_0"] != "NODE" {
		t.Errorf("matrix = %v", matrix)
	}
	// Stable: the same tree prints the same bytes.
	again := mustRun(t, "--sysfs-root", sys, "--devfs-root", dev, "topology", "--format", "json")
	if again != out {
		t.Error("two runs on one tree differ")
	}
}

func TestTopologyTableAndDOT(t *testing.T) {
	sys, dev := fixtureTree(t, "dgx-h100-like")
	out, _, code := runCLI(t, "--sysfs-root", sys, "--devfs-root", dev, "topology")
	if code != 0 {
		t.Fatal(out)
	}
	lines := strings.Split(out, "\n")
	if f := strings.Fields(lines[0]); len(f) < 12 || f[0] != "mlx5_0" || f[11] != "mlx5_11" {
		t.Errorf("header: %q", lines[0])
	}
	if f := strings.Fields(lines[1]); f[0] != "GPU0" || f[1] != "PIX" || f[2] != "NODE" || f[7] != "SYS" {
		t.Errorf("GPU0 row: %q", lines[1])
	}
	if !strings.Contains(out, "rail0  PIX   GPU0") || !strings.Contains(out, "IPsec on a netdev does not cover RoCE") {
		t.Errorf("rails or RDMA note missing:\n%s", out)
	}
	dot, _, code := runCLI(t, "--sysfs-root", sys, "--devfs-root", dev, "topology", "--format", "dot")
	if code != 0 || !strings.HasPrefix(dot, "graph railnet {") || !strings.HasSuffix(dot, "}\n") {
		t.Fatalf("dot output:\n%s", dot)
	}
	for _, want := range []string{`"0000:1b:00.0" -- "0000:18:00.0" [style=dashed, penwidth=2, color=forestgreen, label="PIX"`,
		`"pci0000:15" -- "0000:15:01.0"`, `cluster_numa1`} {
		if !strings.Contains(dot, want) {
			t.Errorf("dot lacks %s", want)
		}
	}
	if strings.Count(dot, "{") != strings.Count(dot, "}") {
		t.Error("unbalanced braces in DOT")
	}
	if dotBin, err := exec.LookPath("dot"); err == nil {
		cmd := exec.Command(dotBin, "-Tsvg")
		cmd.Stdin = strings.NewReader(dot)
		svg, err := cmd.Output()
		if err != nil || !bytes.Contains(svg, []byte("<svg")) {
			t.Errorf("graphviz rejected the graph: %v", err)
		}
	}
}

func TestInventory(t *testing.T) {
	sys, dev := fixtureTree(t, "single-nic-ethernet")
	out, _, code := runCLI(t, "inventory", "--sysfs-root", sys, "--devfs-root", dev, "--format", "json")
	if code != 0 {
		t.Fatal(out)
	}
	var inv struct {
		Summary struct{ GPUs, PFs, VFs, Netdevs, RDMADevices, Warnings int }
		NICs    []struct {
			BDF, Kind, Driver, LinkType string
			NUMA                        int
		} `json:"nics"`
	}
	if err := json.Unmarshal([]byte(out), &inv); err != nil {
		t.Fatal(err)
	}
	if s := inv.Summary; s.GPUs != 0 || s.PFs != 5 || s.VFs != 20 || s.Netdevs != 25 || s.RDMADevices != 19 || s.Warnings != 0 {
		t.Errorf("summary = %+v", s)
	}
	table, _, code := runCLI(t, "inventory", "--sysfs-root", sys, "--devfs-root", dev)
	if code != 0 || !strings.Contains(table, "PFs 5   VFs 20   netdevs 25   RDMA devices 19") || !strings.Contains(table, "VF0@0000:41:00.0") {
		t.Errorf("table:\n%s", table)
	}
	summary := mustRun(t, "inventory", "--summary", "--sysfs-root", sys, "--devfs-root", dev, "--state-dir", filepath.Join(t.TempDir(), "none"))
	if strings.Contains(summary, "VF0@") || !strings.Contains(summary, "8/64") || !strings.Contains(summary, "Attachments") || !strings.Contains(summary, ": none") {
		t.Errorf("--summary:\n%s", summary)
	}
}

// --summary scans lean (a VF's netdev name, RDMA names and character
// devices only): it prints exactly what a full scan's summary would.
func TestInventorySummaryLeanIsFull(t *testing.T) {
	for _, fx := range []string{"dgx-h100-like", "mixed-ib-eth-gpu-noswitch", "single-nic-ethernet"} {
		sys, dev := fixtureTree(t, fx)
		r := &roots{sys: sys, dev: dev}
		inv, err := scanLean(r, false)
		if err != nil {
			t.Fatal(err)
		}
		var full bytes.Buffer
		writeInventoryTable(&full, inv, r, true)
		got := mustRun(t, "inventory", "--summary", "--sysfs-root", sys, "--devfs-root", dev, "--state-dir", filepath.Join(t.TempDir(), "none"))
		if !strings.HasPrefix(got, full.String()) {
			t.Fatalf("%s: --summary differs from a full scan's:\n%s", fx, firstDiff(got, full.String()))
		}
	}
}

// inventory shows what the CNI's records say is in use: each shared HCA
// with its slots, every attachment with its pod.
func TestInventoryAttachments(t *testing.T) {
	sys, dev := fixtureTree(t, "single-nic-ethernet")
	dir := t.TempDir()
	store, err := state.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range []*state.Record{
		{ContainerID: "c0", IfName: "net1", DeviceID: "0000:41:00.0#0", BDF: "0000:41:00.0", Attach: "macvlan", Phase: "done", Network: "roce",
			PodNamespace: "ml", PodName: "trainer-0", Child: &state.Child{Kind: "macvlan", Parent: "enp65s0f0np0"}},
		{ContainerID: "c1", IfName: "net1", DeviceID: "0000:41:00.0#3", BDF: "0000:41:00.0", Attach: "macvlan", Phase: "done", Network: "roce",
			PodNamespace: "ml", PodName: "trainer-1", Child: &state.Child{Kind: "macvlan", Parent: "enp65s0f0np0"}},
		{ContainerID: "c2", IfName: "net2", DeviceID: "0000:41:00.2", BDF: "0000:41:00.2", Phase: "done", Network: "sriov",
			Encryption: &state.Encryption{Mode: "ipsec", Keys: "training-net"}},
	} {
		r.Created = time.Unix(int64(i), 0)
		if err := store.Save(r); err != nil {
			t.Fatal(err)
		}
	}
	table := mustRun(t, "inventory", "--sysfs-root", sys, "--devfs-root", dev, "--state-dir", dir)
	for _, want := range []string{"Attachments (" + dir + "): 3", "shared HCA 0000:41:00.0 (enp65s0f0np0): 2 slot(s) in use",
		"0000:41:00.0#3  macvlan  ml/trainer-1", "0000:41:00.2    move     -", "ipsec (keys training-net)", "RDMA (RoCE/InfiniBand verbs) traffic on the same devices is NOT encrypted"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	var inv struct {
		Attachments []struct{ DeviceID, Attach, Pod, Parent string }
	}
	if err := json.Unmarshal([]byte(mustRun(t, "inventory", "--format", "json", "--sysfs-root", sys, "--devfs-root", dev, "--state-dir", dir)), &inv); err != nil {
		t.Fatal(err)
	}
	if len(inv.Attachments) != 3 || inv.Attachments[1].DeviceID != "0000:41:00.0#3" || inv.Attachments[1].Pod != "ml/trainer-1" || inv.Attachments[1].Parent != "enp65s0f0np0" {
		t.Errorf("attachments %+v", inv.Attachments)
	}
}

func TestCLIErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "Usage"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"topology", "--format", "yaml"}, 2, `--format "yaml"`},
		{[]string{"inventory", "--sysfs-root", "/nonexistent/sys"}, 1, "--sysfs-root"},
		{[]string{"fakesys", "build", "only-one-arg"}, 2, "fakesys build [--device-nodes] FIXTURE DIR"},
		{[]string{"fakesys", "build", "/nonexistent.json", "/tmp/x"}, 1, "no such file"},
		{[]string{"--bogus"}, 2, "bogus"},
	} {
		_, stderr, code := runCLI(t, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
}

func TestFakesysCheck(t *testing.T) {
	out, stderr, code := runCLI(t, "fakesys", "check", filepath.Join(fakesystest.FixtureDir(), "vf-scale.json"))
	if code != 0 || !strings.Contains(out, "ok") {
		t.Fatalf("%d %s %s", code, out, stderr)
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"schemaVersion":1,"name":"bad"}`), 0o644)
	if _, stderr, code := runCLI(t, "fakesys", "check", bad); code != 1 || !strings.Contains(stderr, "numa") {
		t.Errorf("bad fixture: %d %s", code, stderr)
	}
}

// A snapshot unpacked elsewhere shows the same inventory and topology.
func TestSnapshotRoundTrip(t *testing.T) {
	for _, name := range []string{"dgx-h100-like", "mixed-ib-eth-gpu-noswitch"} {
		t.Run(name, func(t *testing.T) {
			sys, dev := fixtureTree(t, name)
			archive := filepath.Join(t.TempDir(), "snap.tar.gz")
			if _, stderr, code := runCLI(t, "snapshot", "--sysfs-root", sys, "--devfs-root", dev, "--output", archive); code != 0 {
				t.Fatalf("snapshot: %s", stderr)
			}
			if st, err := os.Stat(archive); err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("archive: %v %v", st, err)
			}
			if _, _, code := runCLI(t, "snapshot", "--sysfs-root", sys, "--output", archive); code != 1 {
				t.Error("snapshot overwrote an existing file")
			}
			dst := fakesystest.TempDir(t)
			if out, err := exec.Command("tar", "-xzf", archive, "-C", dst).CombinedOutput(); err != nil {
				t.Fatalf("tar: %v %s", err, out)
			}
			for _, args := range [][]string{{"topology", "--format", "json"}, {"inventory", "--format", "json"}} {
				want := mustRun(t, append([]string{"--sysfs-root", sys, "--devfs-root", dev}, args...)...)
				got := mustRun(t, append([]string{"--sysfs-root", filepath.Join(dst, "sys"), "--devfs-root", filepath.Join(dst, "dev")}, args...)...)
				if got != want {
					t.Errorf("%v differs after the round trip:\n%s", args, firstDiff(want, got))
				}
			}
		})
	}
}

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) && i < len(bl); i++ {
		if al[i] != bl[i] {
			return "line " + itoa(i) + ":\n- " + al[i] + "\n+ " + bl[i]
		}
	}
	return "lengths differ"
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestValidateConfig(t *testing.T) {
	sys, dev := fixtureTree(t, "dgx-h100-like")
	good := filepath.Join(t.TempDir(), "good.yaml")
	os.WriteFile(good, []byte("railPools: true\npools:\n- name: storage\n  selectors:\n    linkTypes: [ether]\n"), 0o644)
	out, stderr, code := runCLI(t, "validate-config", good)
	if code != 0 || !strings.Contains(out, "valid (1 pools, railPools true") {
		t.Fatalf("%d %s %s", code, out, stderr)
	}
	out, _, code = runCLI(t, "validate-config", "--sysfs-root", sys, "--devfs-root", dev, good)
	if code != 0 || !strings.Contains(out, "railnet.io/rail0") || !strings.Contains(out, "railnet.io/storage       sriov    16 devices (8 healthy)") {
		t.Errorf("with a node:\n%s", out)
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"pools":[{"name":"a","selectors":{"pfNames":["x#5-1"]}},{"name":"a","selectors":{"linkTypes":["ib"]}}]}`), 0o644)
	_, stderr, code = runCLI(t, "validate-config", bad)
	for _, want := range []string{"pools[0].selectors.pfNames[0]", "pools[1].name", "pools[1].selectors.linkTypes[0]"} {
		if code != 1 || !strings.Contains(stderr, want) {
			t.Errorf("bad config: exit %d, stderr lacks %q:\n%s", code, want, stderr)
		}
	}
}

// doctor's JSON is stable: the planted fixture's output is a golden file
// (RAILNET_UPDATE_GOLDEN=1 rewrites it); the exit code says errors (2),
// warnings (1) or clean (0).
func TestDoctor(t *testing.T) {
	sys, dev := fixtureTree(t, "doctor-planted")
	out, stderr, code := runCLI(t, "doctor", "--sysfs-root", sys, "--devfs-root", dev, "--format", "json",
		"--config", "../../pkg/doctor/testdata/doctor-pools.yaml")
	if code != 2 {
		t.Fatalf("exit %d, want 2 (errors): %s", code, stderr)
	}
	golden := "testdata/doctor-planted.json"
	if os.Getenv("RAILNET_UPDATE_GOLDEN") == "1" {
		os.MkdirAll("testdata", 0o755)
		os.WriteFile(golden, []byte(out), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if out != string(want) {
		t.Errorf("doctor --format json differs from %s: %s", golden, firstDiff(out, string(want)))
	}
	sys, dev = fixtureTree(t, "doctor-clean")
	out, _, code = runCLI(t, "doctor", "--sysfs-root", sys, "--devfs-root", dev)
	if code != 0 || !strings.Contains(out, "0 errors, 0 warnings") {
		t.Errorf("clean node: exit %d\n%s", code, out)
	}
	sys, dev = fixtureTree(t, "doctor-planted")
	if _, _, code := runCLI(t, "doctor", "--sysfs-root", sys, "--devfs-root", dev); code != 2 {
		t.Errorf("planted without the pools config: exit %d, want 2 (ACS is an error)", code)
	}
}

// Flags may follow positional arguments, as the README writes them.
func TestFlagsAfterArguments(t *testing.T) {
	sys, dev := fixtureTree(t, "dgx-h100-like")
	out, stderr, code := runCLI(t, "validate-config", "../../deployments/overlays/dgx-h100/config.yaml", "--sysfs-root", sys, "--devfs-root", dev)
	if code != 0 || !strings.Contains(out, "railnet.io/rail7") {
		t.Errorf("validate-config FILE --sysfs-root DIR: exit %d\n%s%s", code, out, stderr)
	}
}
