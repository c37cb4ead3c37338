package sysfs

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestParseBDF(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		rid  uint16
		ok   bool
	}{
		{"0000:18:00.1", "0000:18:00.1", 0x1801, true},
		{"18:00.1", "0000:18:00.1", 0x1801, true},
		{"0000:AF:1F.7", "0000:af:1f.7", 0xafff, true},
		{"10000:e0:1d.0", "10000:e0:1d.0", 0xe0e8, true},
		{"0000:18:20.0", "", 0, false},
		{"0000:18:00.8", "", 0, false},
		{"0000:18:00", "", 0, false},
		{"0000:1:00.0", "", 0, false},
		{"000g:18:00.0", "", 0, false},
		{"", "", 0, false},
		{"0000:18:00.0.1", "", 0, false},
		{"a:b:c:d", "", 0, false},
	} {
		b, err := ParseBDF(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseBDF(%q) error = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if tc.ok && (b.String() != tc.want || b.RID() != tc.rid) {
			t.Errorf("ParseBDF(%q) = %s rid %#x, want %s rid %#x", tc.in, b, b.RID(), tc.want, tc.rid)
		}
	}
}

func TestVFAddressArithmetic(t *testing.T) {
	// The worked example of the fixtures README: PF 0000:29:00.1, offset 17, stride 1.
	pf, _ := ParseBDF("0000:29:00.1")
	for n, want := range map[int]string{0: "0000:29:02.2", 3: "0000:29:02.5", 15: "0000:29:04.1"} {
		got := FromRID(pf.Domain, pf.RID()+17+uint16(n))
		if got.String() != want {
			t.Errorf("VF%d = %s, want %s", n, got, want)
		}
	}
}

func FuzzParseBDF(f *testing.F) {
	for _, s := range []string{"0000:18:00.1", "18:00.1", "10000:e0:1d.0", "ffff:ff:1f.7", "0000:18:20.0", "::.", "0:0:0.0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseBDF(s)
		if err != nil {
			return
		}
		// Whatever parses must print back to something that parses to the same address.
		again, err := ParseBDF(b.String())
		if err != nil || again != b {
			t.Fatalf("ParseBDF(%q) = %v; reparse of %q = %v, %v", s, b, b.String(), again, err)
		}
		if b.Device > 0x1f || b.Function > 7 {
			t.Fatalf("ParseBDF(%q) accepted device %x function %x", s, b.Device, b.Function)
		}
	})
}

// The text fast path orders canonical addresses exactly as parsing does,
// and mixed or odd forms still order by PCI order or text.
func TestCompareBDFStringsFastPath(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var addrs []string
	for range 3000 {
		addrs = append(addrs, fmt.Sprintf("%04x:%02x:%02x.%d", r.IntN(3)*0x10, r.IntN(256), r.IntN(32), r.IntN(8)))
	}
	addrs = append(addrs, "0000:0A:00.1", "10000:00:00.0", "not-a-bdf", "0000:00:1f.7")
	for i := range addrs {
		for j := i; j < len(addrs) && j < i+40; j++ {
			a, b := addrs[i], addrs[j]
			x, errA := ParseBDF(a)
			y, errB := ParseBDF(b)
			want := strings.Compare(a, b)
			if errA == nil && errB == nil {
				want = x.Compare(y)
			}
			if got := CompareBDFStrings(a, b); sign(got) != sign(want) {
				t.Fatalf("CompareBDFStrings(%s, %s) = %d, want %d", a, b, got, want)
			}
		}
	}
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}
