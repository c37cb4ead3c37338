package e2e

import (
	"context"
	"slices"
	"testing"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/railnet/railnet/pkg/deviceplugin/kubelettest"
)

const vfScale = `{"pools":[{"name":"vf","selectors":{"vendors":["15b3"],"devices":["101e"]}}]}`

func percentiles(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	q := func(f float64) float64 { return float64(lat[int(f*float64(len(lat)-1))].Microseconds()) }
	b.ReportMetric(q(0.5), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
}

// BenchmarkDaemonVFScale runs the real daemon on vf-scale (1,016 VFs in one
// pool) and measures, from a separate process as the kubelet is:
// start-to-registered, Allocate and GetPreferredAllocation latency (and the
// floor: a call that does next to nothing), and the daemon's peak RSS.
func BenchmarkDaemonVFScale(b *testing.B) {
	for _, fx := range []struct {
		name string
		vfs  int
	}{{"vf-scale", 1016}, {"vf-scale-4096", 4096}} {
		for _, op := range []string{"Allocate", "GetPreferredAllocation", "Floor"} {
			b.Run(fx.name+"/"+op, func(b *testing.B) { daemonBench(b, fx.name, fx.vfs, op) })
		}
	}
}

func daemonBench(b *testing.B, fixture string, vfs int, op string) {
	d := startDaemon(b, fixture, vfScale)
	reg := d.kubelet.WaitRegistration(b, "railnet.io/vf", 20*time.Second)
	startup := time.Since(d.started)
	p := d.kubelet.Dial(b, reg.Endpoint)
	list := kubelettest.Next(b, p.Watch(b), 5*time.Second, func([]*pluginapi.Device) bool { return true })
	ids := make([]string, len(list))
	for i, dev := range list {
		ids[i] = dev.ID
	}
	if len(ids) != vfs {
		b.Fatalf("%d devices", len(ids))
	}
	ctx := context.Background()
	var lat []time.Duration
	gpa := &pluginapi.PreferredAllocationRequest{ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{
		{AvailableDeviceIDs: ids, MustIncludeDeviceIDs: ids[100:101], AllocationSize: 8}}}
	// Floor: the same call with 8 devices available, 8 wanted: the gRPC
	// round trip between two processes with next to no work in it.
	floor := &pluginapi.PreferredAllocationRequest{ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{
		{AvailableDeviceIDs: ids[:8], AllocationSize: 8}}}
	i := 0
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		var err error
		switch op {
		case "Allocate":
			_, err = p.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
				{DevicesIds: []string{ids[i%vfs], ids[(i+509)%vfs]}}}})
		case "Floor":
			_, err = p.GetPreferredAllocation(ctx, floor)
		default:
			_, err = p.GetPreferredAllocation(ctx, gpa)
		}
		lat = append(lat, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.StopTimer()
	percentiles(b, lat)
	b.ReportMetric(float64(startup.Milliseconds()), "start-to-registered-ms")
	if kb, err := vmHWM(d.cmd.Process.Pid); err == nil {
		b.ReportMetric(float64(kb)/1024, "daemon-peak-RSS-MiB")
	}
}
