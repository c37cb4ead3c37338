package pools

import "testing"

// The daemon's pool config (JSON or YAML, from a ConfigMap) parses or is
// refused with an error; no panic, no hang.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"resourcePrefix: railnet.io\nrailPools: true\nrailMaxClass: PHB\n",
		"pools:\n- name: s\n  kind: sriov\n  selectors: {pfNames: [\"enp1s0#0-3,6\"], vendors: [\"15b3\"]}\n",
		"pools:\n- name: h\n  kind: rdma\n  shared: 16\n  selectors: {linkTypes: [infiniband]}\n",
		`{"pools":[{"name":"x","selectors":{"pfNames":["a#9999999999-1"]}}]}`,
		"pools: [{name: a, selectors: {gpuClass: NOPE}}]", "- - - [", "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err == nil && c == nil {
			t.Fatal("nil config without an error")
		}
	})
}
