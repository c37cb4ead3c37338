// Package deviceplugin serves railnet's pools to the kubelet over the
// device plugin API v1beta1: one gRPC server and socket per pool,
// registration with retries, ListAndWatch updates, Allocate,
// GetPreferredAllocation, device-info files, and kubelet restarts seen with
// fsnotify. It consumes plain pool values; discovery and selection live
// elsewhere.
package deviceplugin

import (
	"strings"
)

// Device is one advertised device.
type Device struct {
	ID       string   // kubelet device ID: a BDF, or BDF#slot in a shared rdma pool
	BDF      string   // PCI function
	PF       string   // PF's BDF ("" when not visible)
	RDMA     []string // RDMA device names
	CharDevs []string // /dev/infiniband/uverbsN, umadN, issmN
	NUMA     int      // -1: unknown, no Topology hint
	Rail     string
	IB       bool // InfiniBand link layer (its RDMA ports)
	Healthy  bool
	Reason   string // why not healthy

	// The selection's view, set by indexDevices: the device's place in ID
	// order, its PF's and rail's small integers.
	ord, pfIdx, railIdx int32
	indexed             bool
}

// Pool is one resource.
type Pool struct {
	Name     string
	Resource string // e.g. railnet.io/rail0
	Kind     string // sriov or rdma
	Devices  []Device
	RDMACM   string // /dev/infiniband/rdma_cm when present
}

// EnvName is the Allocate environment variable for a resource:
// PCIDEVICE_<PREFIX>_<NAME>, upper case, '.', '/' and '-' → '_'.
func EnvName(resource string) string {
	r := strings.NewReplacer(".", "_", "/", "_", "-", "_")
	return "PCIDEVICE_" + strings.ToUpper(r.Replace(resource))
}

// socketName is the pool's socket file in the kubelet directory.
func socketName(pool string) string { return "railnet-" + pool + ".sock" }
