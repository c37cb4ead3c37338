package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Host paths come from the node settings file when the netconf has none.
func TestNodeSettings(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "cni.json")
	t.Setenv(EnvNodeFile, file)
	t.Setenv(EnvSysfsRoot, "")
	nad := []byte(`{"cniVersion":"1.0.0","name":"n","type":"railnet"}`)

	c, err := Parse(nad) // no file: the defaults
	if err != nil || c.Root() != "/sys" || c.State() != DefaultStateDir {
		t.Fatalf("without node settings: %v %q %q", err, c.Root(), c.State())
	}
	os.WriteFile(file, []byte(`{"sysfsRoot":"/node/sys","stateDir":"/node/state","logFile":"/node/log"}`), 0o644)
	c, err = Parse(nad)
	if err != nil || c.Root() != "/node/sys" || c.State() != "/node/state" || c.LogFile != "/node/log" {
		t.Fatalf("node settings: %v %q %q %q", err, c.Root(), c.State(), c.LogFile)
	}
	c, err = Parse([]byte(`{"cniVersion":"1.0.0","name":"n","type":"railnet","stateDir":"/nad/state"}`))
	if err != nil || c.State() != "/nad/state" || c.Root() != "/node/sys" {
		t.Fatalf("netconf and node settings: %v %q %q", err, c.State(), c.Root())
	}
	os.WriteFile(file, []byte(`{"sysfsRoot":"/node/sys","keysDir":"/x"}`), 0o644)
	if _, err := Parse(nad); err == nil || !strings.Contains(err.Error(), file) {
		t.Fatalf("an unknown node setting: %v", err)
	}
}
