//go:build kerneltest

package kernel

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/vishvananda/netlink"

	"github.com/railnet/railnet/pkg/netdev"
)

type macsecFrame struct {
	an  uint8
	pn  uint32
	sci uint64
	raw string    // the whole frame
	at  time.Time // when the capture read it
}

// macsecFrames splits captured frames: MACsec ones (ethertype 0x88E5,
// their SecTAG's AN, PN and SCI), and how many carry the marker in clear.
func (c *capture) macsecFrames() (out []macsecFrame, clear int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, f := range c.frames {
		if bytes.Contains(f, []byte(marker)) {
			clear++
		}
		if len(f) < 28 || binary.BigEndian.Uint16(f[12:14]) != 0x88e5 {
			continue
		}
		m := macsecFrame{an: f[14] & 3, pn: binary.BigEndian.Uint32(f[16:20]), raw: string(f), at: c.at[i]}
		if f[14]&0x20 != 0 { // SC: the SCI is in the SecTAG
			m.sci = binary.BigEndian.Uint64(f[20:28])
		}
		out = append(out, m)
	}
	return out, clear
}

func macsecArgs(e *encEnv, cid, pod string, vf int, ip, subnet, keys string) *skel.CmdArgs {
	var extra map[string]any
	if keys != "" {
		extra = map[string]any{"encryption": map[string]any{"mode": "macsec", "keys": keys}}
	}
	return e.args(cid, pod, vf, ip, subnet, keys, extra)
}

func podLink(t *testing.T, pod, name string) netlink.Link {
	t.Helper()
	n, err := netdev.OpenNamespace(pod)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	l, err := n.Handle.LinkByName(name)
	if err != nil {
		t.Fatalf("%s in %s: %v", name, pod, err)
	}
	return l
}

// MACsec: two pods with the same key reach each other through a macsec
// link each (the addresses on it, the device renamed beneath); on the wire
// only ethertype 0x88E5, never the payload; counters rise; another key or
// none cannot talk; a re-created pod is back within 1 s and no (SCI, PN)
// pair repeats; DEL leaves no macsec link and gives the device back.
func TestMACsecPods(t *testing.T) {
	e := newEncEnv(t, "mcs", 2)
	e.writeKeys(t, "train", "1 aes-gcm-128 "+keyA+"\n")
	e.writeKeys(t, "other", "1 aes-gcm-128 "+keyB+"\n")
	const subnet = "198.18.140.0/24"
	a, b, c := e.pod(t), e.pod(t), e.pod(t)
	argsA := macsecArgs(e, "ma", a, 0, "198.18.140.10", subnet, "train")
	argsB := macsecArgs(e, "mb", b, 1, "198.18.140.11", subnet, "train")
	if res, err := e.add(t, argsA); err != nil || !strings.Contains(string(res), `"mode": "macsec"`) {
		t.Fatalf("ADD a: %v %s", err, res)
	}
	if _, err := e.add(t, argsB); err != nil {
		t.Fatalf("ADD b: %v", err)
	}
	recA, recB := record(t, e.state, "ma"), record(t, e.state, "mb")
	if l := podLink(t, a, "net1"); l.Type() != "macsec" {
		t.Fatalf("net1 in pod a is a %s link", l.Type())
	}
	lowerA := podLink(t, a, recA.Encryption.MACsec.Lower)
	if n, _ := netdev.OpenNamespace(a); n != nil {
		addrs, _ := n.Handle.AddrList(lowerA, netlink.FAMILY_V4)
		n.Close()
		if len(addrs) != 0 {
			t.Errorf("the lower carries addresses %v", addrs)
		}
	}
	capB := startCaptureOn(t, b, recB.Encryption.MACsec.Lower)
	echo(t, b, "198.18.140.11")
	conn := dialer(t, a, "198.18.140.11")
	exchange(t, conn)
	if st := podLink(t, a, "net1").Attrs().Statistics; st == nil || st.TxPackets < 4 || st.RxPackets < 4 {
		t.Errorf("macsec link counters %+v", st)
	}
	capA := startCaptureOn(t, a, recA.Encryption.MACsec.Lower)
	recreate(t, e, argsB, capB, conn, nil)
	capA.stop()
	fa, clearA := capA.macsecFrames()
	fb, clearB := capB.macsecFrames()
	if clearA+clearB != 0 {
		t.Errorf("%d frames carried the payload in clear", clearA+clearB)
	}
	if len(fa) < 6 || len(fb) < 6 {
		t.Errorf("MACsec frames seen: %d on a, %d on b", len(fa), len(fb))
	}
	// b's frames: the captures overlap (a's starts before b's stops), and
	// a frame b sent then (an MLD report, an ACK) is seen at both ends of
	// the link: the same bytes, moments apart. Any other repeat of an
	// (SCI, PN) is a nonce used twice.
	seen := map[[2]uint64]macsecFrame{}
	for _, f := range append(fb, fa...) {
		k := [2]uint64{f.sci, uint64(f.pn)}
		if g, dup := seen[k]; dup && f.sci != 0 && f.sci == frameSCI(fb) {
			if d := f.at.Sub(g.at); f.raw != g.raw || d > 500*time.Millisecond || d < -500*time.Millisecond {
				t.Fatalf("MACsec (SCI %#x, PN %d) from b seen twice (%v apart): a nonce reused", f.sci, f.pn, d)
			}
		}
		seen[k] = f
	}
	if err := e.p.Del(argsB); err != nil {
		t.Fatal(err)
	}
	outsiders(t, e, a, c, "198.18.140", subnet, func(cid, pod string, vf int, ip, subnet, keys string) *skel.CmdArgs {
		return macsecArgs(e, cid, pod, vf, ip, subnet, keys)
	})
	if err := e.p.Del(argsA); err != nil {
		t.Fatal(err)
	}
	n, _ := netdev.OpenNamespace(a)
	links, _ := n.Handle.LinkList()
	n.Close()
	if len(links) != 1 {
		t.Errorf("DEL left %d links in pod a", len(links))
	}
	if _, err := netlink.LinkByName("mcsv0"); err != nil {
		t.Errorf("the device is not back in the host: %v", err)
	}
	noKeyMaterial(t, e)
}

// frameSCI is the SCI most frames carry.
func frameSCI(fs []macsecFrame) uint64 {
	n := map[uint64]int{}
	best := uint64(0)
	for _, f := range fs {
		n[f.sci]++
		if n[f.sci] > n[best] {
			best = f.sci
		}
	}
	return best
}

// MACsec rotation through the DaemonSet's rotator: key 2 joins with a
// sendAfter a second ahead, sending moves to association 2 at that time,
// key 1 leaves; a datagram every 20 ms loses at most one.
func TestMACsecRotation(t *testing.T) {
	e := newEncEnv(t, "mrt", 1)
	e.writeKeys(t, "rot", "1 aes-gcm-128 "+keyA+"\n")
	const subnet = "198.18.141.0/24"
	a, b := e.pod(t), e.pod(t)
	argsA := macsecArgs(e, "mra", a, 0, "198.18.141.10", subnet, "rot")
	argsB := macsecArgs(e, "mrb", b, 1, "198.18.141.11", subnet, "rot")
	for _, x := range []*skel.CmdArgs{argsA, argsB} {
		if _, err := e.add(t, x); err != nil {
			t.Fatalf("ADD: %v", err)
		}
	}
	capB := startCaptureOn(t, b, record(t, e.state, "mrb").Encryption.MACsec.Lower)
	echo(t, b, "198.18.141.11")
	conn := dialer(t, a, "198.18.141.11")
	sent, lost := rotateUnderTraffic(t, e, conn)
	capB.stop()
	frames, clear := capB.macsecFrames()
	ans := map[uint8]int{}
	for _, f := range frames {
		ans[f.an]++
	}
	t.Logf("MACsec rotation: %d sent, %d lost; frames by AN %v", sent, lost, ans)
	if lost > 1 {
		t.Errorf("lost %d of %d datagrams through the rotation", lost, sent)
	}
	if clear != 0 || ans[1] == 0 || ans[2] == 0 {
		t.Errorf("frames by AN %v, %d cleartext", ans, clear)
	}
	if err := e.p.Del(argsA); err != nil {
		t.Error(err)
	}
	if err := e.p.Del(argsB); err != nil {
		t.Error(err)
	}
	_ = fmt.Sprint
}
