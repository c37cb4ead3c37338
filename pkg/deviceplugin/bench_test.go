package deviceplugin

import (
	"fmt"
	"testing"
)

// BenchmarkPreferred is the selection alone (no gRPC): 8 of 1,016.
func BenchmarkPreferred(b *testing.B) {
	byID := map[string]*Device{}
	var ids []string
	for pf := range 8 {
		for vf := range 127 {
			id := fmt.Sprintf("0000:%02x:%02x.%d", 0x18+pf, vf/8, vf%8)
			byID[id] = &Device{ID: id, NUMA: pf / 4, PF: fmt.Sprint(pf), Rail: fmt.Sprint(pf), Healthy: true}
			ids = append(ids, id)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if got, err := preferred(byID, ids, ids[100:101], 8); err != nil || len(got) != 8 {
			b.Fatal(got, err)
		}
	}
}
