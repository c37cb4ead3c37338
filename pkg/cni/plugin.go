// Package cni implements the railnet CNI commands: ADD, DEL, CHECK,
// STATUS and GC for SR-IOV VFs, whole netdevs and their RDMA devices.
package cni

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"golang.org/x/sys/unix"

	"github.com/railnet/railnet/pkg/cni/config"
	"github.com/railnet/railnet/pkg/netdev"
	"github.com/railnet/railnet/pkg/state"
	"github.com/railnet/railnet/pkg/sysfs"
)

// Plugin holds what the commands need from outside; zero values are the
// production ones.
type Plugin struct {
	// VF programs VFs on their PF; nil: netlink in the host namespace.
	VF func(host *netdev.Namespace) netdev.VFConfigurer
	// Children creates child links (shared attachments); nil: netlink.
	Children netdev.ChildLinks
	// Stderr receives logs when the netconf names no logFile.
	Stderr io.Writer
	// LockTimeout bounds the wait for a device held by another operation.
	LockTimeout time.Duration
}

// Funcs returns the skel entry points.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, Status: p.Status, GC: p.GC}
}

// Versions are the spec versions railnet speaks.
var Versions = version.PluginSupports("0.3.1", "0.4.0", "1.0.0", "1.1.0")

func (p *Plugin) children() netdev.ChildLinks {
	if p.Children != nil {
		return p.Children
	}
	return netdev.NetlinkChildren{}
}

func (p *Plugin) vf(host *netdev.Namespace) netdev.VFConfigurer {
	if p.VF != nil {
		return p.VF(host)
	}
	return netdev.NetlinkVF{NS: host}
}

// logger logs to the netconf's logFile (or stderr), with the attachment on every line.
func (p *Plugin) logger(conf *config.NetConf, args *skel.CmdArgs, cmd string) (*slog.Logger, func()) {
	var w io.Writer = p.Stderr
	if w == nil {
		w = os.Stderr
	}
	closeFn := func() {}
	if conf != nil && conf.LogFile != "" {
		// O_NOFOLLOW: a symlink planted at the log's path is not followed.
		if f, err := os.OpenFile(conf.LogFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY|unix.O_NOFOLLOW, 0o600); err == nil {
			w, closeFn = f, func() { f.Close() }
		}
	}
	// On stderr (no logFile) only warnings by default: runtimes keep a
	// plugin's stderr, and a line per ADD on every node is noise there.
	level := slog.LevelWarn
	if conf != nil && conf.LogFile != "" {
		level = slog.LevelInfo
	}
	if conf != nil {
		switch strings.ToLower(conf.LogLevel) {
		case "debug":
			level = slog.LevelDebug
		case "warning", "warn":
			level = slog.LevelWarn
		case "error", "panic":
			level = slog.LevelError
		}
	}
	l := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})).With("cmd", cmd)
	if args != nil {
		l = l.With("containerID", args.ContainerID, "netns", args.Netns, "ifname", args.IfName)
		if ns, name, _ := podIdentity(args.Args); name != "" {
			l = l.With("K8S_POD_NAMESPACE", ns, "K8S_POD_NAME", name)
		}
	}
	return l, closeFn
}

// podIdentity reads the pod from CNI_ARGS (Multus/kubelet:
// K8S_POD_NAMESPACE=..;K8S_POD_NAME=..;K8S_POD_UID=..).
func podIdentity(cniArgs string) (namespace, name, uid string) {
	for _, kv := range strings.Split(cniArgs, ";") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "K8S_POD_NAMESPACE":
			namespace = v
		case "K8S_POD_NAME":
			name = v
		case "K8S_POD_UID":
			uid = v
		}
	}
	return namespace, name, uid
}

func typed(code uint, msg string, err error) *types.Error {
	details := ""
	if err != nil {
		details = err.Error()
	}
	return types.NewError(code, msg, details)
}

// prevResult decodes CHECK's prevResult and refuses what would make it
// dereference nothing: null interfaces, IPs or routes, an IP's interface
// index outside the list.
func prevResult(conf *config.NetConf) (*current.Result, error) {
	if conf.RawPrevResult == nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "prevResult: missing", "")
	}
	if err := version.ParsePrevResult(&conf.NetConf); err != nil {
		return nil, typed(types.ErrDecodingFailure, "prevResult", err)
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return nil, typed(types.ErrDecodingFailure, "prevResult", err)
	}
	for i, ifc := range prev.Interfaces {
		if ifc == nil {
			return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("prevResult: interfaces[%d] is null", i), "")
		}
	}
	for i, ip := range prev.IPs {
		if ip == nil {
			return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("prevResult: ips[%d] is null", i), "")
		}
		if ip.Interface != nil && (*ip.Interface < 0 || *ip.Interface >= len(prev.Interfaces)) {
			return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("prevResult: ips[%d].interface %d is not an interface", i, *ip.Interface), "")
		}
	}
	for i, r := range prev.Routes {
		if r == nil {
			return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("prevResult: routes[%d] is null", i), "")
		}
	}
	return prev, nil
}

// asCNI keeps a *types.Error, and wraps anything else with code.
func asCNI(err error, code uint, msg string) error {
	if err == nil {
		return nil
	}
	if te, ok := config.IsTypeError(err); ok {
		return te
	}
	return typed(code, msg+": "+err.Error(), nil)
}

func openPod(path string) (*netdev.Namespace, error) {
	if path == "" {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is empty", "")
	}
	pod, err := netdev.OpenNamespace(path)
	switch {
	case err == nil:
		return pod, nil
	case errors.Is(err, os.ErrNotExist):
		return nil, typed(types.ErrUnknownContainer, "netns "+path+" does not exist", err)
	case errors.Is(err, netdev.ErrNotNetns):
		return nil, typed(types.ErrInvalidNetNS, "CNI_NETNS "+path+" is not a network namespace", err)
	}
	return nil, typed(types.ErrInvalidEnvironmentVariables, "cannot open netns "+path, err)
}

func (p *Plugin) lockTimeout() time.Duration {
	if p.LockTimeout > 0 {
		return p.LockTimeout
	}
	return 10 * time.Second
}

// vfOnlyField names the first setting in the netconf that only a VF has.
func vfOnlyField(conf *config.NetConf) string {
	switch {
	case conf.VLAN != nil:
		return "vlan"
	case conf.VLANQoS != nil:
		return "vlanQoS"
	case conf.VLANProto != nil:
		return "vlanProto"
	case conf.SpoofChk != nil:
		return "spoofchk"
	case conf.Trust != nil:
		return "trust"
	case conf.LinkState != nil:
		return "link_state"
	case conf.MinTxRate != nil:
		return "min_tx_rate"
	case conf.MaxTxRate != nil:
		return "max_tx_rate"
	}
	return ""
}

// vfSettings turns the netconf into VF settings.
func vfSettings(conf *config.NetConf, dev *Device) netdev.VFSettings {
	var s netdev.VFSettings
	if !dev.IsVF {
		return s // a whole netdev: its MAC and MTU are set on the link itself
	}
	if mac := conf.HardwareAddr(); len(mac) > 0 && !dev.IB {
		s.MAC = mac
	}
	s.VLAN, s.QoS, s.VLANProto = conf.VLAN, conf.VLANQoS, conf.VLANProtoNumber()
	onOff := func(v *string) *bool {
		if v == nil {
			return nil
		}
		b := *v == "on"
		return &b
	}
	s.SpoofChk, s.Trust = onOff(conf.SpoofChk), onOff(conf.Trust)
	if conf.LinkState != nil {
		ls := map[string]uint32{"auto": netdev.VFLinkAuto, "enable": netdev.VFLinkEnable, "disable": netdev.VFLinkDisable}[*conf.LinkState]
		s.LinkState = &ls
	}
	s.MinTxRate, s.MaxTxRate = conf.MinTxRate, conf.MaxTxRate
	if g := conf.RuntimeConfig.InfinibandGUID; g != "" && dev.IB {
		hw, _ := net.ParseMAC(g)
		s.NodeGUID, s.PortGUID = hw, hw
	}
	return s
}

// Del puts everything back. It succeeds when the netns, the device or the
// record is already gone, and when run twice.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	conf, err := config.Parse(args.StdinData)
	if err != nil {
		return err
	}
	log, done := p.logger(conf, args, "DEL")
	defer done()
	store, err := state.Open(conf.State())
	if err != nil {
		return typed(types.ErrIOFailure, "state directory "+conf.State()+" is not usable", err)
	}
	rec, err := store.Load(args.ContainerID, args.IfName)
	if errors.Is(err, os.ErrNotExist) {
		// Nothing of ours to undo; release the address in case ADD died
		// before its record (IPAM DEL is idempotent).
		if conf.IPAM.Type != "" {
			if _, err := delegate(args, "DEL", conf.IPAM.Type); err != nil {
				log.Warn("IPAM DEL without a record", "err", err)
			}
		}
		log.Info("no record: nothing to restore")
		return nil
	}
	if err != nil {
		return typed(types.ErrIOFailure, "read the attachment record", err)
	}
	host, err := netdev.OpenNamespace("")
	if err != nil {
		return typed(types.ErrInternal, "open the host netns", err)
	}
	defer host.Close()
	lock, err := store.LockRecord(rec, p.lockTimeout())
	if err != nil {
		return typed(types.ErrTryAgainLater, "device "+rec.DeviceID+" is busy", err)
	}
	defer lock.Unlock()
	if err := p.teardown(log, store, host, rec); err != nil {
		return typed(types.ErrTryAgainLater, "restore "+rec.BDF, err)
	}
	log.Info("detached", "device", rec.BDF, "hostName", rec.HostName)
	return nil
}

// delegate runs the IPAM plugin for this invocation with the arguments it
// got (not from the process environment, so the plugin also works
// in-process and from GC). ADD returns its result.
func delegate(args *skel.CmdArgs, cmd, plugin string) (types.Result, error) {
	paths := filepath.SplitList(os.Getenv("CNI_PATH"))
	pluginPath, err := invoke.FindInPath(plugin, paths)
	if err != nil {
		return nil, err
	}
	a := &invoke.Args{Command: cmd, ContainerID: args.ContainerID, NetNS: args.Netns, IfName: args.IfName,
		PluginArgsStr: args.Args, Path: os.Getenv("CNI_PATH")}
	ctx, cancel := ipamContext()
	defer cancel()
	if cmd == "ADD" {
		r, err := invoke.ExecPluginWithResult(ctx, pluginPath, args.StdinData, a, nil)
		return r, ipamErr(ctx, plugin, err)
	}
	return nil, ipamErr(ctx, plugin, invoke.ExecPluginWithoutResult(ctx, pluginPath, args.StdinData, a, nil))
}

// DefaultIPAMTimeout bounds every IPAM delegate call: ADD and DEL hold the
// device's lock meanwhile, and a hung plugin must not hold it for ever.
// $RAILNET_IPAM_TIMEOUT (a node setting, a Go duration) changes it.
const DefaultIPAMTimeout = 30 * time.Second

func ipamContext() (context.Context, context.CancelFunc) {
	d := DefaultIPAMTimeout
	if v, err := time.ParseDuration(os.Getenv("RAILNET_IPAM_TIMEOUT")); err == nil && v > 0 {
		d = v
	}
	return context.WithTimeout(context.Background(), d)
}

func ipamErr(ctx context.Context, plugin string, err error) error {
	if err != nil && ctx.Err() != nil {
		return typed(types.ErrTryAgainLater, "IPAM plugin "+plugin+" did not answer in time", err)
	}
	return err
}

// withStaging runs fn with the staging netns (created on first use), under
// its lock. Creating a namespace costs more than moving a link; one that
// lives across attachments makes the rename step nearly free, and being
// pinned, it keeps a link that a crash left inside it for DEL to find.
func (p *Plugin) withStaging(store *state.Store, fn func(*netdev.Namespace) error) error {
	lock, err := store.LockStaging(p.lockTimeout())
	if err != nil {
		return err
	}
	defer lock.Unlock()
	path := store.StagingPath()
	temp, err := netdev.OpenNamespace(path)
	if err != nil {
		netdev.RemovePinnedNetns(path) // a stale mount point without a namespace
		if err := netdev.NewPinnedNetns(path); err != nil {
			return fmt.Errorf("staging netns: %w", err)
		}
		if temp, err = netdev.OpenNamespace(path); err != nil {
			return fmt.Errorf("staging netns: %w", err)
		}
	}
	defer temp.Close()
	return fn(temp)
}

// ipamDel runs the IPAM plugin's DEL for a record, with the record's own
// container, netns and ifname: GC calls it with none of them in its env.
func ipamDel(plugin string, rec *state.Record) error {
	paths := rec.CNIPath
	if env := os.Getenv("CNI_PATH"); env != "" {
		paths = env
	}
	pluginPath, err := invoke.FindInPath(plugin, strings.Split(paths, string(os.PathListSeparator)))
	if err != nil {
		return err
	}
	a := &invoke.Args{Command: "DEL", ContainerID: rec.ContainerID, NetNS: rec.Netns, IfName: rec.IfName, Path: paths}
	ctx, cancel := ipamContext()
	defer cancel()
	return ipamErr(ctx, plugin, invoke.ExecPluginWithoutResult(ctx, pluginPath, rec.Config, a, nil))
}

func compareVF(want netdev.VFSettings, got state.VFState) error {
	if len(want.MAC) > 0 && !strings.EqualFold(want.MAC.String(), got.MAC) {
		return fmt.Errorf("MAC %s, want %s", got.MAC, want.MAC)
	}
	if want.VLAN != nil && *want.VLAN != got.VLAN {
		return fmt.Errorf("VLAN %d, want %d", got.VLAN, *want.VLAN)
	}
	if want.QoS != nil && *want.QoS != got.QoS {
		return fmt.Errorf("QoS %d, want %d", got.QoS, *want.QoS)
	}
	if want.SpoofChk != nil && *want.SpoofChk != got.SpoofChk {
		return fmt.Errorf("spoofchk %v, want %v", got.SpoofChk, *want.SpoofChk)
	}
	if want.Trust != nil && *want.Trust != got.Trust {
		return fmt.Errorf("trust %v, want %v", got.Trust, *want.Trust)
	}
	if want.LinkState != nil && *want.LinkState != got.LinkState {
		return fmt.Errorf("link state %d, want %d", got.LinkState, *want.LinkState)
	}
	if want.MaxTxRate != nil && uint32(*want.MaxTxRate) != got.MaxTxRate {
		return fmt.Errorf("max_tx_rate %d, want %d", got.MaxTxRate, *want.MaxTxRate)
	}
	if want.MinTxRate != nil && uint32(*want.MinTxRate) != got.MinTxRate {
		return fmt.Errorf("min_tx_rate %d, want %d", got.MinTxRate, *want.MinTxRate)
	}
	return nil
}

// Status reports whether ADD could work: sysfs readable, state writable, IPAM ready.
func (p *Plugin) Status(args *skel.CmdArgs) error {
	conf, err := config.Parse(args.StdinData)
	if err != nil {
		return err
	}
	sys, err := sysfs.New(conf.Root())
	if err != nil {
		return typed(types.ErrPluginNotAvailable, "sysfs root "+conf.Root()+" is not readable", err)
	}
	defer sys.Close()
	if _, err := sys.ReadNames("bus/pci/devices"); err != nil {
		return typed(types.ErrPluginNotAvailable, "sysfs root "+conf.Root()+" has no PCI devices", err)
	}
	store, err := state.Open(conf.State())
	if err == nil {
		err = store.Writable()
	}
	if err != nil {
		return typed(types.ErrPluginNotAvailable, "state directory "+conf.State()+" is not writable", err)
	}
	if conf.IPAM.Type != "" {
		// Without its IPAM plugin no ADD can be served: 50, not 51.
		if _, err := invoke.FindInPath(conf.IPAM.Type, filepath.SplitList(os.Getenv("CNI_PATH"))); err != nil {
			return typed(types.ErrPluginNotAvailable, "IPAM plugin "+conf.IPAM.Type+" is not in CNI_PATH", err)
		}
		if _, err := delegate(args, "STATUS", conf.IPAM.Type); err != nil {
			if te, ok := config.IsTypeError(err); ok {
				return te
			}
			return typed(types.ErrLimitedConnectivity, "IPAM "+conf.IPAM.Type+" is not ready", err)
		}
	}
	return nil
}

// GC releases every attachment of this network whose record is not in
// cni.dev/valid-attachments, past failures, then lets IPAM collect too.
func (p *Plugin) GC(args *skel.CmdArgs) error {
	conf, err := config.Parse(args.StdinData)
	if err != nil {
		return err
	}
	log, done := p.logger(conf, nil, "GC")
	defer done()
	valid := map[string]bool{}
	for _, a := range conf.ValidAttachments {
		valid[a.ContainerID+"\x00"+a.IfName] = true
	}
	store, err := state.Open(conf.State())
	if err != nil {
		return typed(types.ErrIOFailure, "state directory", err)
	}
	host, err := netdev.OpenNamespace("")
	if err != nil {
		return typed(types.ErrInternal, "open the host netns", err)
	}
	defer host.Close()
	recs, lerrs := store.List()
	errs := lerrs
	for _, rec := range recs {
		if rec.Network != conf.Name || valid[rec.ContainerID+"\x00"+rec.IfName] {
			continue
		}
		lock, err := store.LockRecord(rec, p.lockTimeout())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rl := log.With("containerID", rec.ContainerID, "ifname", rec.IfName, "netns", rec.Netns)
		// The list was read without the lock: a DEL and another ADD may
		// have passed since. Only the record as it is now, under the lock,
		// may be undone.
		cur, err := store.Load(rec.ContainerID, rec.IfName)
		if err != nil || !cur.Created.Equal(rec.Created) || cur.DeviceID != rec.DeviceID {
			rl.Info("GC skips a record that changed or vanished", "device", rec.BDF)
			lock.Unlock()
			continue
		}
		rec = cur
		if err := p.teardown(rl, store, host, rec); err != nil {
			errs = append(errs, fmt.Errorf("%s/%s: %w", rec.ContainerID, rec.IfName, err))
			rl.Error("GC could not release", "err", err)
		} else {
			rl.Info("GC released", "device", rec.BDF)
		}
		lock.Unlock()
	}
	if conf.IPAM.Type != "" {
		ctx, cancel := ipamContext()
		err := ipamErr(ctx, conf.IPAM.Type, invoke.DelegateGC(ctx, conf.IPAM.Type, args.StdinData, nil))
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("IPAM GC: %w", err))
		}
	}
	if len(errs) > 0 {
		return typed(types.ErrTryAgainLater, "GC left some attachments", errors.Join(errs...))
	}
	return nil
}
