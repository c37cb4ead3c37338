package agent

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

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
