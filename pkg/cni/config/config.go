// Package config parses and validates the railnet CNI's network
// configuration. A NAD written for sriov-cni works unchanged with
// "type": "railnet". Every error names the field and maps to CNI error
// code 7 (invalid network config).
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/railnet/railnet/pkg/keys"
	"github.com/railnet/railnet/pkg/sysfs"
)

// DefaultStateDir holds the attachment records.
const DefaultStateDir = "/var/lib/cni/railnet"

// DefaultNodeFile holds the node's settings for the CNI; the DaemonSet
// writes it. $RAILNET_CNI_CONFIG (the runtime's environment, never the
// NAD's) names another file.
const DefaultNodeFile = "/etc/railnet/cni.json"

// DefaultDevInfoDir is where the device plugin writes a device-info file
// for every device it advertises.
const DefaultDevInfoDir = "/var/run/k8s.cni.cncf.io/devinfo/dp"

// DefaultDeviceInfoRoot confines runtimeConfig.CNIDeviceInfoFile: Multus
// asks for files below it.
const DefaultDeviceInfoRoot = "/var/run/k8s.cni.cncf.io/devinfo"

// Environment variables of node settings; they override the node file.
const (
	EnvNodeFile  = "RAILNET_CNI_CONFIG"
	EnvSysfsRoot = "RAILNET_SYSFS_ROOT"
	EnvDevfsRoot = "RAILNET_DEVFS_ROOT"
	EnvStateDir  = "RAILNET_STATE_DIR"
	EnvLogFile   = "RAILNET_LOG_FILE"
	EnvKeysDir   = "RAILNET_KEYS_DIR"
	EnvAuditFile = "RAILNET_AUDIT_FILE"
)

// Node holds the node's settings. Host paths are the node's to choose: a
// netconf comes from a NAD, which a namespace admin writes, and is
// untrusted input to a root process.
type Node struct {
	HostPaths
	DevInfoDir string `json:"devInfoDir,omitempty"` // the device plugin's device-info files: what it advertises
	// DeviceInfoRoot confines runtimeConfig.CNIDeviceInfoFile (default
	// DefaultDeviceInfoRoot).
	DeviceInfoRoot string `json:"deviceInfoRoot,omitempty"`

	// AllowNetconfPaths lets a netconf set the host paths above
	// (single-tenant clusters, tests).
	AllowNetconfPaths bool `json:"allowNetconfPaths,omitempty"`
	// AllowDevices may be attached although no device plugin advertises
	// them; AllowUnadvertisedDevices: any device (tests, single-tenant).
	AllowDevices             []string `json:"allowDevices,omitempty"`
	AllowUnadvertisedDevices bool     `json:"allowUnadvertisedDevices,omitempty"`
}

// HostPaths are the paths on the host railnet reads and writes: node
// settings, which a netconf may only set where the node allows it.
type HostPaths struct {
	SysfsRoot string `json:"sysfsRoot,omitempty"`
	DevfsRoot string `json:"devfsRoot,omitempty"`
	StateDir  string `json:"stateDir,omitempty"`
	LogFile   string `json:"logFile,omitempty"`
	KeysDir   string `json:"keysDir,omitempty"`
	AuditFile string `json:"auditFile,omitempty"`
}

// LoadNode reads the node settings file (a missing file is no settings),
// then the environment.
func LoadNode() (Node, error) {
	path := DefaultNodeFile
	if p := os.Getenv(EnvNodeFile); p != "" {
		path = p
	}
	var n Node
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return n, types.NewError(types.ErrIOFailure, "node settings "+path+" are not readable", err.Error())
	default:
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&n); err != nil {
			return n, types.NewError(types.ErrIOFailure, "node settings "+path+" are not valid", err.Error())
		}
	}
	for _, e := range []struct {
		env string
		v   *string
	}{{EnvSysfsRoot, &n.SysfsRoot}, {EnvDevfsRoot, &n.DevfsRoot}, {EnvStateDir, &n.StateDir}, {EnvLogFile, &n.LogFile},
		{EnvKeysDir, &n.KeysDir}, {EnvAuditFile, &n.AuditFile}} {
		if v := os.Getenv(e.env); v != "" {
			*e.v = v
		}
	}
	return n, nil
}

// applyNode refuses host paths in the netconf (unless the node allows
// them) and fills the effective ones.
func (c *NetConf) applyNode(n Node) error {
	for _, f := range []struct {
		key       string
		nad, node *string
	}{{"sysfsRoot", &c.SysfsRoot, &n.SysfsRoot}, {"devfsRoot", &c.DevfsRoot, &n.DevfsRoot}, {"stateDir", &c.StateDir, &n.StateDir},
		{"logFile", &c.LogFile, &n.LogFile}, {"keysDir", &c.KeysDir, &n.KeysDir}, {"auditFile", &c.AuditFile, &n.AuditFile}} {
		if *f.nad == "" {
			*f.nad = *f.node
			continue
		}
		if !n.AllowNetconfPaths {
			return Error(f.key, "is a host path, a node setting (%s or the RAILNET_* environment); a network configuration may not set it", DefaultNodeFile)
		}
		if !filepath.IsAbs(*f.nad) {
			return Error(f.key, "%q is not an absolute path", *f.nad)
		}
	}
	c.node = n
	return nil
}

// DeviceInfoFile is runtimeConfig.CNIDeviceInfoFile ("" when not asked
// for) once it is known to lie below the node's device-info root: a clean
// absolute path whose existing components below the root are directories,
// not symlinks. Otherwise ADD would replace, and DEL delete, any file a NAD
// or a pod annotation names.
func (c *NetConf) DeviceInfoFile() (string, error) {
	p := c.RuntimeConfig.CNIDeviceInfoFile
	if p == "" {
		return "", nil
	}
	root := c.node.DeviceInfoRoot
	if root == "" {
		root = DefaultDeviceInfoRoot
	}
	root = filepath.Clean(root)
	clean := filepath.Clean(p)
	rel, err := filepath.Rel(root, clean)
	if !filepath.IsAbs(p) || err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", Error("runtimeConfig.CNIDeviceInfoFile", "%q is not below %s", p, root)
	}
	cur := root
	parts := strings.Split(rel, "/")
	for i, part := range parts {
		cur = filepath.Join(cur, part)
		st, err := os.Lstat(cur)
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if err != nil {
			return "", Error("runtimeConfig.CNIDeviceInfoFile", "%s: %v", cur, err)
		}
		last := i == len(parts)-1
		if st.Mode()&os.ModeSymlink != 0 || (!last && !st.IsDir()) || (last && !st.Mode().IsRegular()) {
			return "", Error("runtimeConfig.CNIDeviceInfoFile", "%s is not a plain file below %s (a symlink?)", cur, root)
		}
	}
	return clean, nil
}

// Recorded decodes a configuration an ADD accepted (an attachment record,
// in the root-only state directory) with today's node settings, without
// validating it again: DEL and GC must undo what was done.
func Recorded(b []byte) (*NetConf, error) {
	var c NetConf
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	n, err := LoadNode()
	if err != nil {
		return nil, err
	}
	n.AllowNetconfPaths = true // accepted when the record was written
	if err := c.applyNode(n); err != nil {
		return nil, err
	}
	return &c, nil
}

// Node is the node's settings this configuration was parsed with.
func (c *NetConf) Node() Node { return c.node }

// NetConf is the plugin's configuration.
type NetConf struct {
	types.NetConf

	DeviceID  string  `json:"deviceID,omitempty"`
	PCIBusID  string  `json:"pciBusID,omitempty"`
	MAC       string  `json:"mac,omitempty"`
	VLAN      *int    `json:"vlan,omitempty"`
	VLANQoS   *int    `json:"vlanQoS,omitempty"`
	VLANProto *string `json:"vlanProto,omitempty"`
	SpoofChk  *string `json:"spoofchk,omitempty"` // "on" | "off"
	Trust     *string `json:"trust,omitempty"`    // "on" | "off"
	LinkState *string `json:"link_state,omitempty"`
	MinTxRate *int    `json:"min_tx_rate,omitempty"`
	MaxTxRate *int    `json:"max_tx_rate,omitempty"`
	MTU       *int    `json:"mtu,omitempty"`
	RDMA      string  `json:"rdma,omitempty"` // "auto" (default) | "off"

	// Claim: with no deviceID from Multus, the device is the one the DRA
	// driver prepared for this pod (K8S_POD_UID) under this claim or
	// request name (the pod's name for the claim, the claim's name, or a
	// request's name).
	Claim string `json:"claim,omitempty"`

	// Attach: "move" the device itself into the pod, or give the pod a
	// child link of it ("macvlan", "ipvlan", "ipoib"); the default is move
	// for a device, and for a shared slot (BDF#k) macvlan on Ethernet,
	// ipoib on InfiniBand.
	Attach      string `json:"attach,omitempty"`
	MacvlanMode string `json:"macvlanMode,omitempty"` // bridge (default) | private | vepa | passthru
	IPVlanMode  string `json:"ipvlanMode,omitempty"`  // l2 (default) | l3 | l3s
	PKey        *PKey  `json:"pkey,omitempty"`        // IPoIB partition: 0x0001-0x7fff

	// Encryption of the attachment's traffic (docs/encryption.md).
	Encryption *Encryption `json:"encryption,omitempty"`
	LogLevel   string      `json:"logLevel,omitempty"`

	// Host paths: node settings, refused here unless the node allows them.
	HostPaths

	RuntimeConfig RuntimeConfig `json:"runtimeConfig,omitempty"`
	Args          *Args         `json:"args,omitempty"`

	// Unexported results of Validate.
	hwMAC net.HardwareAddr
	node  Node
}

// RuntimeConfig holds the capabilities Multus and runtimes pass.
type RuntimeConfig struct {
	MAC               string   `json:"mac,omitempty"`
	IPs               []string `json:"ips,omitempty"`
	InfinibandGUID    string   `json:"infinibandGUID,omitempty"`
	DeviceID          string   `json:"deviceID,omitempty"`
	CNIDeviceInfoFile string   `json:"CNIDeviceInfoFile,omitempty"`
	Bandwidth         any      `json:"bandwidth,omitempty"`
}

// Encryption is the "encryption" member.
type Encryption struct {
	Mode     string `json:"mode"`              // ipsec | macsec
	Keys     string `json:"keys"`              // the key file's name in the pod namespace's keys
	Offload  string `json:"offload,omitempty"` // off (default) | preferred | required
	MaxPeers int    `json:"maxPeers,omitempty"`
}

// DefaultMaxPeers bounds the subnet of an encrypted attachment: every
// address in it is a peer with its own SAs.
const DefaultMaxPeers = 1024

// Peers is maxPeers or its default.
func (e *Encryption) Peers() int {
	if e.MaxPeers == 0 {
		return DefaultMaxPeers
	}
	return e.MaxPeers
}

// Attach modes.
const (
	AttachMove    = "move"
	AttachMacvlan = "macvlan"
	AttachIPVlan  = "ipvlan"
	AttachIPoIB   = "ipoib"
)

// PKey is an InfiniBand partition key, written as a number or a string
// ("0x7fff"); the full-membership bit (0x8000) may be given or not.
type PKey uint16

// UnmarshalJSON reads 32767, "32767", "0x7fff" or "0xffff".
func (k *PKey) UnmarshalJSON(b []byte) error {
	var v uint64
	var err error
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err = strconv.ParseUint(s, 0, 32)
	} else {
		v, err = strconv.ParseUint(string(b), 10, 32)
	}
	if err != nil || v&0x7fff == 0 || v > 0xffff {
		return fmt.Errorf("pkey %s is not a partition key 0x0001-0x7fff", b)
	}
	*k = PKey(v & 0x7fff)
	return nil
}

// Full is the key with the full-membership bit set, as a child link needs it.
func (k PKey) Full() uint16 { return uint16(k) | 0x8000 }

// Args is the "args" member.
type Args struct {
	CNI map[string]any `json:"cni,omitempty"`
}

// Error is a config error: CNI code 7, naming the field.
func Error(field, format string, a ...any) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig, field+": "+fmt.Sprintf(format, a...), "")
}

// Parse decodes and validates stdin data.
func Parse(data []byte) (*NetConf, error) {
	var c NetConf
	if len(strings.TrimSpace(string(data))) == 0 {
		return nil, types.NewError(types.ErrDecodingFailure, "empty network configuration on stdin", "")
	}
	if err := json.Unmarshal(data, &c); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) && ute.Field != "" {
			return nil, Error(ute.Field, "%s is not a %s", ute.Value, ute.Type)
		}
		if strings.Contains(err.Error(), "pkey") {
			return nil, Error("pkey", "%v", strings.TrimPrefix(err.Error(), "json: "))
		}
		return nil, types.NewError(types.ErrDecodingFailure, "network configuration is not valid JSON", err.Error())
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	node, err := LoadNode()
	if err != nil {
		return nil, err
	}
	if err := c.applyNode(node); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks every field; the first error is returned.
func (c *NetConf) Validate() error {
	if c.Type == "" {
		return Error("type", "missing")
	}
	if c.Name == "" {
		return Error("name", "missing")
	}
	for _, d := range []struct{ field, v string }{{"deviceID", c.DeviceID}, {"runtimeConfig.deviceID", c.RuntimeConfig.DeviceID}, {"pciBusID", c.PCIBusID}} {
		if d.v != "" && !validDeviceID(d.v) {
			return Error(d.field, "%q is neither a PCI address (dddd:bb:dd.f) nor an auxiliary device name", d.v)
		}
	}
	if c.Claim != "" && (len(c.Claim) > 253 || !reClaimName.MatchString(c.Claim)) {
		return Error("claim", "%q is not a claim or request name (a DNS subdomain, or request/subrequest)", c.Claim)
	}
	for _, m := range []struct{ field, v string }{{"mac", c.MAC}, {"runtimeConfig.mac", c.RuntimeConfig.MAC}} {
		if m.v == "" {
			continue
		}
		hw, err := net.ParseMAC(m.v)
		if err != nil || len(hw) != 6 {
			return Error(m.field, "%q is not a 6-byte MAC address", m.v)
		}
		if hw[0]&1 == 1 {
			return Error(m.field, "%q is a multicast address", m.v)
		}
		c.hwMAC = hw
	}
	if c.RuntimeConfig.MAC != "" {
		c.hwMAC, _ = net.ParseMAC(c.RuntimeConfig.MAC) // runtimeConfig wins, as in sriov-cni
	}
	if c.VLAN != nil && (*c.VLAN < 0 || *c.VLAN > 4094) {
		return Error("vlan", "%d is outside 0-4094", *c.VLAN)
	}
	if c.VLANQoS != nil {
		if *c.VLANQoS < 0 || *c.VLANQoS > 7 {
			return Error("vlanQoS", "%d is outside 0-7", *c.VLANQoS)
		}
		if *c.VLANQoS != 0 && (c.VLAN == nil || *c.VLAN == 0) {
			return Error("vlanQoS", "needs a non-zero vlan")
		}
	}
	if c.VLANProto != nil {
		switch strings.ToLower(*c.VLANProto) {
		case "802.1q", "802.1ad":
		default:
			return Error("vlanProto", "%q: want 802.1q or 802.1ad", *c.VLANProto)
		}
		if strings.ToLower(*c.VLANProto) == "802.1ad" && (c.VLAN == nil || *c.VLAN == 0) {
			return Error("vlanProto", "802.1ad needs a non-zero vlan")
		}
	}
	for _, f := range []struct {
		field string
		v     *string
	}{{"spoofchk", c.SpoofChk}, {"trust", c.Trust}} {
		if f.v != nil && *f.v != "on" && *f.v != "off" {
			return Error(f.field, "%q: want on or off", *f.v)
		}
	}
	if c.LinkState != nil {
		switch *c.LinkState {
		case "auto", "enable", "disable":
		default:
			return Error("link_state", "%q: want auto, enable or disable", *c.LinkState)
		}
	}
	// Netlink carries rates as 32-bit Mbps: a larger value would wrap, and
	// 2^32 wraps to 0, which means "unlimited".
	for _, r := range []struct {
		field string
		v     *int
	}{{"min_tx_rate", c.MinTxRate}, {"max_tx_rate", c.MaxTxRate}} {
		if r.v != nil && (*r.v < 0 || *r.v > math.MaxUint32) {
			return Error(r.field, "%d Mbps is outside 0-%d", *r.v, uint32(math.MaxUint32))
		}
	}
	if c.MinTxRate != nil && c.MaxTxRate != nil && *c.MaxTxRate > 0 && *c.MinTxRate > *c.MaxTxRate {
		return Error("min_tx_rate", "%d Mbps is above max_tx_rate %d", *c.MinTxRate, *c.MaxTxRate)
	}
	if c.MTU != nil && (*c.MTU < 68 || *c.MTU > 65535) {
		return Error("mtu", "%d is outside 68-65535", *c.MTU)
	}
	switch c.RDMA {
	case "", "auto", "off":
	default:
		return Error("rdma", "%q: want auto or off", c.RDMA)
	}
	switch c.Attach {
	case "", AttachMove, AttachMacvlan, AttachIPVlan, AttachIPoIB:
	default:
		return Error("attach", "%q: want move, macvlan, ipvlan or ipoib", c.Attach)
	}
	switch c.MacvlanMode {
	case "", "bridge", "private", "vepa", "passthru":
	default:
		return Error("macvlanMode", "%q: want bridge, private, vepa or passthru", c.MacvlanMode)
	}
	switch c.IPVlanMode {
	case "", "l2", "l3", "l3s":
	default:
		return Error("ipvlanMode", "%q: want l2, l3 or l3s", c.IPVlanMode)
	}
	for _, f := range []struct {
		field, attach string
		set           bool
	}{{"macvlanMode", AttachMacvlan, c.MacvlanMode != ""}, {"ipvlanMode", AttachIPVlan, c.IPVlanMode != ""}, {"pkey", AttachIPoIB, c.PKey != nil}} {
		if f.set && c.Attach != "" && c.Attach != f.attach {
			return Error(f.field, "applies to attach %s, not %s", f.attach, c.Attach)
		}
	}
	if c.Attach == AttachIPVlan || c.Attach == AttachIPoIB {
		if c.Claim != "" && (len(c.Claim) > 253 || !reClaimName.MatchString(c.Claim)) {
			return Error("claim", "%q is not a claim or request name (a DNS subdomain, or request/subrequest)", c.Claim)
		}
		for _, m := range []struct{ field, v string }{{"mac", c.MAC}, {"runtimeConfig.mac", c.RuntimeConfig.MAC}} {
			if m.v != "" {
				return Error(m.field, "an %s child shares its parent's hardware address; it cannot have its own", c.Attach)
			}
		}
	}
	if e := c.Encryption; e != nil {
		switch e.Mode {
		case "ipsec":
		case "macsec":
			if c.Attach == AttachIPVlan || c.Attach == AttachIPoIB {
				return Error("encryption.mode", "macsec needs its own Ethernet link: not on an %s child", c.Attach)
			}
		default:
			return Error("encryption.mode", "%q: want ipsec or macsec", e.Mode)
		}
		if why := keysName(e.Keys); why != "" {
			return Error("encryption.keys", "%q: %s", e.Keys, why)
		}
		switch e.Offload {
		case "", "off", "preferred", "required":
		default:
			return Error("encryption.offload", "%q: want off, preferred or required", e.Offload)
		}
		if e.MaxPeers < 0 || e.MaxPeers > 65536 {
			return Error("encryption.maxPeers", "%d is outside 1-65536", e.MaxPeers)
		}
		if c.IPAM.Type == "" {
			return Error("encryption", "needs ipam: the peers are the addresses of the attachment's subnet")
		}
	}
	if g := c.RuntimeConfig.InfinibandGUID; g != "" {
		hw, err := net.ParseMAC(g)
		if err != nil || len(hw) != 8 {
			return Error("runtimeConfig.infinibandGUID", "%q is not an 8-byte GUID (xx:xx:xx:xx:xx:xx:xx:xx)", g)
		}
	}
	for i, ip := range c.RuntimeConfig.IPs {
		if _, _, err := net.ParseCIDR(ip); err != nil && net.ParseIP(ip) == nil {
			return Error(fmt.Sprintf("runtimeConfig.ips[%d]", i), "%q is not an IP address", ip)
		}
	}
	if c.RuntimeConfig.CNIDeviceInfoFile != "" && !strings.HasPrefix(c.RuntimeConfig.CNIDeviceInfoFile, "/") {
		return Error("runtimeConfig.CNIDeviceInfoFile", "%q is not an absolute path", c.RuntimeConfig.CNIDeviceInfoFile)
	}
	switch strings.ToLower(c.LogLevel) {
	case "", "debug", "info", "warning", "warn", "error", "panic":
	default:
		return Error("logLevel", "%q: want debug, info, warning or error", c.LogLevel)
	}
	return nil
}

// keysName says why a keys name cannot name a key file ("" if it can):
// one path component, a Secret key's characters.
func keysName(s string) string {
	if s == "" {
		return "missing"
	}
	return keys.ValidName(s)
}

func validDeviceID(s string) bool {
	if _, err := sysfs.ParseBDF(s); err == nil {
		return true
	}
	// Auxiliary devices: "mlx5_core.sf.4".
	return strings.Count(s, ".") >= 1 && !strings.ContainsAny(s, "/ \x00") && len(s) < 128
}

var reClaimName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/[a-z0-9]([-a-z0-9]*[a-z0-9])?)?$`)

// Device is the device to attach: runtimeConfig.deviceID, then deviceID,
// then pciBusID (host-device's name for it). Missing is code 7 (the CNI
// then looks in the DRA driver's claims when "claim" is set).
func (c *NetConf) Device() (string, error) {
	for _, v := range []string{c.RuntimeConfig.DeviceID, c.DeviceID, c.PCIBusID} {
		if v != "" {
			if b, err := sysfs.ParseBDF(v); err == nil {
				return b.String(), nil
			}
			return v, nil
		}
	}
	return "", Error("deviceID", "missing: the device plugin's allocation (Multus passes it), deviceID/pciBusID in the config, or \"claim\" for a device a DRA claim holds")
}

// HardwareAddr is the MAC to set, if any (runtimeConfig.mac over mac).
func (c *NetConf) HardwareAddr() net.HardwareAddr { return c.hwMAC }

// Root is the sysfs root: the node's (or, where the node allows it, the
// netconf's), else /sys.
func (c *NetConf) Root() string {
	if c.SysfsRoot != "" {
		return c.SysfsRoot
	}
	return "/sys"
}

// State is the state directory: the node's (or, where allowed, the
// netconf's), else DefaultStateDir.
func (c *NetConf) State() string {
	if c.StateDir != "" {
		return c.StateDir
	}
	return DefaultStateDir
}

// VLANProtoNumber is the ethertype for vlanProto.
func (c *NetConf) VLANProtoNumber() *int {
	if c.VLANProto == nil {
		return nil
	}
	v := 0x8100
	if strings.ToLower(*c.VLANProto) == "802.1ad" {
		v = 0x88a8
	}
	return &v
}

// IsTypeError reports whether err carries a CNI code.
func IsTypeError(err error) (*types.Error, bool) {
	var te *types.Error
	ok := errors.As(err, &te)
	return te, ok
}
