// Package atomicfile writes files so that readers see the old content or
// the new, never a mix: a temp file in the same directory, renamed over.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write replaces p with b, mode perm. durable also fsyncs the file and the
// directory, for records that must survive a crash of the machine.
func Write(p string, b []byte, perm os.FileMode, durable bool) error {
	dir := filepath.Dir(p)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(p)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing left to remove
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if durable {
		if err := tmp.Sync(); err != nil {
			tmp.Close()
			return err
		}
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return err
	}
	if durable {
		if d, err := os.Open(dir); err == nil {
			d.Sync()
			d.Close()
		}
	}
	return nil
}
