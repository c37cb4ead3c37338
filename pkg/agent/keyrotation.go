package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/railnet/railnet/pkg/audit"
	"github.com/railnet/railnet/pkg/encrypt"
	"github.com/railnet/railnet/pkg/keys"
	"github.com/railnet/railnet/pkg/netdev"
	"github.com/railnet/railnet/pkg/state"
)

// KeyRotator keeps every encrypted attachment's SAs what its key file says:
// a new key id is installed for receiving at once, sending moves to the key
// whose sendAfter passed last, a removed id's SAs go, and sequences move
// with the epoch. Every node does this on its own clock: no control plane.
type KeyRotator struct {
	StateDir  string
	HostRoot  string // records name host paths (netns, keys directory)
	AuditFile string // a host path
	Log       *slog.Logger
	Lock      time.Duration // how long to wait for a record's device lock
}

// Once syncs every encrypted attachment once. It returns the next time a
// key's sendAfter comes (zero: none) and how many attachments changed.
func (r *KeyRotator) Once(now time.Time) (next time.Time, changed int, err error) {
	if _, err := os.Stat(filepath.Join(r.StateDir, "records")); errors.Is(err, os.ErrNotExist) {
		return next, 0, nil // no CNI record yet
	}
	store := state.ReadOnly(r.StateDir)
	recs, errs := store.List()
	for _, rec := range recs {
		if rec.Encryption == nil || rec.Phase != state.PhaseDone {
			continue
		}
		t, ch, err := r.one(store, rec, now)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s/%s: %w", rec.ContainerID, rec.IfName, err))
			continue
		}
		if ch {
			changed++
		}
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	return next, changed, errors.Join(errs...)
}

func (r *KeyRotator) host(p string) string {
	if r.HostRoot == "" {
		return p
	}
	return filepath.Join(r.HostRoot, p)
}

func (r *KeyRotator) one(store *state.Store, rec *state.Record, now time.Time) (time.Time, bool, error) {
	lock, err := store.LockRecord(rec, r.Lock)
	if err != nil {
		return time.Time{}, false, nil // a DEL or an ADD holds it: the next pass
	}
	defer lock.Unlock()
	if cur, err := store.Load(rec.ContainerID, rec.IfName); err != nil || !cur.Created.Equal(rec.Created) {
		return time.Time{}, false, nil
	}
	e := rec.Encryption
	ns := rec.PodNamespace
	if ns == "" {
		ns = "default"
	}
	ev := audit.Event{PodNamespace: rec.PodNamespace, PodName: rec.PodName, PodUID: rec.PodUID, ContainerID: rec.ContainerID,
		Network: rec.Network, Device: rec.DeviceID, Mode: e.Mode, Keys: e.Keys}
	set, err := keys.Load(r.host(e.KeysDir), ns, e.Keys)
	if err != nil {
		// The admin took the key away, or broke it: what is installed
		// stays (pulling it would cut the pod off), and it is said.
		ev.Event, ev.Outcome = audit.Refusal, err.Error()
		r.audit(ev)
		return time.Time{}, false, err
	}
	pod, err := netdev.OpenNamespace(r.host(rec.Netns))
	if err != nil {
		return time.Time{}, false, nil // the pod's netns is gone; DEL or the reconciler follow
	}
	defer pod.Close()
	var rep encrypt.Report
	if e.MACsec != nil {
		var st state.MACsec
		st, rep, err = encrypt.MACsecFromRecord(e, rec.IfName).Sync(pod, e.MACsec.IfIndex, set, now, e.MACsec)
		if err == nil && (rep.Added > 0 || rep.Removed > 0 || rep.Advanced > 0) {
			e.MACsec = &st
			err = store.Save(rec)
		}
	} else {
		rep, err = encrypt.FromRecord(e).Sync(pod.NS, set, now)
	}
	if err != nil {
		return time.Time{}, false, err
	}
	changed := rep.Added > 0 || rep.Removed > 0
	if changed {
		ev.Event, ev.Outcome, ev.KeyID, ev.KeyIDs = audit.Rotation, "ok", int(rep.Sender), rep.Receiving
		r.audit(ev)
		if r.Log != nil {
			r.Log.Info("encryption keys synced", "containerID", rec.ContainerID, "ifname", rec.IfName, "pod", rec.PodNamespace+"/"+rec.PodName,
				"keys", e.Keys, "sending", rep.Sender, "receiving", rep.Receiving, "added", rep.Added, "removed", rep.Removed)
		}
	}
	return set.NextSwitch(now), changed, nil
}

func (r *KeyRotator) audit(e audit.Event) {
	f := r.AuditFile
	if f == "" {
		f = audit.DefaultFile
	}
	if err := audit.Write(r.host(f), e); err != nil && r.Log != nil {
		r.Log.Warn("audit", "err", err)
	}
}
