package cni

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/railnet/railnet/pkg/cni/config"
)

// offered refuses a device the node does not offer to pods. A NAD picks its
// deviceID, and without this a namespace admin could name the node's
// management PF and ADD would move it into a pod. Offered: what a device
// plugin advertises (a root-owned device-info file in its directory), what
// the node file lists in allowDevices, or anything where it sets
// allowUnadvertisedDevices. A whole netdev that carries the host's traffic
// (a global address or a default route) is refused unless listed, when it
// would move (whole); a child link leaves it where it is.
func offered(node config.Node, deviceID string, dev *Device, whole, prepared bool) error {
	listed := slices.Contains(node.AllowDevices, deviceID) || slices.Contains(node.AllowDevices, dev.BDF)
	// prepared: the DRA driver's root-owned checkpoint gave it to this pod.
	if !listed && !node.AllowUnadvertisedDevices && !prepared {
		dir := node.DevInfoDir
		if dir == "" {
			dir = config.DefaultDevInfoDir
		}
		ok, err := advertised(dir, deviceID)
		if err != nil {
			return config.Error("deviceID", "%s: cannot read the advertised devices in %s: %v", deviceID, dir, err)
		}
		if !ok {
			return config.Error("deviceID", "%s is not a device this node offers: no device plugin advertises it (no device-info file in %s) and %s does not allow it", deviceID, dir, config.DefaultNodeFile)
		}
	}
	if whole && !dev.IsVF && dev.Netdev != "" && !listed {
		if why := hostTraffic(dev.Netdev); why != "" {
			return config.Error("deviceID", "%s (%s) carries the host's traffic (%s): a node must list it in allowDevices to attach it", deviceID, dev.Netdev, why)
		}
	}
	return nil
}

// advertised: the device plugin wrote <resource>-<deviceID>-device.json,
// a regular file owned by root, into dir.
func advertised(dir, deviceID string) (bool, error) {
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	suffix := "-" + deviceID + "-device.json"
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), suffix) || !e.Type().IsRegular() {
			continue
		}
		var st unix.Stat_t
		if unix.Lstat(dir+"/"+e.Name(), &st) == nil && st.Uid == 0 {
			return true, nil
		}
	}
	return false, nil
}

// hostTraffic says why a host netdev serves the host ("" if it does not):
// a global unicast address, or a default route through it.
func hostTraffic(name string) string {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return ""
	}
	addrs, _ := netlink.AddrList(l, netlink.FAMILY_ALL)
	for _, a := range addrs {
		if a.IP.IsGlobalUnicast() {
			return "address " + a.IPNet.String()
		}
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, _ := netlink.RouteList(l, fam)
		for _, r := range routes {
			if r.Dst == nil || (r.Dst.IP.IsUnspecified() && isZeroMask(r.Dst.Mask)) {
				return fmt.Sprintf("default route via %v", r.Gw)
			}
		}
	}
	return ""
}

func isZeroMask(m net.IPMask) bool {
	ones, _ := m.Size()
	return ones == 0
}
