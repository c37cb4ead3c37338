// Package deviceinfo reads and writes device-info files
// (k8snetworkplumbingwg device-info-spec 1.1.0), shared by the device
// plugin, which writes one per advertised device, and the CNI, which writes
// one to runtimeConfig.CNIDeviceInfoFile.
package deviceinfo

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/railnet/railnet/pkg/atomicfile"
)

// Version is the spec version written.
const Version = "1.1.0"

// DefaultDir is where the device plugin writes its files.
const DefaultDir = "/var/run/k8s.cni.cncf.io/devinfo/dp"

// Info is one device-info document.
type Info struct {
	Type    string `json:"type"`
	Version string `json:"version"`
	PCI     *PCI   `json:"pci,omitempty"`
}

// PCI is the "pci" member.
type PCI struct {
	PCIAddress   string `json:"pci-address"`
	RDMADevice   string `json:"rdma-device,omitempty"`
	PFPCIAddress string `json:"pf-pci-address,omitempty"`
}

// NewPCI builds a pci document.
func NewPCI(addr, rdmaDevice, pf string) *Info {
	return &Info{Type: "pci", Version: Version, PCI: &PCI{PCIAddress: addr, RDMADevice: rdmaDevice, PFPCIAddress: pf}}
}

// FileName is <resource with '/' → '-'>-<deviceID>-device.json.
func FileName(resource, deviceID string) string {
	return strings.ReplaceAll(resource, "/", "-") + "-" + strings.ReplaceAll(deviceID, "/", "-") + "-device.json"
}

// Write (re)creates dir/FileName(resource, id), mode 0444, renamed over
// any older one: a reader (Multus) always finds the old file or the new,
// never none.
func Write(dir, resource, id string, info *Info) error {
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return WriteFile(filepath.Join(dir, FileName(resource, id)), b)
}

// WriteFile writes b to p atomically with mode 0444.
func WriteFile(p string, b []byte) error { return atomicfile.Write(p, b, 0o444, false) }

// Remove deletes the file of one device; a missing file is fine.
func Remove(dir, resource, id string) error {
	err := os.Remove(filepath.Join(dir, FileName(resource, id)))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// Exists reports whether the file of one device is there.
func Exists(dir, resource, id string) bool {
	_, err := os.Stat(filepath.Join(dir, FileName(resource, id)))
	return err == nil
}

// Read parses a device-info file.
func Read(p string) (*Info, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var i Info
	if err := json.Unmarshal(b, &i); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if i.Type == "" || i.Version == "" {
		return nil, fmt.Errorf("%s: not a device-info document", p)
	}
	return &i, nil
}
