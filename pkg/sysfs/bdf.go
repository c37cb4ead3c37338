package sysfs

import (
	"fmt"
	"strconv"
	"strings"
)

// BDF is a PCI address: domain, bus, device (0-31) and function (0-7).
type BDF struct {
	Domain   uint32
	Bus      uint8
	Device   uint8
	Function uint8
}

// ParseBDF accepts the kernel's "dddd:bb:dd.f" and the short "bb:dd.f"
// (domain 0), in either case. Domains wider than 4 hex digits exist (Intel
// VMD, Hyper-V) and are kept.
func ParseBDF(s string) (BDF, error) {
	var b BDF
	orig := s
	parts := strings.Split(s, ":")
	switch len(parts) {
	case 2:
		parts = append([]string{"0000"}, parts...)
	case 3:
	default:
		return b, fmt.Errorf("invalid PCI address %q: want dddd:bb:dd.f", orig)
	}
	devfn := strings.Split(parts[2], ".")
	if len(devfn) != 2 {
		return b, fmt.Errorf("invalid PCI address %q: want dddd:bb:dd.f", orig)
	}
	dom, err := parseHex(parts[0], 4, 8)
	if err != nil {
		return b, fmt.Errorf("invalid PCI address %q: domain: %w", orig, err)
	}
	bus, err := parseHex(parts[1], 2, 2)
	if err != nil {
		return b, fmt.Errorf("invalid PCI address %q: bus: %w", orig, err)
	}
	dev, err := parseHex(devfn[0], 2, 2)
	if err != nil || dev > 0x1f {
		return b, fmt.Errorf("invalid PCI address %q: device must be 00-1f", orig)
	}
	fn, err := parseHex(devfn[1], 1, 1)
	if err != nil || fn > 7 {
		return b, fmt.Errorf("invalid PCI address %q: function must be 0-7", orig)
	}
	return BDF{Domain: uint32(dom), Bus: uint8(bus), Device: uint8(dev), Function: uint8(fn)}, nil
}

func parseHex(s string, minLen, maxLen int) (uint64, error) {
	if len(s) < minLen || len(s) > maxLen {
		return 0, fmt.Errorf("%q: want %d to %d hex digits", s, minLen, maxLen)
	}
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return 0, fmt.Errorf("%q is not hex", s)
		}
	}
	return strconv.ParseUint(s, 16, 32)
}

// String is the kernel's form, lower case: "0000:18:00.1".
func (b BDF) String() string {
	return fmt.Sprintf("%04x:%02x:%02x.%x", b.Domain, b.Bus, b.Device, b.Function)
}

// RID is the PCIe routing ID: bus << 8 | device << 3 | function.
func (b BDF) RID() uint16 { return uint16(b.Bus)<<8 | uint16(b.Device)<<3 | uint16(b.Function) }

// FromRID builds the BDF with routing ID rid in domain.
func FromRID(domain uint32, rid uint16) BDF {
	return BDF{Domain: domain, Bus: uint8(rid >> 8), Device: uint8(rid>>3) & 0x1f, Function: uint8(rid) & 7}
}

// Less orders BDFs as PCI enumeration does (domain, bus, device, function).
func (b BDF) Less(o BDF) bool { return b.Compare(o) < 0 }

// Compare returns -1, 0 or 1.
func (b BDF) Compare(o BDF) int {
	x := uint64(b.Domain)<<16 | uint64(b.RID())
	y := uint64(o.Domain)<<16 | uint64(o.RID())
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

// IsBDF reports whether s is a full "dddd:bb:dd.f" address, the form of
// directory names below /sys/devices.
func IsBDF(s string) bool {
	if strings.Count(s, ":") != 2 {
		return false
	}
	_, err := ParseBDF(s)
	return err == nil
}

// CompareBDFStrings orders two address strings by PCI order, falling back to
// string order for anything unparsable, so sorting never fails.
func CompareBDFStrings(a, b string) int {
	// The kernel's own form, dddd:bb:dd.f in lower-case hex, sorts as
	// text: no parsing (sorting 2,000 functions parsed each name ~20 times).
	if canonicalBDF(a) && canonicalBDF(b) {
		return strings.Compare(a, b)
	}
	x, errA := ParseBDF(a)
	y, errB := ParseBDF(b)
	if errA != nil || errB != nil {
		return strings.Compare(a, b)
	}
	return x.Compare(y)
}

// canonicalBDF: "dddd:bb:dd.f", lower-case hex, device ≤ 0x1f, function ≤ 7;
// such strings order by text exactly as by (domain, bus, device, function).
func canonicalBDF(s string) bool {
	if len(s) != 12 || s[4] != ':' || s[7] != ':' || s[10] != '.' || s[11] < '0' || s[11] > '7' || s[8] > '1' {
		return false
	}
	for _, i := range [...]int{0, 1, 2, 3, 5, 6, 8, 9} {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
