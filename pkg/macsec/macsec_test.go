package macsec

import (
	"bytes"
	"encoding/hex"
	"os"
	"strings"
	"testing"
)

// NewLink's bytes are iproute2's for the same link (testdata: captured
// from ip itself), after the netlink header.
func TestNewLinkAsIPSendsIt(t *testing.T) {
	raw, err := os.ReadFile("testdata/ip-link-add-macsec.txt")
	if err != nil {
		t.Fatal(err)
	}
	var hexs string
	for _, line := range strings.Split(string(raw), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			hexs += strings.TrimSpace(line)
		}
	}
	ip, err := hex.DecodeString(hexs)
	if err != nil {
		t.Fatal(err)
	}
	got := NewLink(Link{Name: "rnms0", Lower: 4743, SCI: 0x0102030405060708, Cipher: CipherGCMAESXPN128, EncodingSA: 2, Window: 128})
	if want := ip[16:]; !bytes.Equal(got, want) {
		t.Errorf("NewLink:\n got %x\nwant %x (ip)", got, want)
	}
	if ne.Uint16(ip[4:6]) != 16 { // RTM_NEWLINK
		t.Fatalf("the capture is not RTM_NEWLINK")
	}
}

// The generic-netlink commands as uapi/linux/if_macsec.h lays them out
// (the kernel tier also has the kernel take them and ip read them back).
func TestCommandLayout(t *testing.T) {
	s := SA{AN: 2, PN: 0x0006_4a00_0000_0001, Key: bytes.Repeat([]byte{0xaa}, 16), SSCI: 5, Active: true}
	copy(s.KeyID[:], bytes.Repeat([]byte{0x11}, 16))
	copy(s.Salt[:], bytes.Repeat([]byte{0x22}, 12))
	b := AddRXSA(7, 0x0102030405060708, s)
	if b[0] != CmdAddRXSA || b[1] != Version {
		t.Fatalf("genl header %x", b[:4])
	}
	want := "" +
		"08000100" + "07000000" + // MACSEC_ATTR_IFINDEX 7
		"10000200" + "0c000100" + "0102030405060708" + // RXSC_CONFIG { SCI (network order) }
		"60000300" + // SA_CONFIG (96 bytes) {
		"05000100" + "02000000" + // AN 2
		"05000200" + "01000000" + // ACTIVE
		"0c000300" + "01000000004a0600" // PN: u64, host order (x86-64, arm64)
	if !strings.HasPrefix(hex.EncodeToString(b[4:]), want[:len(want)]) {
		t.Errorf("AddRXSA:\n got %x\nwant prefix %s", b[4:], want)
	}
	if !bytes.Contains(b, append([]byte{0x08, 0x00, 0x08, 0x00}, 0, 0, 0, 5)) {
		t.Errorf("SSCI 5 (network order) missing: %x", b)
	}
	if !bytes.Contains(b, append([]byte{0x10, 0x00, 0x09, 0x00}, bytes.Repeat([]byte{0x22}, 12)...)) {
		t.Errorf("salt missing: %x", b)
	}
	if !bytes.Contains(b, append([]byte{0x14, 0x00, 0x05, 0x00}, bytes.Repeat([]byte{0x11}, 16)...)) {
		t.Errorf("key id missing: %x", b)
	}
}
