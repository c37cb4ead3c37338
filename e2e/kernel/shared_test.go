//go:build kerneltest

package kernel

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/railnet/railnet/pkg/cni"
	"github.com/railnet/railnet/pkg/netdev"
)

// udpReach sends a datagram from netns from to addr:port in netns to and
// waits for the echo: the two pods reach each other.
func udpReach(t *testing.T, from, to, addr string) error {
	t.Helper()
	var srv net.PacketConn
	toNS, err := ns.GetNS(to)
	if err != nil {
		return err
	}
	defer toNS.Close()
	if err := toNS.Do(func(ns.NetNS) error {
		var err error
		srv, err = net.ListenPacket("udp4", addr+":7007")
		return err
	}); err != nil {
		return err
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 64)
		n, peer, err := srv.ReadFrom(buf)
		if err == nil {
			srv.WriteTo(buf[:n], peer)
		}
	}()
	fromNS, err := ns.GetNS(from)
	if err != nil {
		return err
	}
	defer fromNS.Close()
	var c net.Conn
	if err := fromNS.Do(func(ns.NetNS) error {
		var err error
		c, err = net.Dial("udp4", addr+":7007")
		return err
	}); err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("railnet-shared")); err != nil {
		return err
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if string(buf[:n]) != "railnet-shared" {
		return fmt.Errorf("echo %q", buf[:n])
	}
	return nil
}

// ipvlan children of one HCA (a veth stand-in with a real rxe RDMA device
// on it): in shared RDMA netns mode, two pods on two slots get an ipvlan
// l2 child each and reach each other through the parent, which never
// changes; DEL removes each child. In exclusive mode ADD is refused before
// anything is created, saying how to switch.
func TestSharedIPVlan(t *testing.T) {
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "hcap0", MTU: 4200}, PeerName: "hcapeer0"}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if l, err := netlink.LinkByName("hcapeer0"); err == nil {
			netlink.LinkDel(l)
		}
	}()
	for _, n := range []string{"hcap0", "hcapeer0"} {
		l, _ := netlink.LinkByName(n)
		netlink.LinkSetUp(l)
	}
	addRXE(t, "hcap0", "rxe5")
	tree := mockedNIC(t, "hcap0", "rxe5")
	view := func() string {
		l, err := netlink.LinkByName("hcap0")
		if err != nil {
			return err.Error()
		}
		a := l.Attrs()
		addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
		return fmt.Sprintf("%d %s %d %v %q %d", a.Index, a.HardwareAddr, a.MTU, a.Flags&net.FlagUp != 0, a.Alias, len(addrs))
	}
	want := view()
	stateDir, ipamDir := t.TempDir(), t.TempDir()
	t.Cleanup(func() { netdev.RemovePinnedNetns(filepath.Join(stateDir, "netns", "staging")) })
	p := &cni.Plugin{Stderr: io.Discard}
	var pods [2]string
	var args [2]*skel.CmdArgs
	for i := range pods {
		pods[i] = fmt.Sprintf("/var/run/netns/ipvpod%d", i)
		if err := netdev.NewPinnedNetns(pods[i]); err != nil {
			t.Fatal(err)
		}
		defer netdev.RemovePinnedNetns(pods[i])
		conf, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "ipv", "type": "railnet", "sysfsRoot": tree.Sys,
			"stateDir": stateDir, "deviceID": fmt.Sprintf("0000:b1:00.0#%d", i), "attach": "ipvlan", "mtu": 4000,
			"ipam": map[string]any{"type": "host-local", "dataDir": ipamDir, "ranges": []any{[]any{map[string]string{"subnet": "198.18.120.0/24"}}}}})
		args[i] = &skel.CmdArgs{ContainerID: fmt.Sprintf("ipv%d", i), Netns: pods[i], IfName: "net1", StdinData: conf}
	}
	if mode() == "exclusive" {
		restore := quiet()
		err := p.Add(args[0])
		restore()
		if err == nil || !strings.Contains(err.Error(), "exclusive") || !strings.Contains(err.Error(), "rdma system set netns shared") {
			t.Fatalf("ADD of a shared slot in exclusive mode: %v", err)
		}
		n, _ := netdev.OpenNamespace(pods[0])
		defer n.Close()
		links, _ := n.Handle.LinkList()
		if len(links) != 1 {
			t.Errorf("the refused ADD left links in the pod: %d", len(links))
		}
		if recs, _ := filepath.Glob(filepath.Join(stateDir, "records", "*.json")); len(recs) != 0 {
			t.Errorf("records left: %v", recs)
		}
		if got := view(); got != want {
			t.Errorf("parent %s, was %s", got, want)
		}
		return
	}
	var ips [2]string
	for i := range pods {
		restore := quiet()
		err := p.Add(args[i])
		restore()
		if err != nil {
			t.Fatalf("ADD %d: %v", i, err)
		}
		n, _ := netdev.OpenNamespace(pods[i])
		l, err := n.Handle.LinkByName("net1")
		if err != nil || l.Type() != "ipvlan" || l.Attrs().MTU != 4000 {
			t.Fatalf("pod %d: %v %+v", i, err, l)
		}
		addrs, _ := n.Handle.AddrList(l, netlink.FAMILY_V4)
		n.Close()
		if len(addrs) != 1 {
			t.Fatalf("pod %d addresses %v", i, addrs)
		}
		ips[i] = addrs[0].IP.String()
		if got := view(); got != want {
			t.Fatalf("after ADD %d the parent is %s, was %s", i, got, want)
		}
	}
	if err := udpReach(t, pods[0], pods[1], ips[1]); err != nil {
		t.Fatalf("pod 0 → pod 1 (%s): %v", ips[1], err)
	}
	if err := udpReach(t, pods[1], pods[0], ips[0]); err != nil {
		t.Fatalf("pod 1 → pod 0 (%s): %v", ips[0], err)
	}
	prev, _ := json.Marshal(&current.Result{CNIVersion: "1.1.0", Interfaces: []*current.Interface{{Name: "net1", Sandbox: pods[0], Mtu: 4000}}})
	var m map[string]any
	json.Unmarshal(args[0].StdinData, &m)
	m["prevResult"] = json.RawMessage(prev)
	check := *args[0]
	check.StdinData, _ = json.Marshal(m)
	if err := p.Check(&check); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	for i := range pods {
		if err := p.Del(args[i]); err != nil {
			t.Fatalf("DEL %d: %v", i, err)
		}
		n, _ := netdev.OpenNamespace(pods[i])
		links, _ := n.Handle.LinkList()
		n.Close()
		if len(links) != 1 {
			t.Errorf("DEL %d left %d links in the pod", i, len(links))
		}
		if got := view(); got != want {
			t.Fatalf("after DEL %d the parent is %s, was %s", i, got, want)
		}
	}
}
