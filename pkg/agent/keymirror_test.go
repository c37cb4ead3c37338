package agent_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/railnet/railnet/pkg/agent"
)

// The keys Secret's entries land on the host as <ns>/<name>, 0400 in 0700
// directories, written atomically; an entry that leaves the Secret leaves
// the host; a malformed entry name is reported without its content.
func TestMirrorKeys(t *testing.T) {
	secret, dst := t.TempDir(), filepath.Join(t.TempDir(), "keys")
	// A Secret volume: entries are links into ..data.
	data := filepath.Join(secret, "..2026_12_02")
	os.MkdirAll(data, 0o755)
	write := func(name, body string) {
		os.WriteFile(filepath.Join(data, name), []byte(body), 0o644)
		os.Symlink(filepath.Join("..data", name), filepath.Join(secret, name))
	}
	os.Symlink(filepath.Base(data), filepath.Join(secret, "..data"))
	write("ml.training", "1 aes-gcm-128 00112233445566778899aabbccddeeff\n")
	write("team-b.inference", "1 aes-gcm-256 "+strings.Repeat("ab", 32)+"\n")
	write("no-namespace", "SECRET-CONTENT")
	changed, err := agent.MirrorKeys(secret, dst)
	if !changed || err == nil || !strings.Contains(err.Error(), `"no-namespace"`) || strings.Contains(err.Error(), "SECRET-CONTENT") {
		t.Fatalf("first mirror: changed %v, err %v", changed, err)
	}
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{{dst, 0o700 | os.ModeDir}, {filepath.Join(dst, "ml"), 0o700 | os.ModeDir}, {filepath.Join(dst, "ml", "training"), 0o400},
		{filepath.Join(dst, "team-b", "inference"), 0o400}} {
		st, err := os.Lstat(c.path)
		if err != nil || st.Mode() != c.mode {
			t.Errorf("%s: %v %v, want %v", c.path, st.Mode(), err, c.mode)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "ml", "training")); !strings.HasPrefix(string(b), "1 aes-gcm-128 0011") {
		t.Errorf("content %q", b)
	}
	os.Remove(filepath.Join(secret, "no-namespace"))
	if changed, err := agent.MirrorKeys(secret, dst); changed || err != nil {
		t.Errorf("unchanged Secret: changed %v, %v", changed, err)
	}
	os.Remove(filepath.Join(secret, "team-b.inference"))
	if changed, err := agent.MirrorKeys(secret, dst); !changed || err != nil {
		t.Errorf("entry removed: changed %v, %v", changed, err)
	}
	if _, err := os.Stat(filepath.Join(dst, "team-b")); !os.IsNotExist(err) {
		t.Errorf("team-b's keys are still on the host: %v", err)
	}
}
