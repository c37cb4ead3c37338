//go:build kerneltest

package kernel

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os/exec"
	"reflect"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/railnet/railnet/pkg/macsec"
)

// attrs parses netlink attributes into type → value, descending into the
// types listed as nested (whatever their NLA_F_NESTED bit).
func attrs(b []byte, nested map[uint16]bool) map[uint16]any {
	out := map[uint16]any{}
	for len(b) >= 4 {
		l, t := int(binary.NativeEndian.Uint16(b[0:2])), binary.NativeEndian.Uint16(b[2:4])&0x3fff
		if l < 4 || l > len(b) {
			break
		}
		v := b[4:l]
		if nested[t] {
			out[t] = attrs(v, map[uint16]bool{})
		} else {
			out[t] = hex.EncodeToString(v)
		}
		b = b[min((l+3)&^3, len(b)):]
	}
	return out
}

// The generic-netlink commands railnet sends for MACsec carry what
// `ip macsec` sends for the same channel and associations: captured from
// the kernel's netlink monitor (nlmon) while ip runs, compared attribute by
// attribute (ip orders them its own way).
func TestMACsecMessagesAsIP(t *testing.T) {
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "msipa"}, PeerName: "msipb"}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if l, err := netlink.LinkByName("msipa"); err == nil {
			netlink.LinkDel(l)
		}
	}()
	if out, err := exec.Command("ip", "link", "add", "link", "msipa", "name", "msip", "type", "macsec", "sci", "0102030405060708",
		"cipher", "gcm-aes-xpn-128").CombinedOutput(); err != nil {
		t.Fatalf("ip link add macsec: %v %s", err, out)
	}
	ms, _ := netlink.LinkByName("msip")
	if out, err := exec.Command("ip", "link", "add", "nlmon9", "type", "nlmon").CombinedOutput(); err != nil {
		t.Fatalf("nlmon: %v %s", err, out)
	}
	defer exec.Command("ip", "link", "del", "nlmon9").Run()
	mon, _ := netlink.LinkByName("nlmon9")
	netlink.LinkSetUp(mon)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: mon.Attrs().Index}); err != nil {
		t.Fatal(err)
	}
	fam, err := netlink.GenlFamilyGet(macsec.FamilyName)
	if err != nil {
		t.Fatal(err)
	}
	key := bytes.Repeat([]byte{0xab}, 16)
	var keyID [16]byte
	copy(keyID[:], bytes.Repeat([]byte{0x11}, 16))
	var salt [12]byte
	copy(salt[:], bytes.Repeat([]byte{0x22}, 12))
	const sci = 0x1122334455667788
	const pn = 4294967300
	for _, args := range [][]string{
		{"macsec", "add", "msip", "rx", "sci", "1122334455667788", "on"},
		{"macsec", "add", "msip", "rx", "sci", "1122334455667788", "sa", "1", "xpn", fmt.Sprint(pn), "on", "ssci", "5",
			"salt", hex.EncodeToString(salt[:]), "key", hex.EncodeToString(keyID[:]), hex.EncodeToString(key)},
		{"macsec", "add", "msip", "tx", "sa", "2", "xpn", fmt.Sprint(pn), "on", "ssci", "7",
			"salt", hex.EncodeToString(salt[:]), "key", hex.EncodeToString(keyID[:]), hex.EncodeToString(key)},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	// ip's requests, by command.
	ip := map[uint8][]byte{}
	tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	buf := make([]byte, 65536)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			break
		}
		m := buf[:n]
		if len(m) < 20 || binary.NativeEndian.Uint16(m[4:6]) != fam.ID || binary.NativeEndian.Uint16(m[6:8])&unix.NLM_F_REQUEST == 0 {
			continue
		}
		ip[m[16]] = append([]byte(nil), m[16:binary.NativeEndian.Uint32(m[0:4])]...)
	}
	ifindex := ms.Attrs().Index
	sa := func(an uint8, ssci uint32) macsec.SA {
		return macsec.SA{AN: an, PN: pn, Key: key, KeyID: keyID, SSCI: ssci, Salt: salt, Active: true}
	}
	nested := map[uint16]bool{2: true, 3: true}
	for _, c := range []struct {
		name string
		cmd  uint8
		ours []byte
	}{
		{"add rx channel", macsec.CmdAddRXSC, macsec.AddRXSC(ifindex, sci)},
		{"add rx association", macsec.CmdAddRXSA, macsec.AddRXSA(ifindex, sci, sa(1, 5))},
		{"add tx association", macsec.CmdAddTXSA, macsec.AddTXSA(ifindex, sa(2, 7))},
	} {
		theirs, ok := ip[c.cmd]
		if !ok {
			t.Errorf("%s: ip's request not captured", c.name)
			continue
		}
		if !bytes.Equal(theirs[:2], c.ours[:2]) {
			t.Errorf("%s: genl header %x, ip's %x", c.name, c.ours[:4], theirs[:4])
		}
		if got, want := attrs(c.ours[4:], nested), attrs(theirs[4:], nested); !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\nours %v\nip's %v", c.name, got, want)
		}
	}
}
