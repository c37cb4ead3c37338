package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/railnet/railnet/pkg/atomicfile"
	"github.com/railnet/railnet/pkg/keys"
)

// MirrorKeys copies the keys Secret, mounted at secretDir with one entry
// per "<pod namespace>.<keys name>", onto the host as dst/<namespace>/<name>:
// directories 0700, files 0400, root's, each written atomically; a file
// whose entry left the Secret is removed. It reports whether anything
// changed. Entries whose name is not <namespace>.<name> are skipped and
// named in the error; their content is never read into a message.
func MirrorKeys(secretDir, dst string) (changed bool, err error) {
	ents, err := os.ReadDir(secretDir)
	if err != nil {
		return false, fmt.Errorf("keys Secret %s: %w", secretDir, err)
	}
	if err := privateDir(dst); err != nil {
		return false, err
	}
	want := map[string]bool{}
	var errs []error
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, "..") { // the volume's own ..data links
			continue
		}
		ns, keyName, ok := strings.Cut(name, ".")
		if !ok || keys.ValidName(ns) != "" || strings.Contains(ns, ".") || keys.ValidName(keyName) != "" {
			errs = append(errs, fmt.Errorf("keys Secret entry %q: not <pod namespace>.<keys name>", name))
			continue
		}
		b, err := os.ReadFile(filepath.Join(secretDir, name))
		if err != nil {
			errs = append(errs, fmt.Errorf("keys Secret entry %q: %w", name, err))
			continue
		}
		p := filepath.Join(dst, ns, keyName)
		want[p] = true
		old, rerr := os.ReadFile(p)
		same := rerr == nil && bytes.Equal(old, b)
		clear(old)
		if same {
			clear(b)
			continue
		}
		if err := privateDir(filepath.Join(dst, ns)); err != nil {
			clear(b)
			errs = append(errs, err)
			continue
		}
		err = atomicfile.Write(p, b, 0o400, true)
		clear(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("mirror keys %s/%s: %w", ns, keyName, err))
			continue
		}
		changed = true
	}
	nss, _ := os.ReadDir(dst)
	for _, n := range nss {
		if !n.IsDir() {
			continue
		}
		dir := filepath.Join(dst, n.Name())
		files, _ := os.ReadDir(dir)
		left := 0
		for _, f := range files {
			p := filepath.Join(dir, f.Name())
			if want[p] || strings.HasPrefix(f.Name(), ".") {
				left++
				continue
			}
			if err := os.Remove(p); err == nil {
				changed = true
			}
		}
		if left == 0 {
			os.Remove(dir)
		}
	}
	return changed, errors.Join(errs...)
}

// privateDir makes d a root-owned 0700 directory (not a symlink).
func privateDir(d string) error {
	if err := os.MkdirAll(d, 0o700); err != nil {
		return fmt.Errorf("keys directory: %w", err)
	}
	st, err := os.Lstat(d)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("keys directory %s is not a directory", d)
	}
	return os.Chmod(d, 0o700)
}

// KeyKeeper runs the keys: the Secret mirrored onto the host, and every
// encrypted attachment rotated, on a change of either, at each key's
// sendAfter, and every interval (sequences move with the epoch).
type KeyKeeper struct {
	SecretDir string // "" : no Secret to mirror (keys put on the host otherwise)
	KeysDir   string // the host's keys directory, as this process sees it
	Rotator   *KeyRotator
	Interval  time.Duration
	Log       *slog.Logger
}

// Run works until ctx ends.
func (k *KeyKeeper) Run(ctx context.Context) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		k.Log.Error("keys: no file watcher; rotating on the interval only", "err", err)
	} else {
		defer w.Close()
		if k.SecretDir != "" {
			privateDir(k.KeysDir)
			w.Add(k.SecretDir)
		}
		w.Add(k.KeysDir) // when it exists: keys put on the host by other means
	}
	var events <-chan fsnotify.Event
	if w != nil {
		events = w.Events
	}
	tick := time.NewTicker(k.Interval)
	defer tick.Stop()
	for {
		if k.SecretDir != "" {
			if changed, err := MirrorKeys(k.SecretDir, k.KeysDir); err != nil {
				k.Log.Warn("keys Secret", "err", err)
			} else if changed {
				k.Log.Info("keys Secret mirrored onto the host", "dir", k.KeysDir)
			}
		}
		if w != nil {
			// Namespace directories come and go with the Secret.
			nss, _ := os.ReadDir(k.KeysDir)
			for _, n := range nss {
				w.Add(filepath.Join(k.KeysDir, n.Name()))
			}
		}
		next, n, err := k.Rotator.Once(time.Now())
		if err != nil {
			k.Log.Warn("key rotation", "err", err)
		}
		if n > 0 {
			k.Log.Info("key rotation", "attachments", n)
		}
		var at <-chan time.Time
		var timer *time.Timer
		if !next.IsZero() {
			timer = time.NewTimer(time.Until(next) + 10*time.Millisecond)
			at = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-events:
			// A burst of events (a Secret update swaps a link): settle.
			time.Sleep(100 * time.Millisecond)
			for len(events) > 0 {
				<-events
			}
		case <-tick.C:
		case <-at:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}
