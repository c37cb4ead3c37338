package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
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
			conf := map[string]any{"type": plugin}
			if plugin == "railnet" {
				conf["sysfsRoot"], conf["stateDir"], conf["deviceID"] = e.sys, e.state, vfBDF(0)
			} else {
				conf["device"] = e.vfName(0)
			}
			addDel(b, e, e.netns(b), conf, "198.18.82.0/24")
			if _, ok := hostLink(b, e.vfName(0)); !ok {
				b.Fatal("device not back in the host")
			}
		})
	}
}

// BenchmarkCNISharedSlot is ADD+DEL through libcni of a macvlan child of a
// shared HCA's netdev (a veth stand-in), railnet (slot BDF#0, attach
// macvlan by default) beside the reference macvlan plugin (v1.10.0) making
// the same child with the same IPAM.
func BenchmarkCNISharedSlot(b *testing.B) {
	for _, plugin := range []string{"railnet", "macvlan"} {
		b.Run(plugin, func(b *testing.B) {
			e := newSharedEnv(b)
			pod := e.netns(b)
			conf := map[string]any{"type": plugin}
			if plugin == "railnet" {
				conf["sysfsRoot"], conf["stateDir"], conf["deviceID"] = e.sys, e.state, e.slot(0)
			} else {
				conf["master"], conf["mode"] = e.parent(), "bridge"
			}
			addDel(b, e, pod, conf, "198.18.83.0/24")
			if links := podLinks(b, pod); len(links) != 0 {
				b.Fatalf("the pod kept %v", links)
			}
		})
	}
}

// addDel times ADD and DEL of one plugin configuration (host-local in
// subnet added) through libcni, and reports each on its own: ADD is what
// a pod's start waits for.
func addDel(b *testing.B, e *cniEnv, pod string, conf map[string]any, subnet string) {
	conf["ipam"] = map[string]any{"type": "host-local", "dataDir": e.ipamDir, "ranges": []any{[]any{map[string]string{"subnet": subnet}}}}
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
	b.ReportMetric(float64(add.Microseconds())/float64(n), "add-µs/op")
	b.ReportMetric(float64(del.Microseconds())/float64(n), "del-µs/op")
}

// BenchmarkCNISharedConcurrent is 16 ADDs at once on 16 slots of one HCA
// (then 16 DELs at once): the wall time of the batch, and the slowest ADD
// in it, which is what the last pod's start waits for.
func BenchmarkCNISharedConcurrent(b *testing.B) {
	const n = 16
	e := newSharedEnv(b)
	list := e.sharedList(b, nil)
	nss := make([]string, n)
	for i := range n {
		nss[i] = e.netns(b)
	}
	ctx := context.Background()
	var worst, batch time.Duration
	rounds := 0
	b.ResetTimer()
	for b.Loop() {
		lat := make([]time.Duration, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		t0 := time.Now()
		for i := range n {
			wg.Go(func() {
				s := time.Now()
				_, errs[i] = e.newCNI().AddNetworkList(ctx, list, rt(fmt.Sprintf("cb%d", i), nss[i], "net1", e.slot(i)))
				lat[i] = time.Since(s)
			})
		}
		wg.Wait()
		batch += time.Since(t0)
		for i, err := range errs {
			if err != nil {
				b.Fatalf("ADD %d: %v", i, err)
			}
			worst = max(worst, lat[i])
		}
		b.StopTimer()
		for i := range n {
			wg.Go(func() {
				errs[i] = e.newCNI().DelNetworkList(ctx, list, rt(fmt.Sprintf("cb%d", i), nss[i], "net1", e.slot(i)))
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				b.Fatalf("DEL %d: %v", i, err)
			}
		}
		rounds++
		b.StartTimer()
	}
	b.ReportMetric(float64(batch.Milliseconds())/float64(rounds), "batch-ms")
	b.ReportMetric(float64(worst.Milliseconds()), "slowest-add-ms")
}
