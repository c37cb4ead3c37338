package discovery_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/railnet/railnet/pkg/discovery"
	"github.com/railnet/railnet/pkg/fakesys/fakesystest"
	"github.com/railnet/railnet/pkg/sysfs"
	"github.com/railnet/railnet/pkg/topology"
)

// BenchmarkScanVFScale is a full discovery plus topology of vf-scale.json:
// 8 GPUs, 8 PFs x 127 VFs, 1,024 netdevs and RDMA devices.
func BenchmarkScanVFScale(b *testing.B) {
	for _, mode := range []struct {
		name string
		opts []sysfs.Option
	}{{"openat2", nil}, {"walk", []sysfs.Option{sysfs.WithoutOpenat2()}}} {
		b.Run(mode.name, func(b *testing.B) { scanBench(b, "vf-scale", 1024, false, mode.opts) })
	}
	// The daemon's scan: what pools use of each VF (railnetctl scans in full).
	b.Run("openat2-lean", func(b *testing.B) { scanBench(b, "vf-scale", 1024, true, nil) })
	// 8 PFs x 512 VFs.
	b.Run("4096-VFs", func(b *testing.B) { scanBench(b, "vf-scale-4096", 4104, false, nil) })
	b.Run("4096-VFs-lean", func(b *testing.B) { scanBench(b, "vf-scale-4096", 4104, true, nil) })
}

func scanBench(b *testing.B, fixture string, nics int, lean bool, opts []sysfs.Option) {
	_, tree := fakesystest.Build(b, fixture)
	s := discovery.NewScanner(fakesystest.Open(b, tree, opts...))
	if lean {
		s = s.Lean()
	}
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	for b.Loop() {
		inv, err := s.Scan()
		if err != nil {
			b.Fatal(err)
		}
		topo := topology.Build(inv)
		if len(inv.NICs) != nics || len(topo.GPUs) != 8 || len(inv.Warnings) != 0 {
			b.Fatalf("scan found %d NICs, %d GPUs, warnings %v", len(inv.NICs), len(topo.GPUs), inv.Warnings)
		}
	}
	b.StopTimer()
	// CPU beside wall: how much of the machine a scan takes (the workers
	// and the class-link readers run in parallel).
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/op")
}

// cpuTime is the process's user and system time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
