package cni

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// notify asks the kernel to announce the interface's addresses when it
// comes up: a gratuitous ARP per IPv4 address (arp_notify) and unsolicited
// neighbour advertisements (ndisc_notify). The caller runs in the pod's
// netns, before the link is up. The kernel's announcement replaces one of
// our own: a packet socket costs an RCU grace period (10-20 ms) to close,
// which every pod's start would wait for.
func notify(ifName string) {
	writeSysctl("/proc/sys/net/ipv4/conf/"+ifName+"/arp_notify", "1")
	writeSysctl("/proc/sys/net/ipv6/conf/"+ifName+"/ndisc_notify", "1")
}

func writeSysctl(path, v string) {
	fd, err := unix.Open(path, unix.O_WRONLY, 0)
	if err != nil {
		return
	}
	unix.Write(fd, []byte(v))
	unix.Close(fd)
}

// dadTimeout bounds the wait for IPv6 duplicate address detection before
// routes through an IPv6 gateway go in (the reference plugins' 5 s).
const dadTimeout = 5 * time.Second

// configureIface puts the IPAM result's addresses and routes on ifName and
// sets it up, as the reference plugins' ipam.ConfigureIface does: IPv6
// enabled (disable_ipv6 0 on lo and the link, keep_addr_on_down 1) before
// an IPv6 address, a route without a gateway takes the first of its
// family's, duplicate address detection settled before routes when there
// is an IPv6 gateway. Not that package: it links the iptables and nftables
// libraries into the binary, 0.85 ms and 128 kB of init on every exec for
// code ADD never runs. The caller runs in the pod's netns.
func configureIface(ifName string, res *current.Result) error {
	link, err := netlink.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("find %s: %w", ifName, err)
	}
	var v4gw, v6gw net.IP
	v6 := false
	for _, ipc := range res.IPs {
		if ipc.Interface == nil {
			continue
		}
		if i := *ipc.Interface; i < 0 || i >= len(res.Interfaces) || res.Interfaces[i].Name != ifName {
			return fmt.Errorf("address %s is for interface %d, not %s", ipc.Address.String(), i, ifName)
		}
		if ipc.Address.IP.To4() == nil && !v6 {
			for _, f := range []string{"lo", ifName} {
				p := "/proc/sys/net/ipv6/conf/" + f + "/disable_ipv6"
				if v, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(v)) != "0" {
					if err := os.WriteFile(p, []byte("0"), 0); err != nil {
						return fmt.Errorf("enable IPv6 on %s: %w", f, err)
					}
				}
			}
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+ifName+"/keep_addr_on_down", []byte("1"), 0); err != nil {
				return fmt.Errorf("keep_addr_on_down on %s: %w", ifName, err)
			}
			v6 = true
		}
		if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: &ipc.Address}); err != nil {
			return fmt.Errorf("add address %s to %s: %w", ipc.Address.String(), ifName, err)
		}
		switch {
		case ipc.Gateway == nil:
		case ipc.Gateway.To4() != nil && v4gw == nil:
			v4gw = ipc.Gateway
		case ipc.Gateway.To4() == nil && v6gw == nil:
			v6gw = ipc.Gateway
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", ifName, err)
	}
	if v6gw != nil {
		if err := settleDAD(link, dadTimeout); err != nil {
			return err
		}
	}
	for _, r := range res.Routes {
		gw := r.GW
		if gw == nil {
			if r.Dst.IP.To4() != nil {
				gw = v4gw
			} else {
				gw = v6gw
			}
		}
		route := netlink.Route{Dst: &r.Dst, LinkIndex: link.Attrs().Index, Gw: gw, Priority: r.Priority}
		if r.Table != nil {
			route.Table = *r.Table
		}
		if r.Scope != nil {
			route.Scope = netlink.Scope(*r.Scope)
		}
		if err := netlink.RouteAddEcmp(&route); err != nil { // the reference's flags: IPv6 makes an existing route multipath
			return fmt.Errorf("add route %s via %v dev %s: %w", r.Dst.String(), gw, ifName, err)
		}
	}
	return nil
}

// settleDAD waits until no IPv6 address of link is tentative; one that
// failed DAD is an error. A link that is not up by the deadline has no
// DAD to wait for.
func settleDAD(link netlink.Link, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		addrs, err := netlink.AddrList(link, netlink.FAMILY_V6)
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			continue // the list changed while dumped: ask again
		}
		if err != nil {
			return fmt.Errorf("list the addresses of %s: %w", link.Attrs().Name, err)
		}
		tentative := false
		for _, a := range addrs {
			if a.Flags&unix.IFA_F_DADFAILED != 0 {
				return fmt.Errorf("address %s of %s failed duplicate address detection", a.IP, link.Attrs().Name)
			}
			tentative = tentative || a.Flags&unix.IFA_F_TENTATIVE != 0
		}
		if !tentative {
			return nil
		}
		if time.Now().After(deadline) {
			if l, err := netlink.LinkByIndex(link.Attrs().Index); err == nil && l.Attrs().OperState != netlink.OperUp {
				return nil
			}
			return fmt.Errorf("%s still has tentative addresses after %v", link.Attrs().Name, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
