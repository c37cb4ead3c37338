package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func nodeFile(t *testing.T, body string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "cni.json")
	if body != "" {
		if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv(EnvNodeFile, file)
	for _, e := range []string{EnvSysfsRoot, EnvDevfsRoot, EnvStateDir, EnvLogFile, EnvKeysDir, EnvAuditFile} {
		t.Setenv(e, "")
	}
	return file
}

// Host paths come from the node: its file, then its environment.
func TestNodeSettings(t *testing.T) {
	file := nodeFile(t, "")
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
	t.Setenv(EnvStateDir, "/env/state")
	if c, err = Parse(nad); err != nil || c.State() != "/env/state" || c.Root() != "/node/sys" {
		t.Fatalf("environment over the file: %v %q %q", err, c.State(), c.Root())
	}
	os.WriteFile(file, []byte(`{"sysfsRoot":"/node/sys","sysfs":"/x"}`), 0o644)
	if _, err := Parse(nad); err == nil || !strings.Contains(err.Error(), file) {
		t.Fatalf("an unknown node setting: %v", err)
	}
}

// A netconf that names a host path is refused (code 7, naming the key),
// unless the node allows netconf paths.
func TestNetconfHostPathsRefused(t *testing.T) {
	file := nodeFile(t, `{"sysfsRoot":"/node/sys"}`)
	for _, key := range []string{"sysfsRoot", "devfsRoot", "stateDir", "logFile", "keysDir", "auditFile"} {
		_, err := Parse([]byte(`{"cniVersion":"1.0.0","name":"n","type":"railnet","` + key + `":"/tmp/pod-emptydir/x"}`))
		var te *types.Error
		if !errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig || !strings.HasPrefix(te.Msg, key+":") {
			t.Errorf("%s in a netconf: %v", key, err)
		}
	}
	os.WriteFile(file, []byte(`{"sysfsRoot":"/node/sys","allowNetconfPaths":true}`), 0o644)
	c, err := Parse([]byte(`{"cniVersion":"1.0.0","name":"n","type":"railnet","sysfsRoot":"/test/sys"}`))
	if err != nil || c.Root() != "/test/sys" {
		t.Errorf("allowed netconf path: %v %q", err, c.Root())
	}
	if _, err := Parse([]byte(`{"cniVersion":"1.0.0","name":"n","type":"railnet","logFile":"rel/log"}`)); err == nil {
		t.Error("a relative logFile was accepted")
	}
}

// attach and its options: each value is checked, each option only with its
// attach, and an IPoIB partition key is read in the forms people write.
func TestAttachOptions(t *testing.T) {
	nodeFile(t, "")
	base := `{"cniVersion":"1.1.0","name":"n","type":"railnet",`
	for _, c := range []struct {
		body, field string // field "": accepted
		pkey        PKey
	}{
		{`"attach":"macvlan","macvlanMode":"private"}`, "", 0},
		{`"attach":"ipvlan","ipvlanMode":"l3s"}`, "", 0},
		{`"macvlanMode":"vepa"}`, "", 0}, // attach from the device: checked at ADD
		{`"attach":"ipoib","pkey":"0x7fff"}`, "", 0x7fff},
		{`"attach":"ipoib","pkey":"0x8a12"}`, "", 0x0a12},
		{`"attach":"ipoib","pkey":32767}`, "", 0x7fff},
		{`"attach":"ipoib","pkey":"0x0"}`, "pkey", 0},
		{`"attach":"ipoib","pkey":"0x8000"}`, "pkey", 0},
		{`"attach":"ipoib","pkey":"0x10000"}`, "pkey", 0},
		{`"attach":"ipoib","pkey":"full"}`, "pkey", 0},
		{`"attach":"veth"}`, "attach", 0},
		{`"attach":"macvlan","macvlanMode":"l2"}`, "macvlanMode", 0},
		{`"attach":"ipvlan","ipvlanMode":"bridge"}`, "ipvlanMode", 0},
		{`"attach":"macvlan","ipvlanMode":"l2"}`, "ipvlanMode", 0},
		{`"attach":"move","pkey":"0x1"}`, "pkey", 0},
		{`"attach":"ipvlan","mac":"02:00:00:00:00:01"}`, "mac", 0},
		{`"attach":"ipoib","runtimeConfig":{"mac":"02:00:00:00:00:01"}}`, "runtimeConfig.mac", 0},
		{`"attach":7}`, "attach", 0},
	} {
		conf, err := Parse([]byte(base + c.body))
		if c.field == "" {
			if err != nil {
				t.Errorf("%s: %v", c.body, err)
			} else if c.pkey != 0 && (conf.PKey == nil || *conf.PKey != c.pkey || conf.PKey.Full() != uint16(c.pkey)|0x8000) {
				t.Errorf("%s: pkey %v", c.body, conf.PKey)
			}
			continue
		}
		var te *types.Error
		if !errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig || !strings.HasPrefix(te.Msg, c.field+":") {
			t.Errorf("%s: %v, want code 7 naming %s", c.body, err, c.field)
		}
	}
}
