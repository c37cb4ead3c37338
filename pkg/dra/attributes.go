// Package dra is railnet's DRA driver (railnet.io), beside the device
// plugin in the node daemon: the devices of pools whose api is dra become
// resource.k8s.io/v1 ResourceSlices (standard pcieRoot, pciBusID and
// numaNode attributes, and railnet's rail and GPU distance), Prepare
// returns CDI devices with the env and RDMA character devices the device
// plugin's Allocate gives, and checkpoints claim → devices → pods on disk
// (pkg/dra/claims) for restarts and for the CNI, and the claim's
// status.devices[].networkData is written once the CNI has attached.
package dra

import (
	"strings"

	resourceapi "k8s.io/api/resource/v1"

	"github.com/railnet/railnet/pkg/discovery"
	"github.com/railnet/railnet/pkg/dra/claims"
	"github.com/railnet/railnet/pkg/pools"
	"github.com/railnet/railnet/pkg/topology"
)

// Driver is the DRA driver's name, the domain of its attributes.
const DriverName = claims.Driver

// Attribute names.
const (
	AttrPCIBusID     resourceapi.QualifiedName = "resource.kubernetes.io/pciBusID"
	AttrPCIeRoot     resourceapi.QualifiedName = "resource.kubernetes.io/pcieRoot"
	AttrNUMANode     resourceapi.QualifiedName = "resource.kubernetes.io/numaNode"
	AttrPool         resourceapi.QualifiedName = DriverName + "/pool"
	AttrPFName       resourceapi.QualifiedName = DriverName + "/pfName"
	AttrPFPCIAddress resourceapi.QualifiedName = DriverName + "/pfPciAddress"
	AttrVFIndex      resourceapi.QualifiedName = DriverName + "/vfIndex"
	AttrLinkType     resourceapi.QualifiedName = DriverName + "/linkType"
	AttrRDMA         resourceapi.QualifiedName = DriverName + "/rdma"
	AttrRDMADevice   resourceapi.QualifiedName = DriverName + "/rdmaDevice"
	AttrRail         resourceapi.QualifiedName = DriverName + "/rail"
	AttrGPULink      resourceapi.QualifiedName = DriverName + "/gpuLink"
	AttrNearestGPU   resourceapi.QualifiedName = DriverName + "/nearestGPU"
	AttrSlot         resourceapi.QualifiedName = DriverName + "/slot"
	// Multus releases that read DRA claims look for these.
	AttrCNIResourceName resourceapi.QualifiedName = "k8s.cni.cncf.io/resourceName"
	AttrCNIDeviceID     resourceapi.QualifiedName = "k8s.cni.cncf.io/deviceID"
)

// DeviceName is a device's name in its slice, a DNS label derived from
// its ID: 0000:04:00.2 → pci-0000-04-00-2, a shared slot 0000:04:00.0#3 →
// pci-0000-04-00-0-slot3.
func DeviceName(id string) string {
	bdf, slot, shared := strings.Cut(id, "#")
	n := "pci-" + strings.NewReplacer(":", "-", ".", "-").Replace(strings.ToLower(bdf))
	if shared {
		n += "-slot" + slot
	}
	return n
}

// PoolName is a railnet pool's ResourceSlice pool name on a node: pools
// are per driver, so the node's name comes first.
func PoolName(node, pool string) string { return node + "/" + pool }

func str(s string) resourceapi.DeviceAttribute { return resourceapi.DeviceAttribute{StringValue: &s} }
func num(n int) resourceapi.DeviceAttribute {
	v := int64(n)
	return resourceapi.DeviceAttribute{IntValue: &v}
}
func boolean(b bool) resourceapi.DeviceAttribute { return resourceapi.DeviceAttribute{BoolValue: &b} }

// Attributes computes a pool device's attributes from the inventory and
// topology it was selected from. pcieRoot is the device's host bridge as
// the topology code sees it (the first element of its real sysfs path,
// what deviceattribute.GetPCIeRootAttributeByPCIBusID reads); numaNode is
// left out when the kernel does not know it (-1), as the helpers do.
func Attributes(p *pools.Resolved, d *pools.Device, inv *discovery.Inventory, topo *topology.Topology) map[resourceapi.QualifiedName]resourceapi.DeviceAttribute {
	a := map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
		AttrPCIBusID:        str(d.BDF),
		AttrPool:            str(p.Name),
		AttrRDMA:            boolean(len(d.RDMA) > 0),
		AttrCNIResourceName: str(p.Resource),
		AttrCNIDeviceID:     str(d.ID),
	}
	n := inv.NIC(d.BDF)
	if n != nil {
		if root := n.HostBridge(); root != "" {
			a[AttrPCIeRoot] = str(root)
		}
		if n.LinkType != "" {
			a[AttrLinkType] = str(n.LinkType)
		}
		if n.Kind == discovery.KindVF && n.VFIndex >= 0 {
			a[AttrVFIndex] = num(n.VFIndex)
		}
	}
	if d.NUMA >= 0 {
		a[AttrNUMANode] = num(d.NUMA)
	}
	if d.PFName != "" {
		a[AttrPFName] = str(d.PFName)
	}
	if d.PF != "" {
		a[AttrPFPCIAddress] = str(d.PF)
	}
	if len(d.RDMA) > 0 {
		a[AttrRDMADevice] = str(d.RDMA[0])
	}
	if d.Rail != "" {
		a[AttrRail] = str(d.Rail)
	}
	if _, slot, ok := strings.Cut(d.ID, "#"); ok {
		a[AttrSlot] = str(slot)
	}
	if topo != nil {
		if class, gpus, ok := topo.Nearest(d.BDF); ok && len(gpus) > 0 {
			a[AttrGPULink] = str(class.String())
			for _, g := range inv.GPUs {
				if g.Name == gpus[0] {
					a[AttrNearestGPU] = str(g.BDF)
				}
			}
		}
	}
	return a
}

// Devices are a pool's healthy devices as slice devices. An unhealthy one
// (its PF's link down, its HCA's port not ACTIVE) is left out until it
// recovers: a claim cannot be given it.
func Devices(p *pools.Resolved, inv *discovery.Inventory, topo *topology.Topology) []resourceapi.Device {
	out := make([]resourceapi.Device, 0, len(p.Devices))
	for i := range p.Devices {
		d := &p.Devices[i]
		if d.Health != pools.Healthy {
			continue
		}
		out = append(out, resourceapi.Device{Name: DeviceName(d.ID), Attributes: Attributes(p, d, inv, topo)})
	}
	return out
}

// Split cuts devices into slices of at most max (the API's limit is
// resourceapi.ResourceSliceMaxDevices), in order; no devices is one empty
// slice, which still says the pool exists and is empty.
func Split(devs []resourceapi.Device, max int) [][]resourceapi.Device {
	if max <= 0 {
		max = resourceapi.ResourceSliceMaxDevices
	}
	if len(devs) == 0 {
		return [][]resourceapi.Device{{}}
	}
	var out [][]resourceapi.Device
	for len(devs) > 0 {
		n := min(max, len(devs))
		out = append(out, devs[:n:n])
		devs = devs[n:]
	}
	return out
}
