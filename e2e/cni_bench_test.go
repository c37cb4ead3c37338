package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
)

// BenchmarkCNIAddDel is ADD+DEL through libcni of one veth stand-in into a
// pod, railnet beside the reference host-device plugin (v1.10.0) doing the
// same move with the same IPAM (host-local).
func BenchmarkCNIAddDel(b *testing.B) {
	for _, plugin := range []string{"railnet", "host-device"} {
		b.Run(plugin, func(b *testing.B) {
			e := newCNIEnv(b, 1)
			pod := e.netns(b)
			conf := map[string]any{"type": plugin,
				"ipam": map[string]any{"type": "host-local", "dataDir": e.ipamDir, "ranges": []any{[]any{map[string]string{"subnet": "198.18.82.0/24"}}}}}
			if plugin == "railnet" {
				conf["sysfsRoot"], conf["stateDir"], conf["deviceID"] = e.sys, e.state, vfBDF(0)
			} else {
				conf["device"] = e.vfName(0)
			}
			list := map[string]any{"cniVersion": "1.0.0", "name": "rn" + e.tag, "plugins": []any{conf}}
			raw, _ := json.Marshal(list)
			os.WriteFile(filepath.Join(e.confDir, "10.conflist"), raw, 0o644)
			l, err := libcni.LoadConfList(e.confDir, "rn"+e.tag)
			if err != nil {
				b.Fatal(err)
			}
			rc := &libcni.RuntimeConf{ContainerID: "bench", NetNS: pod, IfName: "net1"}
			ctx := context.Background()
			var add, del time.Duration
			n := 0
			b.ResetTimer()
			for b.Loop() {
				t0 := time.Now()
				if _, err := e.cni.AddNetworkList(ctx, l, rc); err != nil {
					b.Fatalf("ADD: %v", err)
				}
				t1 := time.Now()
				if err := e.cni.DelNetworkList(ctx, l, rc); err != nil {
					b.Fatalf("DEL: %v", err)
				}
				add, del, n = add+t1.Sub(t0), del+time.Since(t1), n+1
			}
			b.StopTimer()
			// ADD is what a pod's start waits for: reported on its own.
			b.ReportMetric(float64(add.Microseconds())/float64(n), "add-µs/op")
			b.ReportMetric(float64(del.Microseconds())/float64(n), "del-µs/op")
			if _, ok := hostLink(b, e.vfName(0)); !ok {
				b.Fatal("device not back in the host")
			}
		})
	}
}
