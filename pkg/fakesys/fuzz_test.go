package fakesys

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("../../testdata/fixtures/*.json")
	for _, p := range seeds {
		if b, err := os.ReadFile(p); err == nil && len(b) < 12000 {
			f.Add(b)
		}
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"schemaVersion":1,"name":"x","numa":[{"id":0,"cpus":"0-3"}],"roots":[{"bus":"00","numa":0,"children":[]}],"expected":{"gpuNic":{},"inventory":{}}}`))
	f.Add([]byte(`{"schemaVersion":1,"name":"x","numa":[{"id":0,"cpus":"0"}],"roots":[{"bus":"00","numa":0,"children":[{"bdf":"0000:00:01.0","type":"nic","vendor":"0x15b3","device":"0x1021","class":"0x020000","driver":"mlx5_core","netdev":"eth0","linkLayer":"ethernet","mac":"02:00:00:00:00:01","mtu":1500,"speedMbps":1000,"operstate":"up","sriov":{"totalVfs":255,"numVfs":255,"vfDevice":"0x101e","vfOffset":250,"vfStride":7,"vfDriver":"x","vfNetdev":"v{n:04x}","vfMac":"02:00:00:00:{n:02x}:01"}}]}],"expected":{"gpuNic":{},"inventory":{"pfs":1,"vfs":255,"netdevs":256}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data)
		if err != nil {
			return
		}
		// Whatever validates can be walked without panicking, and its VFs
		// have parseable, unique addresses.
		fns, err := m.Functions()
		if err != nil {
			t.Fatalf("valid machine, Functions: %v", err)
		}
		seen := map[string]bool{}
		for _, fn := range fns {
			if seen[fn.BDF] {
				t.Fatalf("duplicate function %s in a valid machine", fn.BDF)
			}
			seen[fn.BDF] = true
		}
	})
}

var rePlain = regexp.MustCompile(`^[^{}]*$`)

func FuzzExpandPattern(f *testing.F) {
	for _, s := range []string{"ibp24s0v{n}", "mlx5_{n+12}", "02:00:29:00:00:{n:02x}", "b83f:d203:00e1:18{n:02x}", "{n+1:04x}", "{", "}", "{n:q}", "{n+-1}"} {
		f.Add(s, 3)
	}
	f.Fuzz(func(t *testing.T, p string, n int) {
		if n < 0 || n > 1<<20 {
			return
		}
		out, err := expandPattern(p, n)
		if err != nil {
			return
		}
		if !rePlain.MatchString(out) {
			t.Fatalf("expandPattern(%q, %d) = %q still has braces", p, n, out)
		}
		if rePlain.MatchString(p) && out != p {
			t.Fatalf("pattern without placeholders changed: %q -> %q", p, out)
		}
	})
}
