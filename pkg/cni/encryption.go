package cni

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/railnet/railnet/pkg/audit"
	"github.com/railnet/railnet/pkg/cni/config"
	"github.com/railnet/railnet/pkg/encrypt"
	"github.com/railnet/railnet/pkg/keys"
	"github.com/railnet/railnet/pkg/state"
)

// Step "encryption": ESP between the pod and every address of its subnet,
// from the pod namespace's key file (docs/encryption.md). Its record says
// what DEL removes; key material is never in it.

// RDMANotCovered is what the result, the log and railnetctl say of an
// encrypted attachment with an RDMA device.
const RDMANotCovered = "RDMA (RoCE/InfiniBand verbs) traffic bypasses the kernel and is NOT encrypted by software IPsec; only NIC crypto offload that covers RoCE would"

// encryptionInfo is the result's "railnet" member for an encrypted attachment.
type encryptionInfo struct {
	Mode    string  `json:"mode"`
	Keys    string  `json:"keys"`
	KeyID   uint8   `json:"keyID"`
	Peers   int     `json:"peers"`
	Offload string  `json:"offload"`
	RDMA    *string `json:"rdma,omitempty"`
}

func (a *attachment) podNamespace() string {
	ns, _, _ := podIdentity(a.args.Args)
	if ns == "" {
		return "default"
	}
	return ns
}

func (a *attachment) keysDir() string {
	if a.conf.KeysDir != "" {
		return a.conf.KeysDir
	}
	return keys.DefaultDir
}

// auditEvent fills the attachment's part of an audit event and writes it;
// a failure to write is logged, never fatal (the log may be full).
func (a *attachment) audit(e audit.Event) {
	rec := a.rec
	e.PodNamespace, e.PodName, e.PodUID, e.ContainerID = rec.PodNamespace, rec.PodName, rec.PodUID, rec.ContainerID
	e.Network, e.Device = rec.Network, rec.DeviceID
	file := ""
	if a.conf != nil {
		file = a.conf.AuditFile
	}
	if err := audit.Write(file, e); err != nil {
		a.log.Warn("audit", "err", err)
	}
}

func (a *attachment) refuse(e *config.Encryption, err error) error {
	a.audit(audit.Event{Event: audit.Refusal, Mode: e.Mode, Keys: e.Keys, Outcome: err.Error()})
	return err
}

func (a *attachment) encrypt() error {
	e := a.conf.Encryption
	if e == nil {
		return nil
	}
	var local netip.Addr
	var subnet netip.Prefix
	for _, ip := range a.result.IPs {
		if v4 := ip.Address.IP.To4(); v4 != nil {
			local = netip.AddrFrom4([4]byte(v4))
			ones, _ := ip.Address.Mask.Size()
			subnet = netip.PrefixFrom(local, ones).Masked()
			break
		}
	}
	if !local.IsValid() {
		return a.refuse(e, config.Error("encryption", "IPAM gave %s no IPv4 address: encryption covers IPv4 subnets in this release", a.args.IfName))
	}
	peers := len(encrypt.Peers(subnet, local))
	if encrypt.Size(subnet) > uint64(e.Peers())+2 || peers > e.Peers() {
		return a.refuse(e, config.Error("encryption.maxPeers", "subnet %s has %d peers, above %d: every peer has its own SAs; use a smaller subnet or raise maxPeers", subnet, peers, e.Peers()))
	}
	set, err := keys.Load(a.keysDir(), a.podNamespace(), e.Keys)
	if err != nil {
		return a.refuse(e, config.Error("encryption.keys", "%v", err))
	}
	l, err := a.pod.Handle.LinkByName(a.args.IfName)
	if err != nil {
		return typed(types.ErrInternal, "find "+a.args.IfName+" in the pod", err)
	}
	a.rec.Encryption = &state.Encryption{Mode: e.Mode, Keys: e.Keys, Local: local.String(), Subnet: subnet.String(),
		IfIndex: l.Attrs().Index, Reqid: uint32(l.Attrs().Index), Offload: e.Offload, KeysDir: a.keysDir()}
	if e.Mode == "macsec" {
		return a.encryptMACsec(e, set, local, subnet, peers)
	}
	if err := a.save(state.PhaseEncrypt); err != nil {
		return err
	}
	cfg := ipsecOf(a.rec.Encryption)
	rep, err := cfg.Sync(a.pod.NS, set, time.Now())
	if err != nil {
		switch {
		case errors.Is(err, encrypt.ErrOffload):
			return a.refuse(e, types.NewError(types.ErrInternal, fmt.Sprintf("encryption.offload required: %s cannot offload ESP", a.args.IfName), err.Error()))
		case encrypt.IsNotSupported(err):
			return a.refuse(e, types.NewError(types.ErrInternal, "the node's kernel cannot do ESP with AES-GCM (modules esp4, xfrm_user, gcm)", err.Error()))
		}
		return typed(types.ErrInternal, "install IPsec", err)
	}
	if rep.OffloadRefused != nil {
		a.log.Warn("ESP offload refused by the device; encrypting in software", "ifname", a.args.IfName, "err", rep.OffloadRefused)
	}
	info := &encryptionInfo{Mode: e.Mode, Keys: e.Keys, KeyID: rep.Sender, Peers: peers, Offload: "software"}
	if rep.Offloaded {
		info.Offload = "device"
	}
	a.installed(e, info, rep)
	return nil
}

// installed says what was installed: the result, RDMA honesty, audit.
func (a *attachment) installed(e *config.Encryption, info *encryptionInfo, rep encrypt.Report) {
	if a.dev.RDMA != "" && a.conf.RDMA != "off" {
		msg := fmt.Sprintf("%s: %s", a.dev.RDMA, RDMANotCovered)
		info.RDMA = &msg
		a.log.Warn("encrypted attachment with an RDMA device: RDMA traffic is not encrypted", "rdma", a.dev.RDMA)
	}
	a.extra = info
	a.audit(audit.Event{Event: audit.KeyInstall, Mode: e.Mode, Keys: e.Keys, KeyID: int(rep.Sender), KeyIDs: rep.Receiving, Outcome: "ok"})
	a.audit(audit.Event{Event: audit.Attach, Mode: e.Mode, Keys: e.Keys, KeyID: int(rep.Sender), KeyIDs: rep.Receiving, Outcome: "ok"})
}

// macsecNames are the lower's name and the macsec link's alias, from the
// attachment's identity.
func macsecNames(containerID, ifName string) (lower, alias string) {
	sum := sha256.Sum256([]byte("macsec\x00" + containerID + "\x00" + ifName))
	h := hex.EncodeToString(sum[:])
	return "rnl" + h[:12], "railnet-macsec:" + h[:32]
}

func macsecOf(e *state.Encryption, ifName string) encrypt.MACsec {
	return encrypt.MACsecFromRecord(e, ifName)
}

// encryptMACsec puts a macsec link named CNI_IFNAME on the pod's device
// (renamed beneath it): the addresses go on the macsec link only.
func (a *attachment) encryptMACsec(e *config.Encryption, set *keys.Set, local netip.Addr, subnet netip.Prefix, peers int) error {
	if err := encrypt.CheckMACsecKeys(set); err != nil {
		return a.refuse(e, config.Error("encryption.keys", "%v", err))
	}
	if e.Offload == encrypt.OffloadRequired {
		return a.refuse(e, config.Error("encryption.offload", "required: railnet does not offload MACsec in this release (preferred or off)"))
	}
	lower, alias := macsecNames(a.args.ContainerID, a.args.IfName)
	a.rec.Encryption.MACsec = &state.MACsec{Lower: lower, Alias: alias}
	if err := a.save(state.PhaseEncrypt); err != nil {
		return err
	}
	m := macsecOf(a.rec.Encryption, a.args.IfName)
	now := time.Now()
	ifindex, err := m.Create(a.pod, set, now)
	if err != nil {
		return typed(types.ErrInternal, "create the macsec link", err)
	}
	st, rep, err := m.Sync(a.pod, ifindex, set, now, nil)
	a.rec.Encryption.MACsec = &st
	if err != nil {
		return typed(types.ErrInternal, "install MACsec", err)
	}
	if err := a.save(""); err != nil {
		return err
	}
	if e.Offload == encrypt.OffloadPreferred {
		a.log.Warn("MACsec offload is not asked of the device in this release; encrypting in software", "ifname", a.args.IfName)
	}
	if l, err := a.pod.Handle.LinkByName(a.args.IfName); err == nil && len(a.result.Interfaces) > 0 {
		a.result.Interfaces[0].Mac, a.result.Interfaces[0].Mtu = l.Attrs().HardwareAddr.String(), l.Attrs().MTU
	}
	a.installed(e, &encryptionInfo{Mode: e.Mode, Keys: e.Keys, KeyID: rep.Sender, Peers: peers, Offload: "software"}, rep)
	return nil
}

func ipsecOf(e *state.Encryption) encrypt.IPsec { return encrypt.FromRecord(e) }

// decrypt removes the SAs and policies; with the pod's netns gone they
// went with it.
func (a *attachment) decrypt() error {
	e := a.rec.Encryption
	if e == nil {
		return nil
	}
	outcome := "ok"
	var err error
	if a.pod != nil && e.MACsec != nil {
		if err = macsecOf(e, a.rec.IfName).Remove(a.pod); err != nil {
			outcome = err.Error()
			err = fmt.Errorf("remove MACsec: %w", err)
		}
	} else if a.pod != nil {
		if err = ipsecOf(e).Remove(a.pod.NS); err != nil {
			outcome = err.Error()
			err = fmt.Errorf("remove IPsec: %w", err)
		}
	}
	a.audit(audit.Event{Event: audit.Detach, Mode: e.Mode, Keys: e.Keys, Outcome: outcome})
	return err
}

func (a *attachment) checkEncryption(*current.Result) error {
	e := a.rec.Encryption
	if e == nil {
		if a.conf.Encryption != nil {
			return types.NewError(types.ErrInternal, "the network asks for encryption and the attachment has none", "")
		}
		return nil
	}
	if e.MACsec != nil {
		if err := macsecOf(e, a.args.IfName).Check(a.pod); err != nil {
			return typed(types.ErrInternal, "MACsec of "+a.args.IfName, err)
		}
		return nil
	}
	set, err := keys.Load(e.KeysDir, a.podNamespace(), e.Keys)
	if err != nil {
		return typed(types.ErrInternal, "encryption keys", err)
	}
	if err := ipsecOf(e).Check(a.pod.NS, set, time.Now()); err != nil {
		return typed(types.ErrInternal, "IPsec of "+a.args.IfName, err)
	}
	return nil
}
