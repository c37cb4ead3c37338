package encrypt

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"testing"
	"time"

	"github.com/railnet/railnet/pkg/keys"
)

func TestPeers(t *testing.T) {
	s := netip.MustParsePrefix("10.1.2.0/22")
	p := Peers(s, netip.MustParseAddr("10.1.3.7"))
	if len(p) != 1021 || p[0].String() != "10.1.0.1" || p[len(p)-1].String() != "10.1.3.254" {
		t.Fatalf("%d peers, %v … %v", len(p), p[0], p[len(p)-1])
	}
	for _, a := range p {
		if a.String() == "10.1.3.7" {
			t.Fatal("local is its own peer")
		}
	}
	if got := Index(s, netip.MustParseAddr("10.1.2.5")); got != 517 {
		t.Errorf("Index = %d, want 517", got)
	}
	if n := len(Peers(netip.MustParsePrefix("10.9.0.0/31"), netip.MustParseAddr("10.9.0.0"))); n != 1 {
		t.Errorf("/31 peers %d", n)
	}
}

// The XFRM structures laid out as uapi/linux/xfrm.h has them (x86-64 and
// arm64 alike): what NEWSA carries, at the offsets the kernel reads.
func TestNewSALayout(t *testing.T) {
	s := sa{src: netip.MustParseAddr("198.18.0.1"), dst: netip.MustParseAddr("198.18.0.2"), spi: 0x01000002, reqid: 7,
		material: bytes.Repeat([]byte{0xab}, 20), seq: 0x0006_4a5b_1234_5678, outbound: true}
	b := s.newSA()
	ne := binary.NativeEndian
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"sel.family", ne.Uint16(b[40:42]), uint16(2)},
		{"id.daddr", netip.AddrFrom4([4]byte(b[56:60])).String(), "198.18.0.2"},
		{"id.spi (network order)", hex.EncodeToString(b[72:76]), "01000002"},
		{"id.proto", b[76], uint8(50)},
		{"saddr", netip.AddrFrom4([4]byte(b[80:84])).String(), "198.18.0.1"},
		{"lft.soft_byte_limit", ne.Uint64(b[96:104]), ^uint64(0)},
		{"lft.soft_add_expires_seconds", ne.Uint64(b[128:136]), uint64(0)},
		{"reqid", ne.Uint32(b[208:212]), uint32(7)},
		{"family", ne.Uint16(b[212:214]), uint16(2)},
		{"mode", b[214], uint8(0)},
		{"flags (ESN)", b[216], uint8(128)},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	a := b[224:]
	if ne.Uint16(a[2:4]) != attrAlgAEAD || ne.Uint16(a[0:2]) != 4+72+20 || string(bytes.TrimRight(a[4:68], "\x00")) != "rfc4106(gcm(aes))" ||
		ne.Uint32(a[68:72]) != 160 || ne.Uint32(a[72:76]) != 128 || !bytes.Equal(a[76:96], s.material) {
		t.Errorf("AEAD attribute %x", a[:96])
	}
	r := a[96:]
	if ne.Uint16(r[2:4]) != attrReplayESN || ne.Uint16(r[0:2]) != 4+24+16 || ne.Uint32(r[4:8]) != 4 ||
		ne.Uint32(r[8:12]) != 0x12345678 || ne.Uint32(r[16:20]) != 0x00064a5b || ne.Uint32(r[24:28]) != 128 {
		t.Errorf("ESN attribute %x", r[:28])
	}
}

// BenchmarkPrepareSAs is railnet's own cost of a /22 attachment's SAs:
// derivations and messages for 2,042 SAs (the kernel's is apart).
func BenchmarkPrepareSAs(b *testing.B) {
	set := &keys.Set{Keys: []keys.Key{{ID: 1, Algorithm: "aes-gcm-128", Secret: bytes.Repeat([]byte{7}, 16)}}}
	c := IPsec{Local: netip.MustParseAddr("10.1.0.10"), Subnet: netip.MustParsePrefix("10.1.0.0/22"), Reqid: 3}
	buf := make([]byte, 0, batchMax+4<<10)
	for b.Loop() {
		want, _, _ := c.desired(set, time.Now(), 0)
		d := &deriver{set: set, by: map[uint8]*keys.ESPDeriver{}}
		adds := make([]sa, 0, len(want))
		for _, s := range want {
			adds = append(adds, s)
		}
		d.materials(adds)
		n := 0
		for i := range adds {
			if buf = adds[i].appendNewSA(buf[:0]); len(buf) == 0 {
				b.Fatal("no message")
			}
			n++
		}
		d.wipe()
		if n != 2042 {
			b.Fatal(n)
		}
	}
}
