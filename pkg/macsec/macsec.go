// Package macsec writes the netlink messages of a MACsec link and its
// secure channels and associations, which netlink's library lacks: the
// rtnetlink link (IFLA_INFO_KIND "macsec", IFLA_MACSEC_*) and the "macsec"
// generic-netlink family's commands (uapi/linux/if_macsec.h). It builds
// bytes only; the caller sends them. Tests compare them with what
// `ip macsec` and `ip link add type macsec` send.
package macsec

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// Cipher suites.
const (
	CipherGCMAES128    uint64 = 0x0080C20001000001
	CipherGCMAES256    uint64 = 0x0080C20001000002
	CipherGCMAESXPN128 uint64 = 0x0080C20001000003
	CipherGCMAESXPN256 uint64 = 0x0080C20001000004
)

// Generic netlink.
const (
	FamilyName = "macsec"
	Version    = 1

	CmdAddRXSC = 1
	CmdAddTXSA = 4
	CmdDelTXSA = 5
	CmdUpdTXSA = 6
	CmdAddRXSA = 7
	CmdDelRXSA = 8
	CmdUpdRXSA = 9

	attrIfindex    = 1
	attrRXSCConfig = 2
	attrSAConfig   = 3

	rxscSCI    = 1
	rxscActive = 2

	saAN     = 1
	saActive = 2
	saPN     = 3
	saKey    = 4
	saKeyID  = 5
	saSSCI   = 8
	saSalt   = 9
)

// rtnetlink link attributes (IFLA_MACSEC_*).
const (
	iflaSCI           = 1
	iflaICVLen        = 3
	iflaCipherSuite   = 4
	iflaWindow        = 5
	iflaEncodingSA    = 6
	iflaEncrypt       = 7
	iflaProtect       = 8
	iflaIncSCI        = 9
	iflaReplayProtect = 12
	iflaValidation    = 13

	validateStrict = 2
)

var ne = binary.NativeEndian

// Attr is a netlink attribute, padded to 4 bytes.
func Attr(typ uint16, payload []byte) []byte {
	l := 4 + len(payload)
	b := make([]byte, (l+3)&^3)
	ne.PutUint16(b[0:2], uint16(l))
	ne.PutUint16(b[2:4], typ)
	copy(b[4:], payload)
	return b
}

// nested is a nested attribute, without NLA_F_NESTED, as iproute2 writes
// them (the kernel's macsec and rtnetlink parsers take both).
func nested(typ uint16, attrs ...[]byte) []byte {
	var p []byte
	for _, a := range attrs {
		p = append(p, a...)
	}
	return Attr(typ, p)
}

func u8(v uint8) []byte { return []byte{v} }

func u32(v uint32) []byte {
	b := make([]byte, 4)
	ne.PutUint32(b, v)
	return b
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	ne.PutUint64(b, v)
	return b
}

// be64 is an SCI as the kernel keeps it (sci_t, network order).
func be64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

func be32(v uint32) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, v)
	return b
}

// Link is a MACsec link to create on a lower link.
type Link struct {
	Name       string
	Lower      int // the lower link's ifindex
	SCI        uint64
	Cipher     uint64
	EncodingSA uint8
	Window     uint32 // replay window
}

// NewLink is RTM_NEWLINK's payload (after the netlink header) creating l:
// encryption on, protection on, replay protection with l.Window, frames
// validated strictly, the SCI in every SecTAG, a 16-byte ICV.
func NewLink(l Link) []byte {
	// In iproute2's order, so that the bytes are the same as ip's.
	b := make([]byte, unix.SizeofIfInfomsg) // AF_UNSPEC, no index: a new link
	b = append(b, Attr(unix.IFLA_LINK, u32(uint32(l.Lower)))...)
	b = append(b, Attr(unix.IFLA_IFNAME, append([]byte(l.Name), 0))...)
	data := [][]byte{
		Attr(iflaSCI, be64(l.SCI)),
		Attr(iflaEncrypt, u8(1)),
		Attr(iflaProtect, u8(1)),
		Attr(iflaIncSCI, u8(1)),
		Attr(iflaValidation, u8(validateStrict)),
		Attr(iflaCipherSuite, u64(l.Cipher)),
		Attr(iflaICVLen, u8(16)),
		Attr(iflaWindow, u32(l.Window)),
		Attr(iflaReplayProtect, u8(1)),
		Attr(iflaEncodingSA, u8(l.EncodingSA)),
	}
	info := append(Attr(unix.IFLA_INFO_KIND, []byte("macsec")), nested(unix.IFLA_INFO_DATA, data...)...)
	return append(b, nested(unix.IFLA_LINKINFO, info)...)
}

// SetEncodingSA is RTM_NEWLINK's payload changing a MACsec link's
// encoding SA (the association it sends with).
func SetEncodingSA(ifindex int, an uint8) []byte {
	b := make([]byte, unix.SizeofIfInfomsg)
	ne.PutUint32(b[4:8], uint32(int32(ifindex)))
	info := append(Attr(unix.IFLA_INFO_KIND, []byte("macsec")), nested(unix.IFLA_INFO_DATA, Attr(iflaEncodingSA, u8(an)))...)
	return append(b, nested(unix.IFLA_LINKINFO, info)...)
}

// SA is a secure association.
type SA struct {
	AN     uint8
	PN     uint64 // XPN: the 64-bit packet number to start at (receive: the lowest accepted)
	Key    []byte
	KeyID  [16]byte
	SSCI   uint32
	Salt   [12]byte
	Active bool
}

func (s SA) attrs() []byte {
	active := uint8(0)
	if s.Active {
		active = 1
	}
	return nested(attrSAConfig,
		Attr(saAN, u8(s.AN)),
		Attr(saActive, u8(active)),
		Attr(saPN, u64(s.PN)),
		Attr(saKey, s.Key),
		Attr(saKeyID, s.KeyID[:]),
		Attr(saSSCI, be32(s.SSCI)),
		Attr(saSalt, s.Salt[:]),
	)
}

// genl is a generic-netlink payload: genlmsghdr and attributes.
func genl(cmd uint8, attrs ...[]byte) []byte {
	b := []byte{cmd, Version, 0, 0}
	for _, a := range attrs {
		b = append(b, a...)
	}
	return b
}

// AddRXSC adds the receive channel of the peer with sci.
func AddRXSC(ifindex int, sci uint64) []byte {
	return genl(CmdAddRXSC, Attr(attrIfindex, u32(uint32(ifindex))),
		nested(attrRXSCConfig, Attr(rxscSCI, be64(sci)), Attr(rxscActive, u8(1))))
}

// AddRXSA adds an association to the receive channel sci.
func AddRXSA(ifindex int, sci uint64, s SA) []byte {
	return genl(CmdAddRXSA, Attr(attrIfindex, u32(uint32(ifindex))), nested(attrRXSCConfig, Attr(rxscSCI, be64(sci))), s.attrs())
}

// AddTXSA adds a transmit association.
func AddTXSA(ifindex int, s SA) []byte {
	return genl(CmdAddTXSA, Attr(attrIfindex, u32(uint32(ifindex))), s.attrs())
}

// DelRXSA deletes association an of receive channel sci.
func DelRXSA(ifindex int, sci uint64, an uint8) []byte {
	return genl(CmdDelRXSA, Attr(attrIfindex, u32(uint32(ifindex))), nested(attrRXSCConfig, Attr(rxscSCI, be64(sci))),
		nested(attrSAConfig, Attr(saAN, u8(an))))
}

// DelTXSA deletes transmit association an.
func DelTXSA(ifindex int, an uint8) []byte {
	return genl(CmdDelTXSA, Attr(attrIfindex, u32(uint32(ifindex))), nested(attrSAConfig, Attr(saAN, u8(an))))
}

// UpdTXSA moves transmit association an's packet number to pn.
func UpdTXSA(ifindex int, an uint8, pn uint64) []byte {
	return genl(CmdUpdTXSA, Attr(attrIfindex, u32(uint32(ifindex))), nested(attrSAConfig, Attr(saAN, u8(an)), Attr(saPN, u64(pn))))
}

// UpdRXSA moves receive association an of channel sci's lowest accepted
// packet number to pn.
func UpdRXSA(ifindex int, sci uint64, an uint8, pn uint64) []byte {
	return genl(CmdUpdRXSA, Attr(attrIfindex, u32(uint32(ifindex))), nested(attrRXSCConfig, Attr(rxscSCI, be64(sci))),
		nested(attrSAConfig, Attr(saAN, u8(an)), Attr(saPN, u64(pn))))
}

// DeactivateTXSA marks transmit association an inactive: the kernel deletes
// only inactive associations.
func DeactivateTXSA(ifindex int, an uint8) []byte {
	return genl(CmdUpdTXSA, Attr(attrIfindex, u32(uint32(ifindex))), nested(attrSAConfig, Attr(saAN, u8(an)), Attr(saActive, u8(0))))
}

// DeactivateRXSA marks receive association an of channel sci inactive.
func DeactivateRXSA(ifindex int, sci uint64, an uint8) []byte {
	return genl(CmdUpdRXSA, Attr(attrIfindex, u32(uint32(ifindex))), nested(attrRXSCConfig, Attr(rxscSCI, be64(sci))),
		nested(attrSAConfig, Attr(saAN, u8(an)), Attr(saActive, u8(0))))
}
