// Package audit appends one JSON line per security-relevant event of an
// encrypted attachment (attach, detach, key install, rotation, refusal) to
// the node's audit log. Never key material: events carry key ids only.
package audit

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultFile is the audit log when the node names none.
const DefaultFile = "/var/log/railnet/audit.log"

// Events.
const (
	Attach     = "attach"
	Detach     = "detach"
	KeyInstall = "key-install"
	Rotation   = "rotation"
	Refusal    = "refusal"
)

// Event is one line.
type Event struct {
	Time         time.Time `json:"time"`
	Event        string    `json:"event"`
	PodNamespace string    `json:"podNamespace,omitempty"`
	PodName      string    `json:"podName,omitempty"`
	PodUID       string    `json:"podUID,omitempty"`
	ContainerID  string    `json:"containerID,omitempty"`
	Network      string    `json:"network,omitempty"`
	Device       string    `json:"device,omitempty"`
	Mode         string    `json:"mode,omitempty"`
	Keys         string    `json:"keys,omitempty"`   // the key file's name
	KeyID        int       `json:"keyID,omitempty"`  // the sending key
	KeyIDs       []uint8   `json:"keyIDs,omitempty"` // the receiving keys
	Outcome      string    `json:"outcome"`          // "ok", or why not
}

// Write appends e to file (created 0600, its directory 0700), with
// O_APPEND: lines from concurrent writers never interleave.
func Write(file string, e Event) error {
	if file == "" {
		file = DefaultFile
	}
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	defer f.Close()
	if _, err := f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	return nil
}
