package cni

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/railnet/railnet/pkg/cni/config"
	"github.com/railnet/railnet/pkg/netdev"
	"github.com/railnet/railnet/pkg/state"
)

// Shared attachments: many pods on one RDMA NIC. Each pod gets the HCA's
// RDMA character devices from the device plugin (a shared slot, BDF#k) and
// its own child link of the HCA's netdev from here, whose address gives it
// its RoCE GID. The HCA's netdev is never moved, renamed or reconfigured.

// validateChild refuses what a child link cannot be, from the netconf and
// sysfs alone.
func (a *attachment) validateChild() error {
	conf, dev := a.conf, a.dev
	switch {
	case dev.IB && a.attach != config.AttachIPoIB:
		return config.Error("attach", "%s: %s is an InfiniBand device; its child links are ipoib", a.attach, dev.BDF)
	case !dev.IB && a.attach == config.AttachIPoIB:
		return config.Error("attach", "ipoib: %s is not an InfiniBand device (link layer Ethernet: use macvlan or ipvlan)", dev.BDF)
	case dev.Userspace():
		return config.Error("attach", "%s: %s is bound to %s and has no netdev to make a child of", a.attach, dev.BDF, dev.Driver)
	}
	if a.slot && conf.MacvlanMode == "passthru" {
		return config.Error("macvlanMode", "passthru gives one child the whole device, and deviceID %s is a shared slot of it", a.deviceID)
	}
	for _, m := range []struct{ field, v string }{{"mac", conf.MAC}, {"runtimeConfig.mac", conf.RuntimeConfig.MAC}} {
		if m.v != "" && a.attach != config.AttachMacvlan {
			return config.Error(m.field, "an %s child shares its parent's hardware address; it cannot have its own", a.attach)
		}
	}
	if f := vfOnlyField(conf); f != "" {
		return config.Error(f, "attach %s: a child link has no VF settings of its own (they would change the device every pod on it shares)", a.attach)
	}
	return nil
}

// prepareChild finds the parent in the host netns and checks what needs
// the kernel: the MTU against the parent's, and the RDMA netns mode.
func (a *attachment) prepareChild() error {
	conf, dev := a.conf, a.dev
	if dev.Netdev == "" {
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("device %s has no netdev in the host network namespace (moved into a pod, or its driver is not loaded)", dev.BDF), "")
	}
	parent, err := a.host.Handle.LinkByName(dev.Netdev)
	if err != nil {
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("device %s: netdev %s is not in the host network namespace", dev.BDF, dev.Netdev), err.Error())
	}
	a.parent = parent
	if conf.MTU != nil && *conf.MTU > parent.Attrs().MTU {
		return config.Error("mtu", "%d is above the MTU %d of %s, the parent of this %s child", *conf.MTU, parent.Attrs().MTU, dev.Netdev, a.attach)
	}
	if dev.RDMA != "" && conf.RDMA != "off" {
		// Without the RDMA subsystem there is no mode to check, and no
		// RDMA in the pod either way.
		if mode, err := a.host.Handle.RdmaSystemGetNetnsMode(); err == nil && mode == "exclusive" {
			return config.Error("attach", "%s: the RDMA subsystem is in exclusive netns mode, where RDMA device %s lives in one netns only, so pods sharing %s cannot all reach it; "+
				"switch the node to shared mode (rdma system set netns shared, or ib_core netns_mode=1 at module load), or set \"rdma\": \"off\"", a.attach, dev.RDMA, dev.BDF)
		}
	}
	return nil
}

// childNames are the child's temporary name and its alias, both from the
// attachment's identity (container, interface): two ADDs running at the
// same time never share them, and DEL finds the child by its alias.
func childNames(containerID, ifName string) (temp, alias string) {
	sum := sha256.Sum256([]byte(containerID + "\x00" + ifName))
	h := hex.EncodeToString(sum[:])
	return "rnc" + h[:12], "railnet:" + h[:32]
}

func (a *attachment) childRecord() *state.Child {
	temp, alias := childNames(a.args.ContainerID, a.args.IfName)
	c := &state.Child{Kind: a.attach, Parent: a.dev.Netdev, ParentIndex: a.parent.Attrs().Index, Alias: alias, TempName: temp}
	switch a.attach {
	case config.AttachMacvlan:
		c.Mode = a.conf.MacvlanMode
		if c.Mode == "" {
			c.Mode = "bridge"
		}
	case config.AttachIPVlan:
		c.Mode = a.conf.IPVlanMode
		if c.Mode == "" {
			c.Mode = "l2"
		}
	case config.AttachIPoIB:
		c.Mode = "datagram"
		switch {
		case a.conf.PKey != nil:
			c.PKey = a.conf.PKey.Full()
		case a.dev.PKey&0x7fff != 0:
			c.PKey = a.dev.PKey | 0x8000
		default:
			c.PKey = 0xffff // the default partition
		}
	}
	return c
}

// addChild creates the child in the pod netns under its temporary name
// (its alias already in the record), then renames it to CNI_IFNAME and
// brings it up.
func (a *attachment) addChild(iface *current.Interface) error {
	rc, args := a.rec.Child, a.args
	c := netdev.Child{Kind: rc.Kind, ParentIndex: rc.ParentIndex, Mode: rc.Mode, PKey: rc.PKey, Name: rc.TempName, Alias: rc.Alias}
	if a.conf.MTU != nil {
		c.MTU = *a.conf.MTU
	}
	if rc.Kind == config.AttachMacvlan {
		c.MAC = a.conf.HardwareAddr()
	}
	// No record write: the reserved record already names the child (its
	// temporary name and alias), and DEL deletes whatever it finds by them.
	if err := a.p.children().Add(a.host, a.pod, c); err != nil {
		return typed(types.ErrInternal, fmt.Sprintf("create a %s child of %s in the pod", rc.Kind, rc.Parent), err)
	}
	if err := netdev.FinishChild(a.pod, rc.TempName, rc.Alias, args.IfName); err != nil {
		return typed(types.ErrInternal, fmt.Sprintf("%s child of %s", rc.Kind, rc.Parent), err)
	}
	l, err := a.pod.Handle.LinkByName(args.IfName)
	if err != nil {
		return typed(types.ErrInternal, "find "+args.IfName+" in the pod", err)
	}
	iface.Mac, iface.Mtu, iface.Sandbox = l.Attrs().HardwareAddr.String(), l.Attrs().MTU, args.Netns
	return nil
}

// checkChild: the link is still the child ADD made (kind, parent, mode,
// partition) with the netconf's MTU.
func (a *attachment) checkChild() error {
	rc := a.rec.Child
	name := a.args.IfName
	if e := a.rec.Encryption; e != nil && e.MACsec != nil {
		name = e.MACsec.Lower // the child is beneath the macsec link
	}
	got, err := a.p.children().Read(a.host, a.pod, name)
	if err != nil {
		return typed(types.ErrInternal, "read "+a.args.IfName, err)
	}
	bad := func(what string, got, want any) error {
		return types.NewError(types.ErrInternal, fmt.Sprintf("%s: %s is %v, ADD made %v", a.args.IfName, what, got, want), "")
	}
	switch {
	case got.Kind != rc.Kind:
		return bad("kind", got.Kind, rc.Kind)
	case got.Alias != rc.Alias:
		return bad("alias", got.Alias, rc.Alias)
	case got.ParentIndex != rc.ParentIndex:
		return bad("parent ifindex", got.ParentIndex, fmt.Sprintf("%d (%s)", rc.ParentIndex, rc.Parent))
	case got.Mode != rc.Mode:
		return bad("mode", got.Mode, rc.Mode)
	case got.PKey != rc.PKey:
		return bad("pkey", fmt.Sprintf("%#04x", got.PKey), fmt.Sprintf("%#04x", rc.PKey))
	case a.conf.MTU != nil && got.MTU != *a.conf.MTU:
		return bad("MTU", got.MTU, *a.conf.MTU)
	}
	if mac := a.conf.HardwareAddr(); len(mac) > 0 && rc.Kind == config.AttachMacvlan && got.MAC.String() != mac.String() {
		return bad("MAC", got.MAC, mac)
	}
	return nil
}
