package netdev

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"

	"github.com/railnet/railnet/pkg/state"
)

// VF link states (IFLA_VF_LINK_STATE_*).
const (
	VFLinkAuto    uint32 = 0
	VFLinkEnable  uint32 = 1
	VFLinkDisable uint32 = 2
)

// VLAN protocols (ETH_P_8021Q, ETH_P_8021AD).
const (
	VLANProto8021Q  = 0x8100
	VLANProto8021AD = 0x88a8
)

// VFSettings are what ADD may change on a VF; nil fields stay as they are.
type VFSettings struct {
	MAC       net.HardwareAddr
	VLAN      *int
	QoS       *int
	VLANProto *int
	SpoofChk  *bool
	Trust     *bool
	LinkState *uint32
	MinTxRate *int // Mbps
	MaxTxRate *int // Mbps
	NodeGUID  net.HardwareAddr
	PortGUID  net.HardwareAddr
}

// Empty reports whether nothing would change.
func (s VFSettings) Empty() bool {
	return len(s.MAC) == 0 && s.VLAN == nil && s.QoS == nil && s.VLANProto == nil && s.SpoofChk == nil &&
		s.Trust == nil && s.LinkState == nil && s.MinTxRate == nil && s.MaxTxRate == nil && len(s.NodeGUID) == 0 && len(s.PortGUID) == 0
}

// VFConfigurer reads and programs a VF's settings on its PF. The CNI uses
// the netlink implementation; unit tests record calls; the kernel test
// tier runs the netlink one against netdevsim.
type VFConfigurer interface {
	Get(pf string, vf int) (state.VFState, error)
	Set(pf string, vf int, s VFSettings) error
	Restore(pf string, vf int, orig state.VFState) error
}

// NetlinkVF programs VFs through rtnetlink in a namespace (the host's).
type NetlinkVF struct{ NS *Namespace }

func (n NetlinkVF) vfInfo(pf string, vf int) (netlink.Link, *netlink.VfInfo, error) {
	l, err := n.NS.Handle.LinkByName(pf)
	if err != nil {
		return nil, nil, fmt.Errorf("PF %s: %w", pf, err)
	}
	for i := range l.Attrs().Vfs {
		if l.Attrs().Vfs[i].ID == vf {
			return l, &l.Attrs().Vfs[i], nil
		}
	}
	return l, nil, fmt.Errorf("PF %s reports no VF %d", pf, vf)
}

// Get reads the VF's current settings.
func (n NetlinkVF) Get(pf string, vf int) (state.VFState, error) {
	_, v, err := n.vfInfo(pf, vf)
	if err != nil {
		return state.VFState{}, err
	}
	// A driver that never had a VLAN set may report protocol 0; setting
	// any VLAN (0 included) through IFLA_VF_VLAN makes it 802.1Q. Both
	// mean the same, so 0 reads as 802.1Q and a restore compares equal.
	proto := v.VlanProto
	if proto == 0 {
		proto = VLANProto8021Q
	}
	return state.VFState{MAC: v.Mac.String(), VLAN: v.Vlan, QoS: v.Qos, VLANProto: proto, SpoofChk: v.Spoofchk,
		Trust: v.Trust != 0, LinkState: v.LinkState, MinTxRate: v.MinTxRate, MaxTxRate: v.MaxTxRate}, nil
}

// Set programs the given settings.
func (n NetlinkVF) Set(pf string, vf int, s VFSettings) error {
	l, err := n.NS.Handle.LinkByName(pf)
	if err != nil {
		return fmt.Errorf("PF %s: %w", pf, err)
	}
	h := n.NS.Handle
	if len(s.MAC) > 0 {
		if err := h.LinkSetVfHardwareAddr(l, vf, s.MAC); err != nil {
			return fmt.Errorf("set VF %d MAC on %s: %w", vf, pf, err)
		}
	}
	if s.VLAN != nil || s.QoS != nil || s.VLANProto != nil {
		vlan, qos, proto := 0, 0, VLANProto8021Q
		if s.VLAN != nil {
			vlan = *s.VLAN
		}
		if s.QoS != nil {
			qos = *s.QoS
		}
		if s.VLANProto != nil {
			proto = *s.VLANProto
		}
		if proto == VLANProto8021Q {
			err = h.LinkSetVfVlanQos(l, vf, vlan, qos)
		} else {
			err = h.LinkSetVfVlanQosProto(l, vf, vlan, qos, proto)
		}
		if err != nil {
			return fmt.Errorf("set VF %d VLAN %d QoS %d proto %#x on %s: %w", vf, vlan, qos, proto, pf, err)
		}
	}
	if s.SpoofChk != nil {
		if err := h.LinkSetVfSpoofchk(l, vf, *s.SpoofChk); err != nil {
			return fmt.Errorf("set VF %d spoofchk on %s: %w", vf, pf, err)
		}
	}
	if s.Trust != nil {
		if err := h.LinkSetVfTrust(l, vf, *s.Trust); err != nil {
			return fmt.Errorf("set VF %d trust on %s: %w", vf, pf, err)
		}
	}
	if s.LinkState != nil {
		if err := h.LinkSetVfState(l, vf, *s.LinkState); err != nil {
			return fmt.Errorf("set VF %d link state on %s: %w", vf, pf, err)
		}
	}
	if s.MinTxRate != nil || s.MaxTxRate != nil {
		cur, err := n.Get(pf, vf)
		if err != nil {
			return err
		}
		minR, maxR := int(cur.MinTxRate), int(cur.MaxTxRate)
		if s.MinTxRate != nil {
			minR = *s.MinTxRate
		}
		if s.MaxTxRate != nil {
			maxR = *s.MaxTxRate
		}
		if err := h.LinkSetVfRate(l, vf, minR, maxR); err != nil {
			return fmt.Errorf("set VF %d rate %d-%d Mbps on %s: %w", vf, minR, maxR, pf, err)
		}
	}
	if len(s.NodeGUID) > 0 {
		if err := h.LinkSetVfGUID(l, vf, s.NodeGUID, nl.IFLA_VF_IB_NODE_GUID); err != nil {
			return fmt.Errorf("set VF %d node GUID on %s: %w", vf, pf, err)
		}
	}
	if len(s.PortGUID) > 0 {
		if err := h.LinkSetVfGUID(l, vf, s.PortGUID, nl.IFLA_VF_IB_PORT_GUID); err != nil {
			return fmt.Errorf("set VF %d port GUID on %s: %w", vf, pf, err)
		}
	}
	return nil
}

// Restore puts back the settings read before ADD. It keeps going past a
// failed setting so one unsupported knob does not leave the rest changed.
func (n NetlinkVF) Restore(pf string, vf int, o state.VFState) error {
	var errs []error
	try := func(s VFSettings) {
		if err := n.Set(pf, vf, s); err != nil {
			errs = append(errs, err)
		}
	}
	if mac, err := net.ParseMAC(o.MAC); err == nil {
		try(VFSettings{MAC: mac})
	}
	vlan, qos, proto := o.VLAN, o.QoS, o.VLANProto
	if proto == 0 {
		proto = VLANProto8021Q
	}
	try(VFSettings{VLAN: &vlan, QoS: &qos, VLANProto: &proto})
	sc, tr, ls := o.SpoofChk, o.Trust, o.LinkState
	try(VFSettings{SpoofChk: &sc})
	try(VFSettings{Trust: &tr})
	try(VFSettings{LinkState: &ls})
	minR, maxR := int(o.MinTxRate), int(o.MaxTxRate)
	try(VFSettings{MinTxRate: &minR, MaxTxRate: &maxR})
	return errors.Join(errs...)
}
