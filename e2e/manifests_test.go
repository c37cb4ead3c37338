package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	cniconfig "github.com/railnet/railnet/pkg/cni/config"
	"github.com/railnet/railnet/pkg/fakesys/fakesystest"
	"github.com/railnet/railnet/pkg/pools"
)

func TestManifests(t *testing.T) {
	raw, err := os.ReadFile("../deployments/railnet-deviceplugin.yaml")
	if err != nil {
		t.Fatal(err)
	}
	help, _ := exec.Command(filepath.Join(binDir, "railnet-deviceplugin"), "-h").CombinedOutput()
	var sawDS bool
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var obj struct {
			Kind string `json:"kind"`
			Spec struct {
				Template struct {
					Spec struct {
						Containers []struct {
							Args []string `json:"args"`
						} `json:"containers"`
					} `json:"spec"`
				} `json:"template"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatalf("manifest: %v", err)
		}
		if obj.Kind != "DaemonSet" {
			continue
		}
		sawDS = true
		for _, a := range obj.Spec.Template.Spec.Containers[0].Args {
			name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
			if !strings.Contains(string(help), "-"+name+" ") && !strings.Contains(string(help), "-"+name+"\n") {
				t.Errorf("DaemonSet passes --%s, which railnet-deviceplugin does not know", name)
			}
		}
	}
	if !sawDS {
		t.Fatal("no DaemonSet in the manifest")
	}
	raw, err = os.ReadFile("../deployments/railnet-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(raw, &cm); err != nil {
		t.Fatal(err)
	}
	cfg, err := pools.Parse([]byte(cm.Data["config.yaml"]))
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	if !cfg.RailPools || len(cfg.Pools) != 2 {
		t.Errorf("example config = %+v", cfg)
	}
	// On the node it is written for, no device lands in two pools.
	_, tree := fakesystest.Build(t, "dgx-h100-like")
	out, err := exec.Command(filepath.Join(binDir, "railnetctl"), "validate-config", "--sysfs-root", tree.Sys, "--devfs-root", tree.Dev,
		"../deployments/railnet-config.yaml").CombinedOutput()
	if err == nil {
		t.Fatalf("validate-config accepted a ConfigMap manifest as a config:\n%s", out)
	}
	// The plain copy in deployments/ is the ConfigMap's data, line for line.
	plain, err := os.ReadFile("../deployments/config-h100.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var body []string
	for _, l := range strings.Split(string(plain), "\n") {
		if !strings.HasPrefix(l, "#") {
			body = append(body, l)
		}
	}
	if strings.Join(body, "\n") != cm.Data["config.yaml"] {
		t.Errorf("deployments/config-h100.yaml differs from the ConfigMap's config.yaml")
	}
	cfgFile := "../deployments/config-h100.yaml"
	out, err = exec.Command(filepath.Join(binDir, "railnetctl"), "validate-config", "--sysfs-root", tree.Sys, "--devfs-root", tree.Dev, cfgFile).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "railnet.io/rail7") || !strings.Contains(strings.Join(strings.Fields(string(out)), " "), "railnet.io/storage-hca rdma 64 devices (32 healthy)") {
		t.Errorf("example config on dgx-h100-like: %v\n%s", err, out)
	}
}

func TestNADExamples(t *testing.T) {
	raw, err := os.ReadFile("../deployments/nad-examples.yaml")
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
			t.Errorf("NAD config: %v", err)
		}
		if !strings.HasPrefix(nad.Metadata.Annotations["k8s.v1.cni.cncf.io/resourceName"], "railnet.io/") {
			t.Errorf("NAD without a railnet resource: %v", nad.Metadata.Annotations)
		}
		n++
	}
	if n != 2 {
		t.Errorf("%d NADs", n)
	}
}
