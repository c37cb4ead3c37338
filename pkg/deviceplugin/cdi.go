package deviceplugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"

	"github.com/railnet/railnet/pkg/deviceinfo"
)

// DefaultCDIDir is where container runtimes look for CDI specs.
const DefaultCDIDir = "/var/run/cdi"

// CDI spec (container-device-interface, spec 0.6.0): one kind per pool
// ("railnet.io/rail0"), one device per advertised device, whose edits add
// the RDMA character devices and the device's PCI address.
// CDISpec is a CDI spec file; the DRA driver writes the same shape.
type CDISpec struct {
	Version string      `json:"cdiVersion"`
	Kind    string      `json:"kind"`
	Devices []CDIDevice `json:"devices"`
}

// CDIDevice is one device of a spec.
type CDIDevice struct {
	Name  string   `json:"name"`
	Edits CDIEdits `json:"containerEdits"`
}

// CDIEdits are what a device does to a container.
type CDIEdits struct {
	Env         []string        `json:"env,omitempty"`
	DeviceNodes []CDIDeviceNode `json:"deviceNodes,omitempty"`
}

// CDIDeviceNode is a device node of a container.
type CDIDeviceNode struct {
	Path        string `json:"path"`
	HostPath    string `json:"hostPath,omitempty"`
	Permissions string `json:"permissions,omitempty"`
}

func cdiSpecPath(dir, resource string) string {
	return filepath.Join(dir, strings.ReplaceAll(resource, "/", "-")+".json")
}

// cdiDeviceName is the part after '=' of CDIName.
func cdiDeviceName(id string) string { return strings.NewReplacer("#", "_", "/", "_").Replace(id) }

// writeCDISpec writes the pool's CDI spec atomically (0444), only when it
// changed: every rescan calls it, and runtimes watch the directory.
func writeCDISpec(dir, devfsRoot string, p Pool) error {
	spec := CDISpec{Version: "0.6.0", Kind: p.Resource}
	for _, d := range p.Devices {
		cd := CDIDevice{Name: cdiDeviceName(d.ID)}
		cd.Edits.Env = []string{"RAILNET_PCI_ADDRESS_" + strings.ToUpper(strings.NewReplacer(":", "_", ".", "_").Replace(d.BDF)) + "=" + d.BDF}
		for _, c := range d.CharDevs {
			cd.Edits.DeviceNodes = append(cd.Edits.DeviceNodes, CDIDeviceNode{Path: c, HostPath: hostDevPath(devfsRoot, c), Permissions: "rw"})
		}
		if len(d.RDMA) > 0 && p.RDMACM != "" {
			cd.Edits.DeviceNodes = append(cd.Edits.DeviceNodes, CDIDeviceNode{Path: p.RDMACM, HostPath: hostDevPath(devfsRoot, p.RDMACM), Permissions: "rw"})
		}
		spec.Devices = append(spec.Devices, cd)
	}
	b, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return err
	}
	path := cdiSpecPath(dir, p.Resource)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, b) {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return deviceinfo.WriteFile(path, b)
}

func removeCDISpec(dir, resource string) error {
	err := os.Remove(cdiSpecPath(dir, resource))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
