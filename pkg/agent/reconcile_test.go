package agent

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/railnet/railnet/pkg/state"
)

// Shutdown does not kill a DEL in progress: Run returns after it finished.
func TestReconcilerFinishesItsDELOnShutdown(t *testing.T) {
	dir := t.TempDir()
	store, err := state.Open(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Save(&state.Record{ContainerID: "c", IfName: "net1", Netns: filepath.Join(dir, "gone-netns"),
		BDF: "0000:18:00.1", DeviceID: "0000:18:00.1"}); err != nil {
		t.Fatal(err)
	}
	started, finished := filepath.Join(dir, "started"), filepath.Join(dir, "finished")
	cni := filepath.Join(dir, "fake-cni")
	script := "#!/bin/sh\ntouch " + started + "\nsleep 1\ntouch " + finished + "\n"
	if err := os.WriteFile(cni, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	r := &Reconciler{StateDir: store.Dir(), CNIBinary: cni}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx, time.Hour); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(started); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the DEL never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if _, err := os.Stat(finished); err != nil {
		t.Errorf("Run returned with its DEL killed: %v", err)
	}
}

// A link event subscription that ends (ENOBUFS) is opened again, counted,
// followed by a rescan; events on it trigger rescans.
func TestWatchLinksResubscribes(t *testing.T) {
	var calls int
	subscribe := func(ch chan<- netlink.LinkUpdate, done <-chan struct{}) error {
		calls++
		switch calls {
		case 1:
			go func() { ch <- netlink.LinkUpdate{}; close(ch) }() // one event, then the socket fails
		case 2:
			return errors.New("no netlink socket for now")
		default:
			go func() { ch <- netlink.LinkUpdate{}; <-done; close(ch) }()
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	triggers := make(chan struct{}, 16)
	counter := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
	done := make(chan struct{})
	go func() {
		WatchLinks(ctx, subscribe, func() { triggers <- struct{}{} }, counter, slog.New(slog.DiscardHandler))
		close(done)
	}()
	// 1 event, then on the third subscription a catch-up rescan and 1 event.
	for i := 0; i < 3; i++ {
		select {
		case <-triggers:
		case <-time.After(5 * time.Second):
			t.Fatalf("%d rescans triggered, want 3 (subscriptions: %d)", i, calls)
		}
	}
	cancel()
	<-done
	if got := testutil.ToFloat64(counter); got != 1 || calls != 3 {
		t.Errorf("resubscriptions counted %v, subscribe calls %d; want 1 and 3", got, calls)
	}
}

// A DRA attachment is held while the kubelet lists its claim's device for
// the pod (pod-resources' dynamic resources); released when nobody does,
// and never kept for a device plugin device of the same BDF.
func TestVerdictDRAClaims(t *testing.T) {
	r := &Reconciler{}
	rec := &state.Record{ContainerID: "c", IfName: "net1", DeviceID: "0000:06:00.2", BDF: "0000:06:00.2", PodNamespace: "ns", PodName: "p",
		Claim: &state.ClaimRef{Driver: "railnet.io", Pool: "node/e2e-dra", Device: "pci-0000-06-00-2"}}
	id := DRAHeldID("railnet.io", "node/e2e-dra", "pci-0000-06-00-2")
	for _, tc := range []struct {
		held map[string][]PodRef
		want string
	}{
		{map[string][]PodRef{id: {{Namespace: "ns", Name: "p"}}}, reasonKeepHeld},
		{map[string][]PodRef{id: {{Namespace: "ns", Name: "q"}}}, ReasonOtherPod},
		{map[string][]PodRef{}, ReasonNoPod},
		{map[string][]PodRef{DRAHeldID("gpu.example.com", "node/e2e-dra", "pci-0000-06-00-2"): {{Namespace: "ns", Name: "p"}}}, ReasonNoPod},
	} {
		if got, detail := r.verdict(rec, tc.held, true); got != tc.want {
			t.Errorf("held %v: %s (%s), want %s", tc.held, got, detail, tc.want)
		}
	}
	if DRAHeldID("gpu.example.com", "x", "y") != "" {
		t.Error("another driver's device is named")
	}
}

// The host's /var/run is a symlink to /run: a netns path resolves inside
// the host root, not in this process's /run.
func TestNetnsExistsResolvesInHostRoot(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "run", "netns"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/run", filepath.Join(root, "var-run")); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(root, "var"), 0o755)
	if err := os.Rename(filepath.Join(root, "var-run"), filepath.Join(root, "var", "run")); err != nil {
		t.Fatal(err)
	}
	name := "rn-test-" + filepath.Base(root)
	if err := os.WriteFile(filepath.Join(root, "run", "netns", name), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := &Reconciler{HostRoot: root}
	if err := r.netnsExists("/var/run/netns/" + name); err != nil {
		t.Fatalf("a netns in the host root's /run, through /var/run: %v", err)
	}
	if err := r.netnsExists("/var/run/netns/" + name + "-gone"); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("a missing netns: %v, want ENOENT", err)
	}
	// Not this process's /run: a file there is not the host's.
	if _, err := os.Stat("/run/netns/" + name); err == nil {
		t.Fatal("test name collides with this host's /run")
	}
}
