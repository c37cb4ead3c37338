package state

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestRecords(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(s.Dir()); st.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v", st.Mode().Perm())
	}
	r := &Record{ContainerID: "c/1", IfName: "net1", BDF: "0000:18:00.1", Phase: PhaseReserved, VFIndex: 3, Config: []byte(`{"name":"n"}`)}
	if err := s.Save(r); err != nil {
		t.Fatal(err)
	}
	r.Phase = PhaseDone
	if err := s.Save(r); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load("c/1", "net1")
	if err != nil || got.Phase != PhaseDone || got.VFIndex != 3 || string(got.Config) != `{"name":"n"}` {
		t.Fatalf("Load = %+v, %v", got, err)
	}
	if b, err := s.ByBDF("0000:18:00.1"); err != nil || b.ContainerID != "c/1" {
		t.Errorf("ByBDF = %+v, %v", b, err)
	}
	if _, err := s.ByBDF("0000:18:00.2"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ByBDF of a free device: %v", err)
	}
	os.WriteFile(filepath.Join(s.Dir(), "records", "garbage.json"), []byte("{"), 0o600)
	recs, errs := s.List()
	if len(recs) != 1 || len(errs) != 1 {
		t.Errorf("List = %d records, %v", len(recs), errs)
	}
	if err := s.Delete("c/1", "net1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("c/1", "net1"); err != nil {
		t.Errorf("second Delete: %v", err)
	}
	if _, err := s.Load("c/1", "net1"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load after Delete: %v", err)
	}
	if err := s.Writable(); err != nil {
		t.Errorf("Writable: %v", err)
	}
}

func TestLockDevice(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.LockDevice("0000:18:00.1", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := s.LockDevice("0000:18:00.1", 50*time.Millisecond); err == nil {
		t.Fatal("a held device was locked twice")
	}
	if time.Since(start) < 50*time.Millisecond {
		t.Error("did not wait for the lock")
	}
	other, err := s.LockDevice("0000:18:00.2", time.Second)
	if err != nil {
		t.Fatalf("another device: %v", err)
	}
	other.Unlock()
	l.Unlock()
	l2, err := s.LockDevice("0000:18:00.1", time.Second)
	if err != nil {
		t.Fatalf("after unlock: %v", err)
	}
	l2.Unlock()
}

// The state directory is root's alone: a symlink in its place or a
// directory of another user is refused, a hostPath-made 0755 one is
// tightened, and neither records nor locks follow a planted symlink.
func TestStateDirIsPrivate(t *testing.T) {
	base := t.TempDir()
	target := filepath.Join(base, "elsewhere")
	os.MkdirAll(target, 0o700)
	link := filepath.Join(base, "link")
	os.Symlink(target, link)
	if _, err := Open(link); err == nil {
		t.Error("a symlinked state dir was accepted")
	}
	loose := filepath.Join(base, "loose")
	os.MkdirAll(loose, 0o755)
	os.Chmod(loose, 0o755)
	s, err := Open(loose)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Lstat(loose); st.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %o, want 0700", st.Mode().Perm())
	}
	if os.Geteuid() == 0 {
		other := filepath.Join(base, "other")
		os.MkdirAll(other, 0o700)
		os.Chown(other, 65534, 65534)
		if _, err := Open(other); err == nil {
			t.Error("a state dir owned by another user was accepted")
		}
	}
	secret := filepath.Join(base, "secret.json")
	os.WriteFile(secret, []byte(`{"containerID":"c","ifName":"i","bdf":"0000:18:00.1"}`), 0o600)
	os.Symlink(secret, s.path("c", "i"))
	if _, err := s.Load("c", "i"); err == nil {
		t.Error("Load followed a symlinked record")
	}
	if recs, _ := s.List(); len(recs) != 0 {
		t.Errorf("List followed a symlinked record: %+v", recs)
	}
	victim := filepath.Join(base, "victim")
	os.WriteFile(victim, nil, 0o644)
	os.Symlink(victim, filepath.Join(loose, "locks", "0000:18:00.1.lock"))
	if l, err := s.LockDevice("0000:18:00.1", 10*time.Millisecond); err == nil {
		l.Unlock()
		t.Error("LockDevice followed a symlink")
	}
}
