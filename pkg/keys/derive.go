package keys

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"net/netip"
	"time"
)

// Derivations: every value an attachment installs comes from the admin's
// key and public facts (key id, addresses), through HKDF-SHA256 with a
// label per use, so two nodes that never talked derive the same values,
// and no two uses share a key.

const salt = "railnet encryption v1"

func derive(secret []byte, label string, n int, parts ...[]byte) []byte {
	info := []byte(label)
	for _, p := range parts {
		info = append(info, 0)
		info = append(info, p...)
	}
	out, err := hkdf.Key(sha256.New, secret, []byte(salt), string(info), n)
	if err != nil {
		panic(err) // only for n > 255*32
	}
	return out
}

func addr16(a netip.Addr) []byte {
	b := a.As16()
	return b[:]
}

// ESP is the material of the one SA that carries src→dst under k: the
// AES-GCM key followed by rfc4106's 4-byte salt, as the kernel's
// rfc4106(gcm(aes)) takes them. Each direction of each pair has its own
// key, so a key's only sender is src.
func ESP(k Key, src, dst netip.Addr) []byte { return NewESP(k).Derive(src, dst) }

// ESPDeriver derives many SAs' material under one key: HKDF's extract step
// (the same for all of them) once, its expand step per SA. The expand step
// is RFC 5869's, on the standard library's HMAC-SHA256 keyed once with the
// PRK (crypto/hkdf.Expand keys a new HMAC per call: a /22 attachment
// derives two thousand SAs, and the allocations were most of its cost).
// Tests hold it equal to crypto/hkdf.Expand.
type ESPDeriver struct {
	prk  []byte
	k    Key
	mac  hash.Hash
	info [3 + 3 + 16 + 1 + 16]byte
	t    [sha256.Size]byte
	sum  []byte
}

// NewESP starts the derivations of key k.
func NewESP(k Key) *ESPDeriver {
	prk, err := hkdf.Extract(sha256.New, k.Secret, []byte(salt))
	if err != nil {
		panic(err)
	}
	d := &ESPDeriver{prk: prk, k: k, mac: hmac.New(sha256.New, prk)}
	copy(d.info[:], "esp")
	d.info[4] = k.ID
	d.sum = make([]byte, 0, sha256.Size)
	return d
}

// Len is the length of the material of one SA.
func (d *ESPDeriver) Len() int { return Algorithms[d.k.Algorithm] + 4 }

// Derive is ESP(k, src, dst).
func (d *ESPDeriver) Derive(src, dst netip.Addr) []byte {
	out := make([]byte, d.Len())
	d.DeriveTo(out, src, dst)
	return out
}

// DeriveTo writes ESP(k, src, dst) to out (Len bytes): HKDF-Expand's
// T(1) | T(2) ..., T(i) = HMAC(PRK, T(i-1) | info | i).
func (d *ESPDeriver) DeriveTo(out []byte, src, dst netip.Addr) {
	info := d.info[:]
	copy(info[6:22], addr16(src))
	copy(info[23:39], addr16(dst))
	var prev []byte
	for i, n := byte(1), 0; n < len(out); i++ {
		d.mac.Reset()
		d.mac.Write(prev)
		d.mac.Write(info)
		d.t[0] = i
		d.mac.Write(d.t[:1])
		prev = d.mac.Sum(d.sum[:0])
		n += copy(out[n:], prev)
	}
	clear(d.sum[:cap(d.sum)])
}

// Wipe clears the derivation key.
func (d *ESPDeriver) Wipe() {
	clear(d.prk)
	clear(d.sum[:cap(d.sum)])
	d.mac = nil
}

// SPI is the SPI of the SA from the peer with host index srcIndex in the
// subnet under key id: the key id in the top byte, the index below. A
// receiver's SAs (looked up by destination and SPI) never collide, and
// the SPI says which key a packet used.
func SPI(id uint8, srcIndex uint32) uint32 { return uint32(id)<<24 | srcIndex&0xffffff }

// SPIKeyID is the key id an SPI of SPI's was made with.
func SPIKeyID(spi uint32) uint8 { return uint8(spi >> 24) }

// MACsecSAK is the MACsec secure association key of key id k: one per key
// id, shared by every member of the network (each sender has its own SCI
// and, with XPN, its own SSCI and salt, so no two senders share a nonce).
func MACsecSAK(k Key) []byte {
	return derive(k.Secret, "macsec sak", Algorithms[k.Algorithm], []byte{k.ID})
}

// MACsecSalt is the 12-byte XPN salt of the SAs of key k.
func MACsecSalt(k Key) []byte { return derive(k.Secret, "macsec salt", 12, []byte{k.ID}) }

// MACsecKeyID is the 16-byte key identifier (KI) of key k's SAs: derived,
// so every node names the key alike without saying anything about it.
func MACsecKeyID(k Key) []byte { return derive(k.Secret, "macsec ki", 16, []byte{k.ID}) }

// SCI is the MACsec secure channel identifier of the member with address
// a: a locally administered MAC-like 48-bit value from the address, and
// port 1. Every peer computes a member's SCI from its address alone.
func SCI(a netip.Addr) uint64 {
	h := sha256.Sum256(append([]byte("railnet sci\x00"), addr16(a)...))
	b := h[:8]
	b[0] = (b[0] | 0x02) &^ 0x01 // locally administered, unicast
	b[6], b[7] = 0, 1
	return binary.BigEndian.Uint64(b)
}

// SSCI is the XPN short secure channel identifier of the member with host
// index i: unique in the subnet.
func SSCI(i uint32) uint32 { return i + 1 }

// StartSequence is where a new SA's 64-bit outbound sequence (ESP with
// ESN) starts: the time in microseconds. An SA re-created for the same key
// and pair (a pod restarted with the same address) starts above every
// number its predecessor used unless that one sent more than a million
// packets a second over its whole life, so no nonce repeats and the peer's
// replay window takes it at once. The high word (the time in units of
// 2^32 µs, about 71.6 minutes) is what a receiver expects (see
// docs/encryption.md).
func StartSequence(now time.Time) uint64 { return uint64(now.UnixMicro()) }
