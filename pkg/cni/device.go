package cni

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/railnet/railnet/pkg/sysfs"
)

// Device is what a deviceID resolves to through sysfs.
type Device struct {
	BDF     string
	Driver  string
	Netdev  string // "" when bound to vfio-pci, or when the netdev is in a pod already
	IsVF    bool
	PFBDF   string
	PF      string // PF netdev name
	VFIndex int    // -1: not a VF
	RDMA    string // RDMA device on this function
	PFMTU   int
	IB      bool   // InfiniBand link layer
	PKey    uint16 // an IPoIB netdev's partition key (sysfs "pkey"), 0 if none
}

// userspaceDrivers own a function without a netdev: the device is handed
// to the pod by the device plugin (vfio), the CNI only configures the VF.
var userspaceDrivers = map[string]bool{"vfio-pci": true, "uio_pci_generic": true, "igb_uio": true}

// Userspace reports whether the function is bound to a userspace driver.
func (d *Device) Userspace() bool { return userspaceDrivers[d.Driver] }

// resolveDevice reads the function behind a deviceID (a BDF; a shared rdma
// pool's "BDF#slot" is accepted).
func resolveDevice(sys *sysfs.FS, deviceID string) (*Device, error) {
	id, _, _ := strings.Cut(deviceID, "#")
	b, err := sysfs.ParseBDF(id)
	if err != nil {
		return nil, fmt.Errorf("deviceID %q is not a PCI address", deviceID)
	}
	bdf := b.String()
	dir := "bus/pci/devices/" + bdf
	if !sys.Exists(dir) {
		return nil, fmt.Errorf("deviceID %s: no such PCI device", bdf)
	}
	d := &Device{BDF: bdf, VFIndex: -1}
	class, err := sys.ReadString(dir + "/class")
	if err != nil {
		return nil, fmt.Errorf("deviceID %s: %w", bdf, err)
	}
	if !strings.HasPrefix(strings.ToLower(class), "0x02") {
		return nil, fmt.Errorf("deviceID %s is not a network device (class %s)", bdf, class)
	}
	if drv, err := sys.LinkBase(dir + "/driver"); err == nil {
		d.Driver = drv
	}
	if names, err := sys.ReadNames(dir + "/net"); err == nil && len(names) > 0 {
		d.Netdev = names[0]
		if t, err := sys.ReadInt(dir + "/net/" + names[0] + "/type"); err == nil && t == 32 {
			d.IB = true
			if s, err := sys.ReadString(dir + "/net/" + names[0] + "/pkey"); err == nil {
				if v, err := strconv.ParseUint(strings.TrimSpace(s), 0, 16); err == nil {
					d.PKey = uint16(v)
				}
			}
		}
	}
	if names, err := sys.ReadNames(dir + "/infiniband"); err == nil && len(names) > 0 {
		d.RDMA = names[0]
	}
	if pf, err := sys.LinkBase(dir + "/physfn"); err == nil {
		d.IsVF = true
		d.PFBDF = pf
		pfDir := "bus/pci/devices/" + pf
		if names, err := sys.ReadNames(pfDir + "/net"); err == nil && len(names) > 0 {
			d.PF = names[0]
			d.PFMTU, _ = sys.ReadInt(pfDir + "/net/" + names[0] + "/mtu")
			if t, err := sys.ReadInt(pfDir + "/net/" + names[0] + "/type"); err == nil && t == 32 {
				d.IB = true
			}
		}
		links, _, _ := sys.ReadLinks(pfDir)
		for name, target := range links {
			if idx, ok := strings.CutPrefix(name, "virtfn"); ok && strings.HasSuffix(target, "/"+bdf) {
				d.VFIndex, _ = strconv.Atoi(idx)
			}
		}
		if d.VFIndex < 0 {
			return nil, fmt.Errorf("deviceID %s: its PF %s has no virtfn link to it", bdf, pf)
		}
	} else if d.Netdev != "" {
		d.PFMTU, _ = sys.ReadInt(dir + "/net/" + d.Netdev + "/mtu")
	}
	return d, nil
}
