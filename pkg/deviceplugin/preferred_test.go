package deviceplugin

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

func TestEnvName(t *testing.T) {
	for in, want := range map[string]string{
		"railnet.io/rail0":      "PCIDEVICE_RAILNET_IO_RAIL0",
		"example.com/ib-shared": "PCIDEVICE_EXAMPLE_COM_IB_SHARED",
	} {
		if got := EnvName(in); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestKubeletDevicesNUMAHint(t *testing.T) {
	l := kubeletDevices(Pool{Devices: []Device{{ID: "a", NUMA: 1, Healthy: true}, {ID: "b", NUMA: -1}}})
	if l[0].Topology == nil || l[0].Topology.Nodes[0].ID != 1 || l[0].Health != pluginapi.Healthy {
		t.Errorf("a = %v", l[0])
	}
	if l[1].Topology != nil || l[1].Health != pluginapi.Unhealthy {
		t.Errorf("b (NUMA unknown) = %v, want no Topology", l[1])
	}
}

// pool of 2 NUMA nodes x 2 PFs x 4 VFs.
func testPool() map[string]*Device {
	m := map[string]*Device{}
	for numa := range 2 {
		for pf := range 2 {
			for vf := range 4 {
				id := fmt.Sprintf("n%d-pf%d-vf%d", numa, pf, vf)
				m[id] = &Device{ID: id, NUMA: numa, PF: fmt.Sprintf("n%d-pf%d", numa, pf), Rail: fmt.Sprintf("rail%d", numa*2+pf), Healthy: true}
			}
		}
	}
	return m
}

func TestPreferred(t *testing.T) {
	byID := testPool()
	var all []string
	for id := range byID {
		all = append(all, id)
	}
	slices.Sort(all)
	for _, tc := range []struct {
		name      string
		avail     []string
		must      []string
		size      int
		want      []string
		wantError bool
	}{
		{"two: one NUMA, two PFs", all, nil, 2, []string{"n0-pf0-vf0", "n0-pf1-vf0"}, false},
		{"must on NUMA 1", all, []string{"n1-pf1-vf3"}, 3, []string{"n1-pf1-vf3", "n1-pf0-vf0", "n1-pf0-vf1"}, false},
		{"NUMA that fits wins", append(slices.Clone(all[:3]), all[8:]...), nil, 4, []string{"n1-pf0-vf0", "n1-pf1-vf0", "n1-pf0-vf1", "n1-pf1-vf1"}, false},
		{"spill over", all, nil, 10, nil, false},
		{"too many", all[:2], nil, 3, nil, true},
		{"must larger than size", all, all[:3], 2, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := preferred(byID, tc.avail, tc.must, tc.size)
			if (err != nil) != tc.wantError {
				t.Fatalf("err = %v", err)
			}
			if tc.wantError {
				return
			}
			if len(got) != tc.size {
				t.Fatalf("got %d devices: %v", len(got), got)
			}
			if tc.want != nil && !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
			for _, m := range tc.must {
				if !slices.Contains(got, m) {
					t.Errorf("must-include %s missing from %v", m, got)
				}
			}
			if tc.name == "spill over" {
				n0 := 0
				for _, id := range got {
					if byID[id].NUMA == 0 {
						n0++
					}
				}
				if n0 != 8 && n0 != 2 {
					t.Errorf("10 devices should fill one NUMA node first: %v", got)
				}
			}
		})
	}
	// Unhealthy devices are not preferred while healthy ones remain.
	byID["n0-pf0-vf0"].Healthy = false
	got, _ := preferred(byID, all, nil, 1)
	if got[0] == "n0-pf0-vf0" {
		t.Errorf("picked an unhealthy device: %v", got)
	}
}

// TestPreferredMatchesReference: the grouped selection picks exactly what
// the first, scan-everything one did, over random pools (NUMA nodes, some
// unknown; PFs whose devices may disagree on rail or NUMA; unhealthy
// devices), random available sets in random order, must-include devices
// (some not in the pool) and sizes.
func TestPreferredMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 12))
	for round := range 3000 {
		byID := map[string]*Device{}
		var ids []string
		pfs := 1 + rng.IntN(6)
		for pf := range pfs {
			numa := rng.IntN(3) - 1
			rail := fmt.Sprintf("rail%d", rng.IntN(4))
			for vf := range 1 + rng.IntN(12) {
				d := &Device{ID: fmt.Sprintf("0000:%02x:%02x.%d", 0x10+pf, vf/8, vf%8), NUMA: numa, PF: fmt.Sprint(pf), Rail: rail, Healthy: rng.IntN(8) > 0}
				if rng.IntN(20) == 0 { // a device that disagrees with its PF
					d.NUMA, d.Rail = rng.IntN(2), fmt.Sprintf("rail%d", rng.IntN(4))
				}
				byID[d.ID] = d
				ids = append(ids, d.ID)
			}
		}
		avail := slices.Clone(ids)
		rng.Shuffle(len(avail), func(i, j int) { avail[i], avail[j] = avail[j], avail[i] })
		avail = avail[:1+rng.IntN(len(avail))]
		var must []string
		for range rng.IntN(3) {
			if rng.IntN(4) == 0 {
				must = append(must, "not-in-pool")
			} else {
				must = append(must, avail[rng.IntN(len(avail))])
			}
		}
		size := rng.IntN(len(avail) + 2)
		want, werr := referencePreferred(byID, avail, must, size)
		got, gerr := preferred(byID, avail, must, size)
		if (werr != nil) != (gerr != nil) || !slices.Equal(got, want) {
			t.Fatalf("round %d: size %d must %v avail %v:\ngot  %v %v\nwant %v %v", round, size, must, avail, got, gerr, want, werr)
		}
	}
}

// referencePreferred is the selection as it was first written (a scan of
// every candidate per pick): TestPreferredMatchesReference holds the
// grouped one to it.
//
// It was the selection behind GetPreferredAllocation: a set that
// holds every must-include device, sits on as few NUMA nodes as possible,
// and spreads over distinct rails and PFs; ties go to the lower ID.
func referencePreferred(byID map[string]*Device, available, must []string, size int) ([]string, error) {
	if err := preferredArgs(byID, available, must, size); err != nil {
		return nil, err
	}
	chosen := make([]string, 0, size)
	taken := make([]bool, len(byID)) // by ord
	var inSetUnknown []string        // chosen IDs that are no device of the pool
	var usedPF, usedRail []int
	use := func(counts []int, i int32) []int {
		for len(counts) <= int(i) {
			counts = append(counts, 0)
		}
		counts[i]++
		return counts
	}
	count := func(counts []int, i int32) int {
		if int(i) < len(counts) {
			return counts[i]
		}
		return 0
	}
	usedNUMA := map[int]bool{}
	isTaken := func(id string) bool {
		if d := byID[id]; d != nil {
			return taken[d.ord]
		}
		return slices.Contains(inSetUnknown, id)
	}
	take := func(id string) {
		chosen = append(chosen, id)
		d := byID[id]
		if d == nil {
			inSetUnknown = append(inSetUnknown, id)
			return
		}
		taken[d.ord] = true
		usedPF = use(usedPF, d.pfIdx)
		usedRail = use(usedRail, d.railIdx)
		usedNUMA[d.NUMA] = true
	}
	for _, m := range must {
		if !isTaken(m) {
			take(m)
		}
	}
	type cand struct {
		d    *Device
		rank int
	}
	cands := make([]cand, 0, len(available))
	perNUMA := map[int]int{}
	for _, a := range available {
		d := byID[a]
		if d == nil || !d.Healthy || taken[d.ord] {
			continue
		}
		cands = append(cands, cand{d: d})
		perNUMA[d.NUMA]++
	}
	// NUMA order: nodes already used first, then a node that can hold the
	// whole rest (most candidates first), unknown (-1) last.
	need := size - len(chosen)
	numaOrder := make([]int, 0, len(perNUMA))
	for n := range perNUMA {
		numaOrder = append(numaOrder, n)
	}
	sort.Slice(numaOrder, func(i, j int) bool {
		a, b := numaOrder[i], numaOrder[j]
		if (a < 0) != (b < 0) {
			return b < 0
		}
		if usedNUMA[a] != usedNUMA[b] {
			return usedNUMA[a]
		}
		fa, fb := perNUMA[a] >= need, perNUMA[b] >= need
		if fa != fb {
			return fa
		}
		if perNUMA[a] != perNUMA[b] {
			return perNUMA[a] > perNUMA[b]
		}
		return a < b
	})
	rank := make(map[int]int, len(numaOrder))
	for i, n := range numaOrder {
		rank[n] = i
	}
	for i := range cands {
		cands[i].rank = rank[cands[i].d.NUMA]
	}
	for len(chosen) < size {
		// Best next: lowest NUMA rank, then least-used rail and PF, then ID.
		best := -1
		var br, brail, bpf int
		for i := range cands {
			c := cands[i].d
			if taken[c.ord] {
				continue
			}
			r, cr, cp := cands[i].rank, count(usedRail, c.railIdx), count(usedPF, c.pfIdx)
			if best < 0 || r < br || (r == br && (cr < brail || (cr == brail && (cp < bpf || (cp == bpf && c.ord < cands[best].d.ord))))) {
				best, br, brail, bpf = i, r, cr, cp
			}
		}
		if best < 0 {
			break
		}
		take(cands[best].d.ID)
	}
	// Not enough healthy devices: fill from the rest of available, as asked.
	for _, a := range available {
		if len(chosen) == size {
			break
		}
		if !isTaken(a) {
			take(a)
		}
	}
	return chosen, nil
}
