package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/railnet/railnet/pkg/cni/config"
	"github.com/railnet/railnet/pkg/dra/claims"
	"github.com/railnet/railnet/pkg/netdev"
	"github.com/railnet/railnet/pkg/state"
	"github.com/railnet/railnet/pkg/sysfs"
)

// attachment is one attachment while a command works on it: what ADD
// learns step by step, or what DEL, GC and CHECK read from its record.
type attachment struct {
	p     *Plugin
	log   *slog.Logger
	args  *skel.CmdArgs   // nil when DEL's record or GC drives an undo
	conf  *config.NetConf // nil when a record's configuration cannot be read
	store *state.Store
	host  *netdev.Namespace
	pod   *netdev.Namespace // nil when the pod's netns is gone
	rec   *state.Record

	// ADD only.
	deviceID string
	dev      *Device
	attach   string
	slot     bool
	settings netdev.VFSettings
	parent   netlink.Link // a child's parent, in the host netns
	result   *current.Result
	// ipamSettled: the IPAM plugin refused ADD and its DEL has run.
	ipamSettled bool
	// extra is the result's "railnet" member (encryption), if any.
	extra *encryptionInfo
	// claim: the device came from the DRA driver's checkpoint.
	claim *claims.Match
}

// A step is one part of an attachment. do is ADD's, and records what it is
// about to touch before it touches it; undo is DEL's, GC's and a failed
// ADD's, run in reverse order from the record alone and idempotent; check
// is CHECK's, in order.
type step struct {
	name  string
	do    func(*attachment) error
	undo  func(*attachment) error
	check func(*attachment, *current.Result) error
	// aside: undo touches nothing the earlier steps' undos do (it runs a
	// plugin), so it runs beside them rather than before them. Deleting a
	// link waits out an RCU grace period; releasing an address execs the
	// IPAM plugin: together, not one after the other.
	aside bool
}

// steps are an attachment's parts after it is validated and its record
// reserved (validate, reserve), before the record says done.
var steps = []step{
	{"vf-settings", (*attachment).setVF, (*attachment).restoreVF, (*attachment).checkVF, false},
	{"attach", (*attachment).attachLink, (*attachment).detachLink, (*attachment).checkLink, false},
	{"ipam", (*attachment).addIPAM, (*attachment).releaseIPAM, (*attachment).checkIPAM, true},
	{"encryption", (*attachment).encrypt, (*attachment).decrypt, (*attachment).checkEncryption, false},
	{"announce", (*attachment).announce, nil, nil, false},
	{"device-info", (*attachment).writeDeviceInfo, (*attachment).removeDeviceInfo, nil, false},
}

// Add attaches the device: validate, reserve, then each step; a failing
// step has every earlier one undone.
func (p *Plugin) Add(args *skel.CmdArgs) (err error) {
	conf, err := config.Parse(args.StdinData)
	if err != nil {
		return err
	}
	log, done := p.logger(conf, args, "ADD")
	defer done()
	defer func() {
		if err != nil {
			log.Error("ADD failed", "err", err)
		}
	}()
	a := &attachment{p: p, log: log, args: args, conf: conf}
	defer a.close()
	if err := a.validate(); err != nil {
		return err
	}
	unlock, err := a.reserve()
	if err != nil {
		return err
	}
	defer unlock()
	// The record exists before anything is touched: a crash from here on
	// leaves what DEL or GC needs to put everything back.
	defer func() {
		if err != nil {
			if terr := a.teardown(); terr != nil {
				log.Error("rollback incomplete; DEL or GC will retry", "err", terr)
			}
		}
	}()
	for _, s := range steps {
		t0 := time.Now()
		if err := s.do(a); err != nil {
			return err
		}
		log.Debug("step done", "step", s.name, "took", time.Since(t0))
	}
	a.rec.Net = netData(a.result, args.IfName)
	if err := a.save(state.PhaseDone); err != nil {
		return err
	}
	log.Info("attached", "device", a.deviceID, "attach", a.attach, "hostName", a.rec.HostName, "vf", a.dev.VFIndex)
	return printResult(a.result, conf.CNIVersion, a.extra)
}

// netData is the pod's interface in the result: its name, MAC and addresses.
func netData(r *current.Result, ifName string) *state.NetData {
	if r == nil {
		return nil
	}
	nd := &state.NetData{IfName: ifName}
	idx := -1
	for i, in := range r.Interfaces {
		if in.Name == ifName && in.Sandbox != "" {
			idx, nd.MAC = i, in.Mac
		}
	}
	for _, ip := range r.IPs {
		if ip.Interface == nil || *ip.Interface == idx {
			nd.IPs = append(nd.IPs, ip.Address.String())
		}
	}
	return nd
}

// printResult prints the result, with a "railnet" member when there is
// more to say than the spec's fields can (an encrypted attachment's key,
// offload, and that RDMA traffic is not covered). Runtimes ignore it.
func printResult(r *current.Result, version string, extra *encryptionInfo) error {
	if extra == nil {
		return types.PrintResult(r, version)
	}
	v, err := r.GetAsVersion(version)
	if err != nil {
		return err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	m["railnet"], _ = json.Marshal(map[string]any{"encryption": extra})
	out, err := json.MarshalIndent(m, "", "    ")
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(append(out, '\n'))
	return err
}

func (a *attachment) close() {
	a.pod.Close()
	a.host.Close()
}

// save records the phase the attachment is entering.
func (a *attachment) save(phase string) error {
	if phase != "" {
		a.rec.Phase = phase
	}
	if err := a.store.Save(a.rec); err != nil {
		return typed(types.ErrIOFailure, "write the attachment record", err)
	}
	return nil
}

// validate resolves the device and refuses, before anything is touched,
// whatever this attachment cannot be.
func (a *attachment) validate() error {
	conf := a.conf
	deviceID, err := conf.Device()
	if err != nil && conf.Claim == "" {
		return err
	}
	if err != nil {
		// No deviceID: the DRA driver prepared this pod's claim before
		// its sandbox existed; its checkpoint names the device.
		_, _, uid := podIdentity(a.args.Args)
		m, ferr := claims.Find(claims.Dir(conf.State()), uid, conf.Claim)
		if ferr != nil {
			return config.Error("claim", "%v", ferr)
		}
		deviceID, a.claim = m.Device.ID, &m
	}
	a.deviceID = deviceID
	sys, err := sysfs.New(conf.Root())
	if err != nil {
		return config.Error("sysfsRoot", "%v", err)
	}
	defer sys.Close()
	dev, err := resolveDevice(sys, deviceID)
	if err != nil {
		return config.Error("deviceID", "%v", err)
	}
	a.dev, a.slot = dev, strings.Contains(deviceID, "#")
	if a.slot {
		a.deviceID = dev.BDF + deviceID[strings.Index(deviceID, "#"):]
	}
	a.attach = conf.Attach
	if a.attach == "" {
		a.attach = config.AttachMove
		if a.slot {
			a.attach = map[bool]string{false: config.AttachMacvlan, true: config.AttachIPoIB}[dev.IB]
		}
	}
	if err := offered(conf.Node(), a.deviceID, dev, a.attach == config.AttachMove, a.claim != nil); err != nil {
		return err
	}
	if _, err := conf.DeviceInfoFile(); err != nil {
		return err
	}
	if conf.Encryption != nil && dev.Userspace() {
		return config.Error("encryption", "%s is bound to %s: its traffic never meets the kernel", dev.BDF, dev.Driver)
	}
	if a.attach == config.AttachMove {
		if err := a.validateMove(); err != nil {
			return err
		}
	} else if err := a.validateChild(); err != nil {
		return err
	}
	if conf.IPAM.Type != "" {
		// Found before anything is touched: a missing IPAM plugin is a
		// config error, not a half-done attachment.
		if _, err := invoke.FindInPath(conf.IPAM.Type, filepath.SplitList(os.Getenv("CNI_PATH"))); err != nil {
			return config.Error("ipam.type", "plugin %q is not in CNI_PATH (%s)", conf.IPAM.Type, os.Getenv("CNI_PATH"))
		}
	}
	// Not writable shows in reserve's first Save, before anything is
	// touched (STATUS probes it).
	if a.store, err = state.Open(conf.State()); err != nil {
		return typed(types.ErrIOFailure, "state directory "+conf.State()+" is not usable", err)
	}
	if a.pod, err = openPod(a.args.Netns); err != nil {
		return err
	}
	if a.host, err = netdev.OpenNamespace(""); err != nil {
		return typed(types.ErrInternal, "open the host netns", err)
	}
	if a.attach != config.AttachMove {
		return a.prepareChild()
	}
	return nil
}

func (a *attachment) validateMove() error {
	conf, dev := a.conf, a.dev
	if a.slot {
		return config.Error("attach", "move takes the whole device, and deviceID %s is a shared slot of it: use attach macvlan, ipvlan or ipoib (or a pool that does not share)", a.deviceID)
	}
	if conf.MTU != nil && dev.IsVF && dev.PFMTU > 0 && *conf.MTU > dev.PFMTU {
		return config.Error("mtu", "%d is above the MTU %d of PF %s", *conf.MTU, dev.PFMTU, dev.PF)
	}
	if f := vfOnlyField(conf); f != "" && !dev.IsVF {
		return config.Error(f, "%s is not a VF; this setting is programmed on a VF through its PF", dev.BDF)
	}
	a.settings = vfSettings(conf, dev)
	if !a.settings.Empty() && dev.PF == "" {
		return config.Error("deviceID", "VF %s: its PF has no netdev to program the VF through", dev.BDF)
	}
	return nil
}

// reserve takes the device's lock, makes sure the device is this
// attachment's to take, and writes the record.
func (a *attachment) reserve() (unlock func(), err error) {
	dev, store, args := a.dev, a.store, a.args
	var lock *state.Lock
	if a.attach == config.AttachMove {
		lock, err = store.LockDevice(dev.BDF, a.p.lockTimeout())
	} else {
		lock, err = store.LockSlot(dev.BDF, a.deviceID, a.p.lockTimeout())
	}
	if err != nil {
		return nil, typed(types.ErrTryAgainLater, "device "+a.deviceID+" is busy", err)
	}
	defer func() {
		if err != nil {
			lock.Unlock()
		}
	}()
	// Who holds the device (move) or the slot (a child), and, for a move,
	// which child links hang on the device: one read of the records.
	recs, _ := store.List()
	var held *state.Record
	var shared []*state.Record
	for _, r := range recs {
		switch {
		case a.attach != config.AttachMove:
			if r.DeviceID == a.deviceID {
				held = r
			}
		case r.BDF != dev.BDF:
		case r.Shared():
			shared = append(shared, r)
		default:
			held = r
		}
	}
	if len(shared) > 0 {
		// Moving a netdev takes its child links down with it: not while
		// other pods' shared attachments hang on it.
		return nil, types.NewError(types.ErrTryAgainLater, fmt.Sprintf("device %s is shared by %d attachment(s) (%s on %s): it cannot move into one pod",
			dev.BDF, len(shared), shared[0].DeviceID, shared[0].ContainerID), "")
	}
	if held != nil {
		_, _, uid := podIdentity(args.Args)
		// The same pod's earlier sandbox (the kubelet runs one at a time):
		// it is dead, and its attachment goes as a retry's would.
		earlier := uid != "" && held.PodUID == uid && held.IfName == args.IfName
		if (held.ContainerID != args.ContainerID || held.IfName != args.IfName) && !earlier {
			return nil, types.NewError(types.ErrTryAgainLater, fmt.Sprintf("device %s is in use by container %s (%s)", a.deviceID, held.ContainerID, held.IfName), "")
		}
		if earlier && held.ContainerID != args.ContainerID {
			a.log.Info("taking the device over from the pod's earlier sandbox", "device", a.deviceID, "earlier", held.ContainerID)
		}
		// The same attachment again (a runtime retrying after a crash):
		// take the old one apart first.
		if err := a.p.teardown(a.log, store, a.host, held); err != nil {
			return nil, typed(types.ErrTryAgainLater, "cleaning a previous attachment of "+a.deviceID, err)
		}
	}
	if dev.Netdev == "" && !dev.Userspace() {
		return nil, types.NewError(types.ErrTryAgainLater, fmt.Sprintf("device %s has no netdev in the host network namespace (in use by a pod, or its driver is not loaded)", dev.BDF), "")
	}
	rec := &state.Record{ContainerID: args.ContainerID, IfName: args.IfName, Netns: args.Netns, Network: a.conf.Name,
		Created: time.Now().UTC(), Phase: state.PhaseReserved, DeviceID: a.deviceID, BDF: dev.BDF, PF: dev.PF,
		VFIndex: dev.VFIndex, Driver: dev.Driver, Config: args.StdinData, CNIPath: os.Getenv("CNI_PATH"), Attach: a.attach}
	rec.PodNamespace, rec.PodName, rec.PodUID = podIdentity(args.Args)
	if m := a.claim; m != nil {
		rec.Claim = &state.ClaimRef{UID: m.Claim.UID, Namespace: m.Claim.Namespace, Name: m.Claim.Name,
			Request: m.Device.Request, Driver: claims.Driver, Pool: m.Device.DRAPool, Device: m.Device.Device}
	}
	if a.attach != config.AttachMove {
		rec.Child = a.childRecord()
	} else if dev.Netdev != "" {
		hs, err := netdev.Snapshot(a.host, dev.Netdev)
		if err != nil {
			return nil, types.NewError(types.ErrTryAgainLater, fmt.Sprintf("device %s: netdev %s is not in the host network namespace", dev.BDF, dev.Netdev), err.Error())
		}
		rec.HostName, rec.HostMAC, rec.HostMTU, rec.HostAlias, rec.HostUp = hs.Name, hs.MAC, hs.MTU, hs.Alias, hs.Up
		rec.HostParent, rec.HostIndex = hs.Parent, hs.Index
	}
	a.rec = rec
	if err := a.save(""); err != nil {
		return nil, err
	}
	a.result = &current.Result{CNIVersion: current.ImplementedSpecVersion}
	return lock.Unlock, nil
}

// teardown undoes every step, last first, as far as the record says the
// attachment got, then deletes the record. The device's lock must be held.
func (a *attachment) teardown() error {
	var errs []error
	var aside []chan error
	for i := len(steps) - 1; i >= 0; i-- {
		if steps[i].undo == nil {
			continue
		}
		if steps[i].aside {
			c := make(chan error, 1)
			go func(undo func(*attachment) error) { c <- undo(a) }(steps[i].undo)
			aside = append(aside, c)
			continue
		}
		if err := steps[i].undo(a); err != nil {
			errs = append(errs, err)
		}
	}
	for _, c := range aside {
		if err := <-c; err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return a.store.Delete(a.rec.ContainerID, a.rec.IfName)
}

// teardown undoes the attachment rec records (DEL, GC, an ADD retried).
func (p *Plugin) teardown(log *slog.Logger, store *state.Store, host *netdev.Namespace, rec *state.Record) error {
	a := &attachment{p: p, log: log, store: store, host: host, rec: rec}
	if conf, err := config.Recorded(rec.Config); err == nil {
		a.conf = conf
	} else {
		log.Warn("the record's configuration is unreadable; IPAM and device-info are left", "err", err)
	}
	if rec.Netns != "" {
		if n, err := netdev.OpenNamespace(rec.Netns); err == nil {
			a.pod = n
			defer n.Close()
		}
	}
	return a.teardown()
}

// Check compares the live attachment with prevResult and the netconf,
// step by step.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	conf, err := config.Parse(args.StdinData)
	if err != nil {
		return err
	}
	log, done := p.logger(conf, args, "CHECK")
	defer done()
	prev, err := prevResult(conf)
	if err != nil {
		return err
	}
	store, err := state.Open(conf.State())
	if err != nil {
		return typed(types.ErrIOFailure, "state directory", err)
	}
	rec, err := store.Load(args.ContainerID, args.IfName)
	if err != nil {
		return typed(types.ErrUnknownContainer, "no railnet attachment "+args.ContainerID+"/"+args.IfName, err)
	}
	if rec.Phase != state.PhaseDone {
		return types.NewError(types.ErrTryAgainLater, "attachment is incomplete (phase "+rec.Phase+")", "")
	}
	a := &attachment{p: p, log: log, args: args, conf: conf, store: store, rec: rec}
	defer a.close()
	if a.host, err = netdev.OpenNamespace(""); err != nil {
		return typed(types.ErrInternal, "open the host netns", err)
	}
	if a.inPod() {
		if a.pod, err = openPod(args.Netns); err != nil {
			return err
		}
	}
	for _, s := range steps {
		if s.check == nil {
			continue
		}
		if err := s.check(a, prev); err != nil {
			return err
		}
	}
	log.Debug("check passed")
	return nil
}

// inPod: the attachment has a netdev in the pod (not a userspace driver's
// function).
func (a *attachment) inPod() bool { return a.rec.HostName != "" || a.rec.Child != nil }
