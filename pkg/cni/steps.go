package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/railnet/railnet/pkg/cni/config"
	"github.com/railnet/railnet/pkg/deviceinfo"
	"github.com/railnet/railnet/pkg/netdev"
	"github.com/railnet/railnet/pkg/state"
)

// Step "vf-settings": MAC, VLAN, QoS, spoofchk, trust, rates and link
// state of a VF, programmed on its PF; the VF's settings before are kept
// in the record.

func (a *attachment) setVF() error {
	if a.settings.Empty() {
		return nil
	}
	dev := a.dev
	orig, err := a.p.vf(a.host).Get(dev.PF, dev.VFIndex)
	if err != nil {
		return typed(types.ErrInternal, fmt.Sprintf("read VF %d of %s", dev.VFIndex, dev.PF), err)
	}
	a.rec.VFOrig = &orig
	if err := a.save(state.PhaseVFConfig); err != nil {
		return err
	}
	if err := a.p.vf(a.host).Set(dev.PF, dev.VFIndex, a.settings); err != nil {
		return typed(types.ErrInternal, fmt.Sprintf("configure VF %d on %s", dev.VFIndex, dev.PF), err)
	}
	return nil
}

func (a *attachment) restoreVF() error {
	rec := a.rec
	if rec.VFOrig == nil || rec.PF == "" {
		return nil
	}
	if err := a.p.vf(a.host).Restore(rec.PF, rec.VFIndex, *rec.VFOrig); err != nil {
		return fmt.Errorf("restore VF %d on %s: %w", rec.VFIndex, rec.PF, err)
	}
	return nil
}

func (a *attachment) checkVF(*current.Result) error {
	rec := a.rec
	if rec.VFOrig == nil {
		return nil
	}
	dev := Device{IsVF: true, VFIndex: rec.VFIndex, PF: rec.PF}
	want := vfSettings(a.conf, &dev)
	got, err := a.p.vf(a.host).Get(rec.PF, rec.VFIndex)
	if err != nil {
		return typed(types.ErrInternal, "read VF settings", err)
	}
	if err := compareVF(want, got); err != nil {
		return typed(types.ErrInternal, fmt.Sprintf("VF %d on %s", rec.VFIndex, rec.PF), err)
	}
	return nil
}

// Step "attach": the netdev itself into the pod (move, with its RDMA device
// in exclusive mode), or a child link of it (macvlan, ipvlan, ipoib).

func (a *attachment) attachLink() error {
	iface := &current.Interface{Name: a.args.IfName, PciID: a.dev.BDF}
	a.result.Interfaces = []*current.Interface{iface}
	if a.attach != config.AttachMove {
		return a.addChild(iface)
	}
	if a.dev.Netdev == "" {
		return nil // userspace driver: the device plugin hands it over
	}
	return a.moveIn(iface)
}

func (a *attachment) moveIn(iface *current.Interface) error {
	conf, dev, args, rec := a.conf, a.dev, a.args, a.rec
	// The RDMA device goes first: if it cannot move (rxe), nothing else
	// has, and a netdev move would take an rxe device down with it.
	if err := a.p.moveRDMA(a.log, conf, dev, a.host, a.pod, rec, a.store); err != nil {
		return err
	}
	rec.TempNetns = a.store.StagingPath()
	if err := a.save(state.PhaseMoving); err != nil {
		return err
	}
	mtu := 0
	if conf.MTU != nil {
		mtu = *conf.MTU
	}
	mac := conf.HardwareAddr()
	if dev.IsVF && len(a.settings.MAC) > 0 {
		mac = nil // the VF MAC is set through the PF; the netdev follows it
	}
	// One message moves and renames it (one namespace change); the
	// staging namespace only when the kernel refuses that.
	err := netdev.MoveIn(a.host, nil, a.pod, dev.Netdev, args.IfName, mac, mtu)
	if errors.Is(err, netdev.ErrNeedsStaging) {
		a.log.Debug("direct move refused; staging", "err", err)
		err = a.p.withStaging(a.store, func(temp *netdev.Namespace) error {
			return netdev.MoveIn(a.host, temp, a.pod, dev.Netdev, args.IfName, mac, mtu)
		})
	}
	if err != nil {
		return typed(types.ErrInternal, fmt.Sprintf("move %s into the pod as %s", dev.Netdev, args.IfName), err)
	}
	l, err := a.pod.Handle.LinkByName(args.IfName)
	if err != nil {
		return typed(types.ErrInternal, "find "+args.IfName+" in the pod", err)
	}
	rec.TempNetns = ""
	if rec.HostParent == "" {
		rec.HostIndex = l.Attrs().Index // a move keeps the ifindex unless it is taken
	}
	if err := a.save(""); err != nil {
		return err
	}
	iface.Mac, iface.Mtu, iface.Sandbox = l.Attrs().HardwareAddr.String(), l.Attrs().MTU, args.Netns
	return nil
}

func (a *attachment) detachLink() error {
	rec := a.rec
	var errs []error
	if rec.RDMAMoved && a.pod != nil {
		if err := rdmaBack(rec.RDMA, a.pod, a.host); err != nil {
			errs = append(errs, err)
		}
	}
	if rec.Child != nil {
		if err := netdev.DeleteChild(a.host, a.pod, rec.Child.Alias, rec.Child.TempName); err != nil {
			errs = append(errs, fmt.Errorf("%s child of %s: %w", rec.Child.Kind, rec.Child.Parent, err))
		}
	}
	if rec.HostName != "" && rec.Phase != state.PhaseReserved && rec.Phase != state.PhaseVFConfig {
		err := a.p.withStaging(a.store, func(temp *netdev.Namespace) error {
			return netdev.MoveOut(a.host, temp, a.pod, netdev.HostState{Name: rec.HostName, MAC: rec.HostMAC, MTU: rec.HostMTU,
				Alias: rec.HostAlias, Up: rec.HostUp, Parent: rec.HostParent, Index: rec.HostIndex}, rec.IfName)
		})
		switch {
		case errors.Is(err, netdev.ErrNotFound) && a.pod == nil:
			// The pod's namespace is gone and took a virtual device with it.
			a.log.Warn("netdev not found; the pod netns is gone", "hostName", rec.HostName)
		case err != nil:
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// checkLink: the link is in the pod with prevResult's MAC and MTU, and a
// child is still the child it was made.
func (a *attachment) checkLink(prev *current.Result) error {
	if !a.inPod() {
		return nil // userspace driver: nothing in the pod's netns
	}
	ifName := a.args.IfName
	l, err := a.pod.Handle.LinkByName(ifName)
	if err != nil {
		return typed(types.ErrInternal, ifName+" is not in the pod netns", err)
	}
	found := false
	for _, ifc := range prev.Interfaces {
		if ifc.Name != ifName || (ifc.Sandbox != "" && ifc.Sandbox != a.args.Netns) {
			continue
		}
		found = true
		if ifc.Mac != "" && !strings.EqualFold(ifc.Mac, l.Attrs().HardwareAddr.String()) {
			return types.NewError(types.ErrInternal, fmt.Sprintf("%s has MAC %s, prevResult says %s", ifName, l.Attrs().HardwareAddr, ifc.Mac), "")
		}
		if ifc.Mtu != 0 && ifc.Mtu != l.Attrs().MTU {
			return types.NewError(types.ErrInternal, fmt.Sprintf("%s has MTU %d, prevResult says %d", ifName, l.Attrs().MTU, ifc.Mtu), "")
		}
	}
	if !found {
		return types.NewError(types.ErrInternal, "prevResult has no interface "+ifName, "")
	}
	if a.rec.Child != nil {
		return a.checkChild()
	}
	return nil
}

// Step "ipam": the delegate IPAM plugin's addresses, on the pod's link.

func (a *attachment) addIPAM() error {
	conf, args := a.conf, a.args
	if conf.IPAM.Type == "" {
		return nil
	}
	if err := a.save(state.PhaseIPAM); err != nil {
		return err
	}
	r, err := delegate(args, "ADD", conf.IPAM.Type)
	if err != nil {
		if te, ok := config.IsTypeError(err); ok && te.Code != types.ErrTryAgainLater {
			// The plugin ran and said no: by the spec it leaves nothing
			// behind. Its DEL runs once, and whatever it says (it may
			// refuse for the same reason, an unsupported version say), the
			// rollback does not wait on it: a record kept for a DEL that
			// can never succeed would hold the device for ever.
			if derr := ipamDel(conf.IPAM.Type, a.rec); derr != nil {
				a.log.Warn("IPAM DEL after a refused IPAM ADD", "err", derr)
			}
			a.ipamSettled = true
		}
		return asCNI(err, types.ErrInternal, "IPAM "+conf.IPAM.Type)
	}
	ipr, err := current.NewResultFromResult(r)
	if err != nil {
		return typed(types.ErrDecodingFailure, "IPAM result", err)
	}
	if len(ipr.IPs) == 0 && !a.dev.Userspace() {
		return types.NewError(types.ErrInternal, "IPAM "+conf.IPAM.Type+" returned no address", "")
	}
	for _, ip := range ipr.IPs {
		ip.Interface = current.Int(0)
	}
	a.result.IPs, a.result.Routes, a.result.DNS = ipr.IPs, ipr.Routes, ipr.DNS
	// The addresses go on the link in "announce", after "encryption":
	// nothing leaves the pod before its traffic is protected.
	return nil
}

// inPodNetns runs fn on a thread in the pod's netns.
func (a *attachment) inPodNetns(fn func() error) error {
	podNS, err := ns.GetNS(a.args.Netns)
	if err != nil {
		return fmt.Errorf("open the pod netns: %w", err)
	}
	defer podNS.Close()
	return podNS.Do(func(ns.NetNS) error { return fn() })
}

func (a *attachment) releaseIPAM() error {
	rec, conf := a.rec, a.conf
	if conf == nil || conf.IPAM.Type == "" || a.ipamSettled {
		return nil
	}
	switch rec.Phase {
	case state.PhaseIPAM, state.PhaseEncrypt, state.PhaseDone:
	default:
		return nil // IPAM never ran: the record says ipam before it starts
	}
	var errs []error
	if rec.Phase == state.PhaseIPAM {
		// ADD died while its IPAM plugin ran; that plugin may still be
		// allocating. Releasing before it finishes would leak the address
		// it is about to write.
		if err := waitForOrphans(rec.ContainerID, rec.IfName, 30*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if err := ipamDel(conf.IPAM.Type, rec); err != nil {
		errs = append(errs, fmt.Errorf("IPAM DEL: %w", err))
	}
	return errors.Join(errs...)
}

// checkIPAM: the IPAM plugin's CHECK, then prevResult's addresses on the link.
func (a *attachment) checkIPAM(prev *current.Result) error {
	if a.conf.IPAM.Type != "" {
		if _, err := delegate(a.args, "CHECK", a.conf.IPAM.Type); err != nil {
			return asCNI(err, types.ErrInternal, "IPAM CHECK")
		}
	}
	if !a.inPod() {
		return nil
	}
	ifName := a.args.IfName
	idx := -1
	for i, ifc := range prev.Interfaces {
		if ifc.Name == ifName && (ifc.Sandbox == "" || ifc.Sandbox == a.args.Netns) {
			idx = i
		}
	}
	l, err := a.pod.Handle.LinkByName(ifName)
	if err != nil {
		return typed(types.ErrInternal, ifName+" is not in the pod netns", err)
	}
	addrs, err := a.pod.Handle.AddrList(l, 0)
	if err != nil {
		return typed(types.ErrInternal, "list addresses of "+ifName, err)
	}
	for _, ip := range prev.IPs {
		if ip.Interface != nil && *ip.Interface != idx {
			continue
		}
		found := false
		for _, ad := range addrs {
			if ad.IPNet.IP.Equal(ip.Address.IP) && ad.IPNet.Mask.String() == ip.Address.Mask.String() {
				found = true
			}
		}
		if !found {
			return types.NewError(types.ErrInternal, fmt.Sprintf("%s lacks address %s", ifName, ip.Address.String()), "")
		}
	}
	return nil
}

// Step "announce": the addresses on the pod's link (the macsec link, with
// MACsec), then the link up, which the kernel announces: with arp_notify
// and ndisc_notify set, a gratuitous ARP per IPv4 address and unsolicited
// neighbour advertisements as it comes up, with nothing to open, send or
// close here (a packet socket's close waits an RCU grace period). Nothing
// to undo: the addresses go with the link.

func (a *attachment) announce() error {
	if !a.inPod() {
		return nil
	}
	if a.conf.IPAM.Type != "" && len(a.result.IPs) > 0 {
		err := a.inPodNetns(func() error {
			notify(a.args.IfName)
			return configureIface(a.args.IfName, a.result)
		})
		if err != nil {
			return typed(types.ErrInternal, "configure addresses on "+a.args.IfName, err)
		}
		return nil
	}
	l, err := a.pod.Handle.LinkByName(a.args.IfName)
	if err == nil {
		err = a.pod.Handle.LinkSetUp(l)
	}
	if err != nil {
		return typed(types.ErrInternal, "set "+a.args.IfName+" up", err)
	}
	return nil
}

// Step "device-info": runtimeConfig.CNIDeviceInfoFile for Multus.

func (a *attachment) writeDeviceInfo() error {
	f, err := a.conf.DeviceInfoFile()
	if err != nil || f == "" {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
		return typed(types.ErrIOFailure, "write runtimeConfig.CNIDeviceInfoFile", err)
	}
	pfAddr := ""
	if a.dev.IsVF {
		pfAddr = a.dev.PFBDF
	}
	b, _ := json.Marshal(deviceinfo.NewPCI(a.dev.BDF, a.dev.RDMA, pfAddr))
	if err := deviceinfo.WriteFile(f, b); err != nil {
		return typed(types.ErrIOFailure, "write runtimeConfig.CNIDeviceInfoFile", err)
	}
	return nil
}

func (a *attachment) removeDeviceInfo() error {
	if a.conf == nil {
		return nil
	}
	f, err := a.conf.DeviceInfoFile()
	if err != nil {
		a.log.Warn("not removing runtimeConfig.CNIDeviceInfoFile", "err", err)
		return nil
	}
	if f != "" {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}
