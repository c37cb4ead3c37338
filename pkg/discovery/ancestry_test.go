package discovery

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestAncestry(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"devices/pci0000:15/0000:15:01.0/0000:16:00.0", []string{"pci0000:15", "0000:15:01.0", "0000:16:00.0"}},
		// Hyper-V/Azure: host bridges hang off VMBus; everything before them is dropped.
		{"devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0004:00/VMBUS:00/7870a5c8-0001-4ed5-a3c2-6a2f1c1b1a2b/pci7870:00/7870:00:00.0",
			[]string{"pci7870:00", "7870:00:00.0"}},
		// ARM platform buses before the host bridge.
		{"devices/platform/soc/fc800000.pcie/pci0000:00/0000:00:00.0/0000:01:00.0", []string{"pci0000:00", "0000:00:00.0", "0000:01:00.0"}},
		// Intel VMD: a second host bridge nested below a root port stays an element.
		{"devices/pci0000:00/0000:00:0e.0/pci10000:e0/10000:e0:1d.0/10000:e1:00.0",
			[]string{"pci0000:00", "0000:00:0e.0", "pci10000:e0", "10000:e0:1d.0", "10000:e1:00.0"}},
		{"devices/virtual/net/lo", nil},
	} {
		if got := ancestry(tc.in); !cmp.Equal(got, tc.want) {
			t.Errorf("ancestry(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
