package deviceinfo

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReadRemove(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dp")
	if got := FileName("railnet.io/rail0", "0000:18:00.1"); got != "railnet.io-rail0-0000:18:00.1-device.json" {
		t.Errorf("FileName = %q", got)
	}
	if err := Write(dir, "railnet.io/rail0", "0000:18:00.1", NewPCI("0000:18:00.1", "mlx5_12", "0000:18:00.0")); err != nil {
		t.Fatal(err)
	}
	// Re-created, not appended to: the spec asks to delete before re-creating.
	if err := Write(dir, "railnet.io/rail0", "0000:18:00.1", NewPCI("0000:18:00.1", "", "0000:18:00.0")); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, FileName("railnet.io/rail0", "0000:18:00.1"))
	b, _ := os.ReadFile(p)
	if want := `{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:18:00.1","pf-pci-address":"0000:18:00.0"}}`; string(b) != want {
		t.Errorf("file = %s, want %s", b, want)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o444 {
		t.Errorf("mode %v", st.Mode().Perm())
	}
	i, err := Read(p)
	if err != nil || i.PCI.PFPCIAddress != "0000:18:00.0" || !Exists(dir, "railnet.io/rail0", "0000:18:00.1") {
		t.Errorf("Read = %+v, %v", i, err)
	}
	if err := Remove(dir, "railnet.io/rail0", "0000:18:00.1"); err != nil || Exists(dir, "railnet.io/rail0", "0000:18:00.1") {
		t.Errorf("Remove: %v", err)
	}
	if err := Remove(dir, "railnet.io/rail0", "0000:18:00.1"); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "x.json"), []byte(`{"a":1}`), 0o644)
	if _, err := Read(filepath.Join(dir, "x.json")); err == nil {
		t.Error("a non-device-info document was read")
	}
}

// A rewrite is a rename over the old file: a reader polling it meanwhile
// never finds it missing.
func TestRewriteNeverLeavesNoFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, FileName("railnet.io/rail0", "0000:18:00.1"))
	if err := Write(dir, "railnet.io/rail0", "0000:18:00.1", NewPCI("0000:18:00.1", "", "")); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	missing := make(chan int, 1)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				missing <- n
				return
			default:
			}
			if _, err := os.Stat(p); err != nil {
				n++
			}
		}
	}()
	for i := 0; i < 2000; i++ {
		if err := Write(dir, "railnet.io/rail0", "0000:18:00.1", NewPCI("0000:18:00.1", "mlx5_12", "")); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	if n := <-missing; n > 0 {
		t.Errorf("the file was missing %d times while it was rewritten", n)
	}
}
