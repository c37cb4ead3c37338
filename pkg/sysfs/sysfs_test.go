package sysfs

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// tree builds root/{sys,outside} where sys is the injected root and outside
// holds a secret no read through the FS may return.
func tree(t *testing.T) (root, outside string) {
	t.Helper()
	base := t.TempDir()
	root = filepath.Join(base, "sys")
	outside = filepath.Join(base, "outside")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{
		"devices/pci0000:15/0000:15:01.0/0000:16:00.0/net/ibp22s0",
		"bus/pci/devices", "bus/pci/drivers/mlx5_core", "class/net", "evil",
	} {
		must(os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	must(os.MkdirAll(outside, 0o755))
	must(os.WriteFile(filepath.Join(outside, "secret"), []byte("SECRET\n"), 0o644))
	dev := "devices/pci0000:15/0000:15:01.0/0000:16:00.0"
	must(os.WriteFile(filepath.Join(root, dev, "vendor"), []byte("0x15b3\n"), 0o444))
	must(os.WriteFile(filepath.Join(root, dev, "numa_node"), []byte("-1\n"), 0o444))
	must(os.WriteFile(filepath.Join(root, dev, "net/ibp22s0/mtu"), []byte("4092\n"), 0o444))
	must(os.Symlink("../../../devices/pci0000:15/0000:15:01.0/0000:16:00.0", filepath.Join(root, "bus/pci/devices/0000:16:00.0")))
	must(os.Symlink("../../../../bus/pci/drivers/mlx5_core", filepath.Join(root, dev, "driver")))
	must(os.Symlink("../../devices/pci0000:15/0000:15:01.0/0000:16:00.0/net/ibp22s0", filepath.Join(root, "class/net/ibp22s0")))
	// Links that leave the root, in every way one can.
	must(os.Symlink("../../outside/secret", filepath.Join(root, "evil/relative")))
	must(os.Symlink(filepath.Join(outside, "secret"), filepath.Join(root, "evil/absolute")))
	must(os.Symlink("/etc/hostname", filepath.Join(root, "evil/host-absolute")))
	must(os.Symlink("../../outside", filepath.Join(root, "evil/dir")))
	must(os.Symlink("hop2", filepath.Join(root, "evil/hop1")))
	must(os.Symlink("../..", filepath.Join(root, "evil/hop2")))
	must(os.Symlink("../evil/relative", filepath.Join(root, dev, "vendor_link")))
	must(os.Symlink("loop", filepath.Join(root, "evil/loop")))
	must(os.Symlink("nowhere", filepath.Join(root, "evil/dangling")))
	return root, outside
}

func resolvers(t *testing.T, root string) map[string]*FS {
	t.Helper()
	out := map[string]*FS{}
	for name, opts := range map[string][]Option{"openat2": nil, "walk": {WithoutOpenat2()}} {
		f, err := New(root, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		if name == "openat2" && !f.openat2 {
			t.Fatalf("openat2 unavailable on this kernel; both resolvers must be tested")
		}
		out[name] = f
	}
	return out
}

func TestNoReadEscapesRoot(t *testing.T) {
	root, _ := tree(t)
	for name, f := range resolvers(t, root) {
		t.Run(name, func(t *testing.T) {
			for _, p := range []string{
				"evil/relative", "evil/absolute", "evil/host-absolute", "evil/dir/secret",
				"evil/hop1/outside/secret", "../outside/secret", "/../outside/secret",
				"devices/pci0000:15/0000:15:01.0/0000:16:00.0/vendor_link",
				"bus/pci/devices/0000:16:00.0/vendor_link",
			} {
				b, err := f.ReadFile(p)
				if err == nil && string(b) == "SECRET\n" {
					t.Errorf("ReadFile(%q) read outside the root", p)
				}
				if p[0] != '.' && p[0] != '/' && err == nil {
					t.Errorf("ReadFile(%q) = %q, want an error", p, b)
				}
				if _, err := f.ReadNames(p); err == nil && p == "evil/dir" {
					t.Errorf("ReadDir(%q) listed a directory outside the root", p)
				}
				if f.Exists(p) && p != "../outside/secret" && p != "/../outside/secret" {
					t.Errorf("Exists(%q) = true for a path leaving the root", p)
				}
			}
			// ".." at the top is clamped to the root, as in a chroot, so
			// "../outside/secret" names root/outside/secret, which does not exist.
			if _, err := f.ReadFile("../outside/secret"); err == nil {
				t.Errorf("ReadFile(../outside/secret) succeeded")
			}
			for _, p := range []string{"evil/relative", "evil/absolute", "evil/dir"} {
				_, err := f.ReadFile(p)
				if !errors.Is(err, ErrEscape) {
					t.Errorf("ReadFile(%q) error = %v, want ErrEscape", p, err)
				}
			}
			if _, err := f.RealPath("evil/dir"); !errors.Is(err, ErrEscape) {
				t.Errorf("RealPath(evil/dir) error = %v, want ErrEscape", err)
			}
			if _, err := f.ReadFile("evil/loop"); err == nil {
				t.Errorf("ReadFile(evil/loop) succeeded")
			}
			if f.Exists("evil/dangling") {
				t.Errorf("a dangling link exists")
			}
		})
	}
}

func TestReads(t *testing.T) {
	root, _ := tree(t)
	for name, f := range resolvers(t, root) {
		t.Run(name, func(t *testing.T) {
			v, err := f.ReadString("bus/pci/devices/0000:16:00.0/vendor")
			if err != nil || v != "0x15b3" {
				t.Errorf("ReadString(vendor) = %q, %v", v, err)
			}
			n, err := f.ReadInt("/bus/pci/devices/0000:16:00.0/numa_node")
			if err != nil || n != -1 {
				t.Errorf("ReadInt(numa_node) = %d, %v", n, err)
			}
			mtu, err := f.ReadInt("class/net/ibp22s0/mtu")
			if err != nil || mtu != 4092 {
				t.Errorf("ReadInt(mtu) = %d, %v", mtu, err)
			}
			drv, err := f.LinkBase("bus/pci/devices/0000:16:00.0/driver")
			if err != nil || drv != "mlx5_core" {
				t.Errorf("LinkBase(driver) = %q, %v", drv, err)
			}
			rp, err := f.RealPath("bus/pci/devices/0000:16:00.0")
			if want := "devices/pci0000:15/0000:15:01.0/0000:16:00.0"; err != nil || rp != want {
				t.Errorf("RealPath = %q, %v; want %q", rp, err, want)
			}
			rp, err = f.RealPath("class/net/ibp22s0/")
			if want := "devices/pci0000:15/0000:15:01.0/0000:16:00.0/net/ibp22s0"; err != nil || rp != want {
				t.Errorf("RealPath = %q, %v; want %q", rp, err, want)
			}
			names, err := f.ReadNames("bus/pci/devices/0000:16:00.0")
			want := []string{"driver", "net", "numa_node", "vendor", "vendor_link"}
			if err != nil || len(names) != len(want) {
				t.Fatalf("ReadNames = %v, %v", names, err)
			}
			for i := range want {
				if names[i] != want[i] {
					t.Errorf("ReadNames[%d] = %q, want %q", i, names[i], want[i])
				}
			}
			if _, err := f.ReadFile("bus/pci/devices/0000:16:00.0/missing"); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("missing file error = %v, want ErrNotExist", err)
			}
		})
	}
}

func TestNewRejectsMissingRoot(t *testing.T) {
	if _, err := New(filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Fatal("New on a missing directory succeeded")
	}
}

// TestLongDirectories: directories that take many getdents replies, with
// names up to 255 bytes, are listed whole (a reply with room to spare is
// not the end: the kernel cuts replies short when a signal is pending, and
// Go preempts with signals), on tmpfs and where the test's files are;
// with both resolvers and through Dir.
func TestLongDirectories(t *testing.T) {
	roots := []string{t.TempDir()}
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "railnet-sysfs-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		roots = append(roots, d)
	}
	for _, root := range roots {
		for _, n := range []int{0, 1, 29, 30, 31, 200, 3000} {
			dir := filepath.Join(root, fmt.Sprint(n))
			os.MkdirAll(dir, 0o755)
			want := map[string]bool{}
			for i := range n {
				name := fmt.Sprintf("%d-%s", i, strings.Repeat("x", (i*37)%250))
				if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
					t.Fatal(err)
				}
				want[name] = true
			}
			for _, opts := range [][]Option{nil, {WithoutOpenat2()}} {
				fs, err := New(root, opts...)
				if err != nil {
					t.Fatal(err)
				}
				names, err := fs.ReadNames(fmt.Sprint(n))
				if err != nil {
					t.Fatal(err)
				}
				d, err := fs.OpenDir(".")
				if err != nil {
					t.Fatal(err)
				}
				viaDir, err := d.ReadNames(fmt.Sprint(n))
				d.Close()
				fs.Close()
				if err != nil {
					t.Fatal(err)
				}
				for _, got := range [][]string{names, viaDir} {
					if len(got) != len(want) {
						t.Fatalf("%s: %d of %d names", dir, len(got), len(want))
					}
					for _, g := range got {
						if !want[g] {
							t.Fatalf("%s: unexpected %q", dir, g)
						}
					}
				}
			}
		}
	}
}

// TestDirListsItselfTwice: a Dir lists its own entries, again and again,
// in full (ReadNames) or asked after (Which).
func TestDirListsItselfTwice(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "dev", "sub"), 0o755)
	for _, n := range []string{"a", "b", "c"} {
		os.WriteFile(filepath.Join(root, "dev", n), nil, 0o644)
	}
	for _, opts := range [][]Option{nil, {WithoutOpenat2()}} {
		fs, err := New(root, opts...)
		if err != nil {
			t.Fatal(err)
		}
		d, err := fs.OpenDir("dev")
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			names, err := d.ReadNames(".")
			if err != nil || strings.Join(names, ",") != "a,b,c,sub" {
				t.Fatalf("listing %d: %v %v", i, names, err)
			}
			has, err := d.Which(".", []string{"b", "sub", "z"})
			if err != nil || !has[0] || !has[1] || has[2] {
				t.Fatalf("Which %d: %v %v", i, has, err)
			}
		}
		sub, err := d.OpenDir("sub")
		if err != nil {
			t.Fatal(err)
		}
		if names, err := sub.ReadNames("."); err != nil || len(names) != 0 {
			t.Fatalf("sub: %v %v", names, err)
		}
		sub.Close()
		d.Close()
		fs.Close()
	}
}

// TestJoinLinkIsPathJoin: the fast join of a link's target equals
// path.Join for sysfs's shapes and for odd ones.
func TestJoinLinkIsPathJoin(t *testing.T) {
	dirs := []string{"", "class/net", "bus/pci/devices", "a", "a/b/c/d", "class/../net", "./x"}
	targets := []string{"../../devices/pci0000:00/0000:00:01.0/net/eth0", "../../../devices/pci0000:15/0000:16:00.0", "x", "../x",
		"../../../../../../x", "../..", "..", "../", "/abs/x", "../a//b", "../a/./b", "../a/../b", "../a/", "./a", "../.", "../a/.", "../a/..", "."}
	for _, d := range dirs {
		for _, tg := range targets {
			if got, want := joinLink(d, tg), path.Join(d, tg); got != want {
				t.Errorf("joinLink(%q, %q) = %q, path.Join says %q", d, tg, got, want)
			}
		}
	}
}

// ReadLinks hands readlinkat the names as getdents wrote them: every name
// length up to 255 bytes, targets around the 256-byte first buffer and far
// beyond, and a directory of thousands, read back as os.Readlink reads them.
func TestReadLinksNamesAndTargets(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "class/x")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for i := range 2000 {
		name := fmt.Sprintf("%d%s", i, strings.Repeat("n", i%252))
		tlen := []int{1, 200, 254, 255, 256, 257, 300, 1000, 4000}[i%9]
		target := "../../devices/" + strings.Repeat("t", tlen)
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
		want[name] = "devices/" + strings.Repeat("t", tlen)
	}
	os.WriteFile(filepath.Join(dir, "plain"), nil, 0o644) // not a link: left out
	for _, opts := range [][]Option{nil, {WithoutOpenat2()}} {
		fs, err := New(root, opts...)
		if err != nil {
			t.Fatal(err)
		}
		got, escaped, err := fs.ReadLinks("class/x")
		fs.Close()
		if err != nil || len(escaped) != 0 {
			t.Fatalf("ReadLinks: %v %v", err, escaped)
		}
		if len(got) != len(want) {
			t.Fatalf("%d links, want %d", len(got), len(want))
		}
		for n, w := range want {
			if got[n] != w {
				t.Fatalf("%s: %q, want %q", n, got[n], w)
			}
		}
	}
}
