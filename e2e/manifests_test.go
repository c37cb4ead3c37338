package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	cniconfig "github.com/railnet/railnet/pkg/cni/config"
	"github.com/railnet/railnet/pkg/fakesys"
	"github.com/railnet/railnet/pkg/fakesys/fakesystest"
	"github.com/railnet/railnet/pkg/pools"
)

// daemonSetArgs reads the args of every container (init ones too) of the
// DaemonSets in a manifest file.
func daemonSetArgs(t *testing.T, path string) map[string][]string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		type container struct {
			Name string   `json:"name"`
			Args []string `json:"args"`
		}
		var obj struct {
			Kind string `json:"kind"`
			Spec struct {
				Template struct {
					Spec struct {
						InitContainers []container `json:"initContainers"`
						Containers     []container `json:"containers"`
					} `json:"spec"`
				} `json:"template"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if obj.Kind != "DaemonSet" {
			continue
		}
		for _, c := range append(obj.Spec.Template.Spec.InitContainers, obj.Spec.Template.Spec.Containers...) {
			out[c.Name] = c.Args
		}
	}
	return out
}

func TestManifests(t *testing.T) {
	help, _ := exec.Command(filepath.Join(binDir, "railnet-deviceplugin"), "-h").CombinedOutput()
	for _, f := range []string{"../deployments/base/daemonset.yaml", "../deployments/overlays/e2e/daemonset-patch.yaml"} {
		args := daemonSetArgs(t, f)
		if len(args["agent"]) == 0 || len(args["install-cni"]) == 0 {
			t.Fatalf("%s: containers agent and install-cni with args, got %v", f, args)
		}
		metrics := ""
		for name, list := range args {
			for _, a := range list {
				if v, ok := strings.CutPrefix(a, "--metrics-addr="); ok {
					metrics = v
				}
				flag, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
				if !strings.Contains(string(help), "-"+flag+" ") && !strings.Contains(string(help), "-"+flag+"\n") {
					t.Errorf("%s: container %s passes --%s, which railnet-deviceplugin does not know", f, name, flag)
				}
			}
		}
		// With hostNetwork, metrics on ":9110" would face every host
		// interface, rail networks included.
		if !strings.HasPrefix(metrics, "127.0.0.1:") {
			t.Errorf("%s: --metrics-addr=%q, want the node's loopback", f, metrics)
		}
	}
	// Every pool config parses; on the node it is written for, no device
	// lands in two pools and each pool selects what it should.
	for _, c := range []struct{ file, fixture, want string }{
		{"../deployments/base/config.yaml", "dgx-h100-like", "railnet.io/rail7"},
		{"../deployments/overlays/dgx-h100/config.yaml", "dgx-h100-like", "railnet.io/storage-hca rdma 64 devices (32 healthy)"},
		{"../deployments/overlays/e2e/config.yaml", "", "railnet.io/e2e-vf sriov 4 devices (4 healthy)"},
	} {
		raw, err := os.ReadFile(c.file)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pools.Parse(raw); err != nil {
			t.Errorf("%s: %v", c.file, err)
		}
		var tree fakesys.Tree
		if c.fixture != "" {
			_, tree = fakesystest.Build(t, c.fixture)
		} else {
			m, err := fakesys.Load("cluster/node.json")
			if err != nil {
				t.Fatal(err)
			}
			if tree, err = fakesys.Materialize(m, fakesystest.TempDir(t)); err != nil {
				t.Fatal(err)
			}
		}
		out, err := exec.Command(filepath.Join(binDir, "railnetctl"), "validate-config", "--sysfs-root", tree.Sys, "--devfs-root", tree.Dev, c.file).CombinedOutput()
		if err != nil || !strings.Contains(strings.Join(strings.Fields(string(out)), " "), c.want) {
			t.Errorf("%s: want %q: %v\n%s", c.file, c.want, err, out)
		}
	}
}

func TestNADExamples(t *testing.T) {
	for _, c := range []struct {
		file string
		n    int
	}{{"../deployments/examples/nads.yaml", 11}, {"cluster/manifests/nad-e2e.yaml", 3}} {
		raw, err := os.ReadFile(c.file)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, doc := range strings.Split(string(raw), "\n---\n") {
			var nad struct {
				Metadata struct {
					Annotations map[string]string `json:"annotations"`
				} `json:"metadata"`
				Spec struct {
					Config string `json:"config"`
				} `json:"spec"`
			}
			if err := yaml.Unmarshal([]byte(doc), &nad); err != nil {
				t.Fatal(err)
			}
			if _, err := cniconfig.Parse([]byte(nad.Spec.Config)); err != nil {
				t.Errorf("%s: NAD config: %v", c.file, err)
			}
			if strings.Contains(nad.Spec.Config, "sysfsRoot") || strings.Contains(nad.Spec.Config, "stateDir") {
				t.Errorf("%s: a NAD names a host path: %s", c.file, nad.Spec.Config)
			}
			// A device plugin NAD names its resource (Multus passes the
			// deviceID); a DRA NAD names the pod's claim instead.
			res := nad.Metadata.Annotations["k8s.v1.cni.cncf.io/resourceName"]
			dra := strings.Contains(nad.Spec.Config, `"claim"`)
			if dra == (res != "") || (!dra && !strings.HasPrefix(res, "railnet.io/")) {
				t.Errorf("%s: NAD needs a railnet.io resourceName annotation or a \"claim\" (not both): %v %s", c.file, nad.Metadata.Annotations, nad.Spec.Config)
			}
			n++
		}
		if n != c.n {
			t.Errorf("%s: %d NADs, want %d", c.file, n, c.n)
		}
	}
}
