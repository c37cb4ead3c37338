package agent_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/railnet/railnet/pkg/agent"
	"github.com/railnet/railnet/pkg/deviceplugin"
	"github.com/railnet/railnet/pkg/deviceplugin/kubelettest"
	"github.com/railnet/railnet/pkg/fakesys/fakesystest"
)

const vfScaleConfig = `{"pools":[{"name":"vf","selectors":{"linkTypes":["ether"],"vendors":["15b3"],"devices":["101e"]}}]}`

// benchEnv serves vf-scale's 1,016 VFs as one pool to a fake kubelet.
func benchEnv(b *testing.B) (*kubelettest.Plugin, []string) {
	b.Helper()
	e := start(b, "vf-scale", vfScaleConfig)
	b.Cleanup(e.stop)
	reg := e.kubelet.WaitRegistration(b, "railnet.io/vf", 10*time.Second)
	p := e.kubelet.Dial(b, reg.Endpoint)
	list := kubelettest.Next(b, p.Watch(b), 5*time.Second, func([]*pluginapi.Device) bool { return true })
	if len(list) != 1016 {
		b.Fatalf("pool has %d devices, want 1016", len(list))
	}
	ids := make([]string, len(list))
	for i, d := range list {
		ids[i] = d.ID
	}
	return p, ids
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	p := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) }
	b.ReportMetric(p(0.50), "p50-µs")
	b.ReportMetric(p(0.99), "p99-µs")
}

// BenchmarkAllocate: one Allocate over gRPC (2 VFs, as a pod asking for two
// NICs), at 1,016 devices in the pool.
func BenchmarkAllocate(b *testing.B) {
	p, ids := benchEnv(b)
	ctx := context.Background()
	var lat []time.Duration
	i := 0
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		req := &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
			{DevicesIds: []string{ids[i%len(ids)], ids[(i+509)%len(ids)]}}}}
		t0 := time.Now()
		resp, err := p.Allocate(ctx, req)
		lat = append(lat, time.Since(t0))
		if err != nil || len(resp.ContainerResponses[0].Devices) != 7 {
			b.Fatalf("Allocate: %v %v", resp, err)
		}
		i++
	}
	reportPercentiles(b, lat)
}

// BenchmarkGetPreferredAllocation: choose 8 of 1,016 available devices.
func BenchmarkGetPreferredAllocation(b *testing.B) {
	p, ids := benchEnv(b)
	ctx := context.Background()
	req := &pluginapi.PreferredAllocationRequest{ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{
		{AvailableDeviceIDs: ids, MustIncludeDeviceIDs: ids[100:101], AllocationSize: 8}}}
	var lat []time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		resp, err := p.GetPreferredAllocation(ctx, req)
		lat = append(lat, time.Since(t0))
		if err != nil || len(resp.ContainerResponses[0].DeviceIDs) != 8 {
			b.Fatalf("GetPreferredAllocation: %v %v", resp, err)
		}
	}
	reportPercentiles(b, lat)
}

// BenchmarkStartToRegistered: from reading the config to the kubelet
// holding every registration, scan of vf-scale included: one pool of all
// 1,016 VFs, and 8 rail pools.
func BenchmarkStartToRegistered(b *testing.B) {
	b.Run("one-pool", func(b *testing.B) { startToRegistered(b, "vf-scale", vfScaleConfig, "railnet.io/vf") })
	b.Run("one-pool-4096", func(b *testing.B) { startToRegistered(b, "vf-scale-4096", vfScaleConfig, "railnet.io/vf") })
	rails := []string{}
	for i := range 8 {
		rails = append(rails, fmt.Sprintf("railnet.io/rail%d", i))
	}
	b.Run("8-rails", func(b *testing.B) { startToRegistered(b, "vf-scale", `{"railPools": true}`, rails...) })
}

func startToRegistered(b *testing.B, fixture, config string, resources ...string) {
	_, tree := fakesystest.Build(b, fixture)
	base := fakesystest.TempDir(b)
	cfg := filepath.Join(base, "c.json")
	os.WriteFile(cfg, []byte(config), 0o644)
	sys, dev := fakesystest.Open(b, tree)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		kdir := filepath.Join(base, "k", string(rune('a'+i%26))+time.Now().Format("150405.000000000"))
		os.MkdirAll(kdir, 0o755)
		k := kubelettest.Start(b, kdir)
		mgr := deviceplugin.NewManager(deviceplugin.Options{KubeletDir: kdir, DevInfoDir: filepath.Join(kdir, "devinfo")})
		a, err := agent.New(agent.Options{ConfigPath: cfg, Sys: sys, Dev: dev, Manager: mgr})
		if err != nil {
			b.Fatal(err)
		}
		if err := a.Rescan(); err != nil {
			b.Fatal(err)
		}
		for _, r := range resources {
			k.WaitRegistration(b, r, 10*time.Second)
		}
		b.StopTimer()
		mgr.Close()
		k.Stop()
		b.StartTimer()
	}
}

// BenchmarkReregisterAfterKubeletRestart: from a kubelet restart (its
// socket created anew) to every one of vf-scale's 8 rail pools registered
// again.
func BenchmarkReregisterAfterKubeletRestart(b *testing.B) {
	e := start(b, "vf-scale", `{"railPools": true}`)
	b.Cleanup(e.stop)
	rails := make([]string, 8)
	for i := range rails {
		rails[i] = fmt.Sprintf("railnet.io/rail%d", i)
	}
	for _, r := range rails {
		e.kubelet.WaitRegistration(b, r, 10*time.Second)
	}
	for b.Loop() {
		e.kubelet.Restart(b)
		for _, r := range rails {
			e.kubelet.WaitRegistration(b, r, 10*time.Second)
		}
	}
}
