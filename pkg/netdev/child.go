package netdev

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Child is a child link of a host netdev, made for a pod: macvlan, ipvlan
// or IPoIB. Many pods share the parent; the parent itself is never moved,
// renamed or reconfigured.
type Child struct {
	Kind        string // "macvlan" | "ipvlan" | "ipoib"
	ParentIndex int    // the parent's ifindex in the host netns
	Mode        string // macvlan: bridge|private|vepa|passthru; ipvlan: l2|l3|l3s; ipoib: datagram
	PKey        uint16 // ipoib: the partition key, full-membership bit set
	Name        string // the name it is created under
	Alias       string // how DEL finds it again
	MAC         net.HardwareAddr
	MTU         int
}

// ChildLinks creates child links and reads them back. NetlinkChildren is
// the kernel's; tests of kinds the kernel here lacks (IPoIB needs an
// InfiniBand device) record what would be asked instead.
type ChildLinks interface {
	// Add creates c in pod's netns, its parent being in host's: one
	// RTM_NEWLINK, so the child never exists in the host netns.
	Add(host, pod *Namespace, c Child) error
	// Read describes link name in pod: what Add was asked, as the kernel
	// reports it.
	Read(host, pod *Namespace, name string) (Child, error)
}

// NetlinkChildren creates child links through rtnetlink.
type NetlinkChildren struct{}

var macvlanModes = map[string]netlink.MacvlanMode{"": netlink.MACVLAN_MODE_BRIDGE, "bridge": netlink.MACVLAN_MODE_BRIDGE,
	"private": netlink.MACVLAN_MODE_PRIVATE, "vepa": netlink.MACVLAN_MODE_VEPA, "passthru": netlink.MACVLAN_MODE_PASSTHRU}

var ipvlanModes = map[string]netlink.IPVlanMode{"": netlink.IPVLAN_MODE_L2, "l2": netlink.IPVLAN_MODE_L2,
	"l3": netlink.IPVLAN_MODE_L3, "l3s": netlink.IPVLAN_MODE_L3S}

// Link is the netlink link Add sends for c, in the pod netns podFd.
func (c Child) Link(podFd int) (netlink.Link, error) {
	attrs := netlink.LinkAttrs{Name: c.Name, ParentIndex: c.ParentIndex, Alias: c.Alias, MTU: c.MTU,
		HardwareAddr: c.MAC, Namespace: netlink.NsFd(podFd)}
	switch c.Kind {
	case "macvlan":
		m, ok := macvlanModes[c.Mode]
		if !ok {
			return nil, fmt.Errorf("macvlan mode %q", c.Mode)
		}
		return &netlink.Macvlan{LinkAttrs: attrs, Mode: m}, nil
	case "ipvlan":
		m, ok := ipvlanModes[c.Mode]
		if !ok {
			return nil, fmt.Errorf("ipvlan mode %q", c.Mode)
		}
		return &netlink.IPVlan{LinkAttrs: attrs, Mode: m}, nil
	case "ipoib":
		return &netlink.IPoIB{LinkAttrs: attrs, Pkey: c.PKey, Mode: netlink.IPOIB_MODE_DATAGRAM}, nil
	}
	return nil, fmt.Errorf("child kind %q", c.Kind)
}

// Add creates the child in the pod netns.
func (NetlinkChildren) Add(host, pod *Namespace, c Child) error {
	l, err := c.Link(int(pod.NS))
	if err != nil {
		return err
	}
	return host.Handle.LinkAdd(l)
}

// Read reports the child as the kernel has it.
func (NetlinkChildren) Read(host, pod *Namespace, name string) (Child, error) {
	l, err := pod.Handle.LinkByName(name)
	if err != nil {
		return Child{}, err
	}
	a := l.Attrs()
	c := Child{Kind: l.Type(), ParentIndex: a.ParentIndex, Name: a.Name, Alias: a.Alias, MAC: a.HardwareAddr, MTU: a.MTU}
	switch v := l.(type) {
	case *netlink.Macvlan:
		for k, m := range macvlanModes {
			if m == v.Mode && k != "" {
				c.Mode = k
			}
		}
	case *netlink.IPVlan:
		for k, m := range ipvlanModes {
			if m == v.Mode && k != "" {
				c.Mode = k
			}
		}
	case *netlink.IPoIB:
		c.PKey, c.Mode = v.Pkey, "datagram"
	}
	return c, nil
}

// FinishChild gives the child its alias (RTM_NEWLINK ignores one), then
// renames it from its temporary name to ifName, leaving it down: the caller
// brings it up once its addresses are on it, so the kernel announces them.
// Until the alias is set its temporary name identifies it.
func FinishChild(pod *Namespace, tempName, alias, ifName string) error {
	l, err := pod.Handle.LinkByName(tempName)
	if err != nil {
		return fmt.Errorf("find %s in the pod netns: %w", tempName, err)
	}
	if err := pod.Handle.LinkSetAlias(l, alias); err != nil {
		return fmt.Errorf("set the alias of %s: %w", tempName, err)
	}
	s, err := nl.GetNetlinkSocketAt(pod.NS, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer s.Close()
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: s}}
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(l.Attrs().Index)
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(ifName)))
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tempName, ifName, err)
	}
	return nil
}

// FindChild returns the link of n whose alias is alias, or, before it has
// one, whose name is tempName.
func FindChild(n *Namespace, alias, tempName string) (netlink.Link, error) {
	links, err := n.Handle.LinkList()
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		if l.Attrs().Alias == alias || (tempName != "" && l.Attrs().Name == tempName) {
			return l, nil
		}
	}
	return nil, ErrNotFound
}

// DeleteChild deletes the child (by its alias or temporary name) from the
// pod netns, or, when the pod's netns is gone, from the host's. Not
// finding it is success: a pod netns takes its child links with it.
func DeleteChild(host, pod *Namespace, alias, tempName string) error {
	for _, n := range []*Namespace{pod, host} {
		if n == nil || (n == host && pod != nil) {
			continue
		}
		l, err := FindChild(n, alias, tempName)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("list links: %w", err)
		}
		if err := n.Handle.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("delete %s: %w", l.Attrs().Name, err)
		}
		return nil
	}
	return nil
}
