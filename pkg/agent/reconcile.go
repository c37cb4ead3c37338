package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"time"

	"github.com/railnet/railnet/pkg/netdev"
	"github.com/railnet/railnet/pkg/state"
)

// Reconciler returns devices whose pod is gone. Multus sends GC only to the
// cluster network, so for railnet's secondary networks nobody else would:
// it runs the CNI's own DEL (the code that knows how to undo an
// attachment) for every record whose network namespace no longer exists.
type Reconciler struct {
	StateDir  string // the CNI's records (default /var/lib/cni/railnet)
	CNIBinary string // the railnet CNI binary
	CNIPath   string // where IPAM plugins are, as this process sees them; "" = the record's
	Logger    *slog.Logger
}

// Once checks every record and releases the orphaned ones. It keeps going
// past failures.
func (r *Reconciler) Once(ctx context.Context) (released int, err error) {
	log := r.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if _, err := os.Stat(r.StateDir); errors.Is(err, os.ErrNotExist) {
		return 0, nil // no attachment was ever made on this node
	}
	store, err := state.Open(r.StateDir)
	if err != nil {
		return 0, err
	}
	recs, errs := store.List()
	for _, rec := range recs {
		if rec.Netns == "" || alive(rec.Netns) {
			continue
		}
		if err := r.del(ctx, rec); err != nil {
			errs = append(errs, fmt.Errorf("%s/%s: %w", rec.ContainerID, rec.IfName, err))
			log.Error("reconciler could not release an orphaned attachment", "containerID", rec.ContainerID,
				"ifname", rec.IfName, "device", rec.BDF, "err", err)
			continue
		}
		released++
		log.Info("reconciler released an orphaned attachment", "containerID", rec.ContainerID, "ifname", rec.IfName,
			"netns", rec.Netns, "device", rec.BDF)
	}
	return released, errors.Join(errs...)
}

// alive: the path still names a network namespace. A pod's netns file
// outlives nothing: when the runtime tears the sandbox down it is unmounted
// and removed.
func alive(path string) bool {
	n, err := netdev.OpenNamespace(path)
	if err != nil {
		return false
	}
	n.Close()
	return true
}

func (r *Reconciler) del(ctx context.Context, rec *state.Record) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cniPath := rec.CNIPath
	if r.CNIPath != "" {
		cniPath = r.CNIPath
	}
	cmd := exec.CommandContext(ctx, r.CNIBinary)
	cmd.Env = append(os.Environ(), "CNI_COMMAND=DEL", "CNI_CONTAINERID="+rec.ContainerID, "CNI_NETNS="+rec.Netns,
		"CNI_IFNAME="+rec.IfName, "CNI_PATH="+cniPath)
	cmd.Stdin = bytes.NewReader(rec.Config)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s DEL: %w: %s", r.CNIBinary, err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

// Run reconciles every interval until ctx ends.
func (r *Reconciler) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		r.Once(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
