// Package fakesystest gives tests materialized fixture trees.
package fakesystest

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/railnet/railnet/pkg/discovery"
	"github.com/railnet/railnet/pkg/fakesys"
	"github.com/railnet/railnet/pkg/sysfs"
)

// FixtureDir is the repository's testdata/fixtures directory.
func FixtureDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "testdata", "fixtures")
}

// Fixtures lists the fixture names (file names without .json).
func Fixtures(tb testing.TB) []string {
	tb.Helper()
	m, err := filepath.Glob(filepath.Join(FixtureDir(), "*.json"))
	if err != nil || len(m) == 0 {
		tb.Fatalf("no fixtures in %s: %v", FixtureDir(), err)
	}
	out := make([]string, len(m))
	for i, p := range m {
		out[i] = filepath.Base(p[:len(p)-len(".json")])
	}
	return out
}

// Load reads a fixture by name.
func Load(tb testing.TB, name string) *fakesys.Machine {
	tb.Helper()
	m, err := fakesys.Load(filepath.Join(FixtureDir(), name+".json"))
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

// TempDir is a per-test directory, on tmpfs (/dev/shm) when there is one:
// a vf-scale tree has ~80k entries, and tmpfs is what sysfs is like.
func TempDir(tb testing.TB) string {
	tb.Helper()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "railnet-test-"); err == nil {
			tb.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return tb.TempDir()
}

// Build materializes a fixture by name and returns the machine and its tree.
func Build(tb testing.TB, name string) (*fakesys.Machine, fakesys.Tree) {
	tb.Helper()
	m := Load(tb, name)
	t, err := fakesys.Materialize(m, TempDir(tb))
	if err != nil {
		tb.Fatal(err)
	}
	return m, t
}

// OneNIC materializes a one-NIC node: nic sits at 0000:b1:00.0 behind root
// port 0000:b0:01.0 on NUMA node 0 (its VFs, if any, from 0000:b1:00.1).
// Tests whose netdevs are real links of the test host name them in nic.
func OneNIC(tb testing.TB, nic fakesys.Node) fakesys.Tree {
	tb.Helper()
	zero := 0
	nic.BDF, nic.Type = "0000:b1:00.0", "nic"
	m := &fakesys.Machine{SchemaVersion: 1, Name: "one-nic", NUMA: []fakesys.NUMANode{{ID: 0, CPUs: "0-1"}}}
	m.Roots = []fakesys.Root{{Bus: "b0", NUMA: &zero, Children: []fakesys.Node{{
		BDF: "0000:b0:01.0", Type: "bridge", Vendor: "0x8086", Device: "0x347a", Secondary: "b1", Subordinate: "b1",
		Children: []fakesys.Node{nic},
	}}}}
	inv, err := m.Count()
	if err != nil {
		tb.Fatal(err)
	}
	m.Expected.Inventory = inv
	if err := m.Validate(); err != nil {
		tb.Fatal(err)
	}
	tree, err := fakesys.Materialize(m, TempDir(tb))
	if err != nil {
		tb.Fatal(err)
	}
	return tree
}

// Open opens a materialized tree's sys and dev roots, closed when the
// test ends.
func Open(tb testing.TB, tree fakesys.Tree, opts ...sysfs.Option) (sys, dev *sysfs.FS) {
	tb.Helper()
	sys, err := sysfs.New(tree.Sys, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { sys.Close() })
	dev, err = sysfs.New(tree.Dev, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { dev.Close() })
	return sys, dev
}

// Scan reads a materialized tree's inventory, in full or lean (the
// daemon's scan).
func Scan(tb testing.TB, tree fakesys.Tree, lean bool) *discovery.Inventory {
	tb.Helper()
	s := discovery.NewScanner(Open(tb, tree))
	if lean {
		s = s.Lean()
	}
	inv, err := s.Scan()
	if err != nil {
		tb.Fatal(err)
	}
	return inv
}
