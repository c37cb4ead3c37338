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

// HostState is what a netdev looked like in the host before a move, and
// how to know it again: by its hardware (the PCI function the netdev
// belongs to, IFLA_PARENT_DEV_NAME), or, for a virtual link that has none,
// by its ifindex. A pod may rename its interfaces and set any alias, so
// neither names it.
type HostState struct {
	Name   string
	MAC    string
	MTU    int
	Alias  string
	Up     bool
	Parent string // IFLA_PARENT_DEV_NAME: "0000:18:00.2" for a PCI function's netdev
	Index  int    // ifindex, for links without a parent device
}

// Is reports whether l is the link this state describes. A state recorded
// without identity (an older record) matches any link.
func (o HostState) Is(l netlink.Link) bool {
	a := l.Attrs()
	switch {
	case o.Parent != "":
		return a.ParentDev == o.Parent
	case o.Index != 0:
		return a.Index == o.Index
	}
	return true
}

func (o HostState) identified() bool { return o.Parent != "" || o.Index != 0 }

func (o HostState) identity() string {
	if o.Parent != "" {
		return o.Parent
	}
	return fmt.Sprintf("ifindex %d", o.Index)
}

// Snapshot reads a host link's state.
func Snapshot(host *Namespace, name string) (HostState, error) {
	l, err := host.Handle.LinkByName(name)
	if err != nil {
		return HostState{}, fmt.Errorf("netdev %s: %w", name, err)
	}
	a := l.Attrs()
	hs := HostState{Name: a.Name, MAC: a.HardwareAddr.String(), MTU: a.MTU, Alias: a.Alias, Up: a.Flags&net.FlagUp != 0,
		Parent: a.ParentDev}
	if hs.Parent == "" {
		hs.Index = a.Index
	}
	return hs, nil
}

// ErrNeedsStaging: the one-message move was refused and undone; do it again
// with a staging namespace.
var ErrNeedsStaging = errors.New("the direct move was refused; a staging namespace is needed")

// moveRenamed moves link index from one namespace to another and names it
// name there, in one RTM_SETLINK (IFLA_NET_NS_FD with IFLA_IFNAME): the
// kernel moves the link, then renames it in the target, so neither
// namespace ever sees it under a name it should not have (what a staging
// namespace is for), at the cost of one namespace change instead of two.
func moveRenamed(from *Namespace, index int, to *Namespace, name string) error {
	s, err := nl.GetNetlinkSocketAt(from.NS, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer s.Close()
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: s}}
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFLA_NET_NS_FD, nl.Uint32Attr(uint32(to.NS))))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	_, err = req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// MoveIn moves host link hostName into pod as ifName: it stores the host
// name in the alias (so DEL can restore it even if the record is lost),
// moves the link and renames it in the pod in one message (or, with a temp
// namespace, renames it there: no clash with names in the pod or with udev
// in the host) and sets MAC and MTU when given, leaving it down. On failure
// every step is undone. Without temp, a refused direct move is undone and
// returns ErrNeedsStaging.
func MoveIn(host, temp, pod *Namespace, hostName, ifName string, mac net.HardwareAddr, mtu int) (err error) {
	l, err := host.Handle.LinkByName(hostName)
	if err != nil {
		return fmt.Errorf("netdev %s: %w", hostName, err)
	}
	orig := l.Attrs()
	origAlias, origMAC, origMTU, origUp := orig.Alias, orig.HardwareAddr, orig.MTU, orig.Flags&net.FlagUp != 0
	if err := host.Handle.LinkSetAlias(l, hostName); err != nil {
		return fmt.Errorf("set alias of %s: %w", hostName, err)
	}
	defer func() {
		if err != nil {
			// Whatever happened, bring it home as it was.
			if rerr := MoveOut(host, temp, pod, HostState{Name: hostName, MAC: origMAC.String(), MTU: origMTU, Alias: origAlias, Up: origUp}, ifName); rerr != nil {
				err = errors.Join(err, fmt.Errorf("rollback: %w", rerr))
			}
		}
	}()
	if err := host.Handle.LinkSetDown(l); err != nil {
		return fmt.Errorf("set %s down: %w", hostName, err)
	}
	if temp == nil {
		if err := moveRenamed(host, orig.Index, pod, ifName); err != nil {
			// Refused: the link is still in the host, or (the rename
			// failed after the move) in the pod under its host name with
			// its alias; the rollback finds it either way and restores it,
			// and the caller stages it.
			return fmt.Errorf("%w: move %s into the pod as %s: %v", ErrNeedsStaging, hostName, ifName, err)
		}
	} else {
		if err := host.Handle.LinkSetNsFd(l, int(temp.NS)); err != nil {
			return fmt.Errorf("move %s to the temp netns: %w", hostName, err)
		}
		tl, err := temp.Handle.LinkByName(hostName)
		if err != nil {
			return fmt.Errorf("find %s in the temp netns: %w", hostName, err)
		}
		if err := temp.Handle.LinkSetName(tl, ifName); err != nil {
			return fmt.Errorf("rename %s to %s: %w", hostName, ifName, err)
		}
		if err := temp.Handle.LinkSetNsFd(tl, int(pod.NS)); err != nil {
			return fmt.Errorf("move %s into the pod netns: %w", ifName, err)
		}
	}
	pl, err := pod.Handle.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("find %s in the pod netns: %w", ifName, err)
	}
	if len(mac) > 0 {
		if err := pod.Handle.LinkSetHardwareAddr(pl, mac); err != nil {
			return fmt.Errorf("set MAC %s on %s: %w", mac, ifName, err)
		}
	}
	if mtu > 0 && mtu != pl.Attrs().MTU {
		if err := pod.Handle.LinkSetMTU(pl, mtu); err != nil {
			return fmt.Errorf("set MTU %d on %s: %w", mtu, ifName, err)
		}
	}
	// Left down: the caller brings it up once its addresses are on it, so
	// the kernel announces them (arp_notify).
	return nil
}

// ErrNotFound: the link is in none of the namespaces searched.
var ErrNotFound = errors.New("netdev not found")

// findLink finds the link orig describes in n: by its hardware identity
// when the state has one (whatever its name and alias now), else under one
// of names with the alias, or anywhere with the alias.
func findLink(n *Namespace, names []string, orig HostState) (netlink.Link, error) {
	if n == nil {
		return nil, ErrNotFound
	}
	alias := orig.Name
	for _, name := range names {
		if name == "" {
			continue
		}
		if l, err := n.Handle.LinkByName(name); err == nil && orig.Is(l) &&
			(orig.identified() || l.Attrs().Alias == alias || l.Attrs().Name == alias) {
			return l, nil
		}
	}
	links, err := n.Handle.LinkList()
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		if orig.identified() && orig.Is(l) || !orig.identified() && l.Attrs().Alias == alias {
			return l, nil
		}
	}
	return nil, ErrNotFound
}

// MoveOut brings the link back to the host as it was: found in the pod
// (under ifName, or whatever name the pod gave it, by its alias), in the
// temp namespace (a crash mid-move), or already in the host (the pod's
// namespace is gone and the kernel returned it); renamed in the temp
// namespace, moved home, MAC, MTU, alias and link state restored.
// pod and temp may be nil (gone). A link found nowhere is ErrNotFound.
func MoveOut(host, temp, pod *Namespace, orig HostState, ifName string) error {
	var l netlink.Link
	var err error
	where := host
	if l, err = findLink(pod, []string{ifName}, orig); err == nil {
		where = pod
	} else if l, err = findLink(temp, []string{ifName, orig.Name}, orig); err == nil {
		where = temp
	} else if l, err = findLink(host, []string{orig.Name, ifName}, orig); err != nil {
		return fmt.Errorf("%s (host name %s, device %s): %w", ifName, orig.Name, orig.identity(), ErrNotFound)
	}
	if where == pod {
		// One message home, renamed there; refused (the host has a link
		// of that name) it is still in the pod, and goes the staged way.
		pod.Handle.LinkSetDown(l)
		if err := moveRenamed(pod, l.Attrs().Index, host, orig.Name); err == nil {
			if l, err = host.Handle.LinkByName(orig.Name); err != nil {
				return fmt.Errorf("find %s in the host: %w", orig.Name, err)
			}
			where = host
		}
	}
	if where != host {
		where.Handle.LinkSetDown(l)
		if where == pod && temp != nil {
			// Rename in the temp netns: the host may have a link called
			// ifName, the pod one called like the host link.
			if err := pod.Handle.LinkSetNsFd(l, int(temp.NS)); err != nil {
				return fmt.Errorf("move %s to the temp netns: %w", ifName, err)
			}
			// The same name in the temp netns (a virtual link's ifindex may
			// change on the way, where it was taken there).
			name := l.Attrs().Name
			if l, err = temp.Handle.LinkByName(name); err != nil || (orig.Parent != "" && !orig.Is(l)) {
				return fmt.Errorf("find %s in the temp netns: %w", name, ErrNotFound)
			}
			where = temp
		}
		if l.Attrs().Name != orig.Name {
			if err := where.Handle.LinkSetName(l, orig.Name); err != nil {
				return fmt.Errorf("rename %s to %s: %w", l.Attrs().Name, orig.Name, err)
			}
		}
		if err := where.Handle.LinkSetNsFd(l, int(host.NS)); err != nil {
			return fmt.Errorf("move %s to the host: %w", orig.Name, err)
		}
		if l, err = host.Handle.LinkByName(orig.Name); err != nil {
			return fmt.Errorf("find %s in the host: %w", orig.Name, err)
		}
	} else {
		host.Handle.LinkSetDown(l)
		if l.Attrs().Name != orig.Name {
			if err := host.Handle.LinkSetName(l, orig.Name); err != nil {
				return fmt.Errorf("rename %s to %s: %w", l.Attrs().Name, orig.Name, err)
			}
		}
	}
	var errs []error
	if orig.MAC != "" && l.Attrs().HardwareAddr.String() != orig.MAC {
		if hw, err := net.ParseMAC(orig.MAC); err == nil {
			if err := host.Handle.LinkSetHardwareAddr(l, hw); err != nil {
				errs = append(errs, fmt.Errorf("restore MAC of %s: %w", orig.Name, err))
			}
		}
	}
	if orig.MTU > 0 && l.Attrs().MTU != orig.MTU {
		if err := host.Handle.LinkSetMTU(l, orig.MTU); err != nil {
			errs = append(errs, fmt.Errorf("restore MTU of %s: %w", orig.Name, err))
		}
	}
	if err := host.Handle.LinkSetAlias(l, orig.Alias); err != nil {
		errs = append(errs, fmt.Errorf("restore alias of %s: %w", orig.Name, err))
	}
	if orig.Up {
		if err := host.Handle.LinkSetUp(l); err != nil {
			errs = append(errs, fmt.Errorf("set %s up: %w", orig.Name, err))
		}
	}
	return errors.Join(errs...)
}
