// Package sysfs owns every read of /sys and /dev. A FS is bound to one root
// directory at construction; every path it is given is relative to that root,
// and no read can leave it: symlinks are resolved inside the root (by the
// kernel's openat2 RESOLVE_BENEATH where available, by a careful user-space
// walk otherwise), and a link that points outside is an error, never a read.
package sysfs

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrEscape is returned when a path or one of its symlinks leads outside the root.
var ErrEscape = errors.New("path escapes the root")

// FS reads files below one root directory.
type FS struct {
	root    string // absolute, cleaned, symlinks of the root itself resolved
	rootFD  int
	openat2 bool
}

// Option changes how a FS is built.
type Option func(*options)

type options struct{ noOpenat2 bool }

// WithoutOpenat2 forces the user-space resolver. It exists for kernels or
// seccomp profiles without openat2, and so tests can prove both resolvers
// keep reads inside the root.
func WithoutOpenat2() Option { return func(o *options) { o.noOpenat2 = true } }

// New returns a FS rooted at root ("/sys" on a real host). The root must be an
// existing directory. Close releases the directory handle.
func New(root string, opts ...Option) (*FS, error) {
	var o options
	for _, f := range opts {
		f(&o)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("sysfs root %q: %w", root, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return nil, fmt.Errorf("sysfs root %q: %w", root, err)
	}
	fd, err := unix.Open(real, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sysfs root %q: %w", root, &os.PathError{Op: "open", Path: real, Err: err})
	}
	f := &FS{root: real, rootFD: fd}
	if !o.noOpenat2 {
		f.openat2 = probeOpenat2(fd)
	}
	return f, nil
}

func probeOpenat2(dirfd int) bool {
	fd, err := unix.Openat2(dirfd, ".", &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

// Close releases the root handle.
func (f *FS) Close() error {
	if f.rootFD < 0 {
		return nil
	}
	err := unix.Close(f.rootFD)
	f.rootFD = -1
	return err
}

// Root is the absolute directory this FS reads from.
func (f *FS) Root() string { return f.root }

// clean turns a caller's path ("/bus/pci", "bus/pci/", "class/net/x") into a
// root-relative path without leading slash. "" and "/" mean the root.
func clean(p string) string {
	p = path.Clean("/" + p)
	return strings.TrimPrefix(p, "/")
}

func (f *FS) pathErr(op, rel string, err error) error {
	if errors.Is(err, unix.EXDEV) {
		err = ErrEscape
	}
	return &os.PathError{Op: op, Path: filepath.Join(f.root, rel), Err: err}
}

// open opens rel beneath the root with flags, following symlinks that stay
// inside the root. O_NOFOLLOW in flags refuses a symlink as the last element.
func (f *FS) open(rel string, flags int) (int, error) {
	rel = clean(rel)
	if rel == "" {
		rel = "."
	}
	if f.openat2 {
		for {
			fd, err := unix.Openat2(f.rootFD, rel, &unix.OpenHow{
				Flags:   uint64(flags | unix.O_CLOEXEC),
				Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
			})
			if err == unix.EINTR || err == unix.EAGAIN {
				continue
			}
			if err != nil {
				return -1, err
			}
			return fd, nil
		}
	}
	real, err := f.walk(rel, flags&unix.O_NOFOLLOW == 0)
	if err != nil {
		return -1, err
	}
	if real == "" {
		real = "."
	}
	// Every element of real is a directory that is not a symlink, checked by
	// walk; O_NOFOLLOW keeps a last element swapped for a link since then
	// from being followed.
	for {
		fd, err := unix.Openat(f.rootFD, real, flags|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
		if err == unix.EINTR {
			continue
		}
		return fd, err
	}
}

// maxLinks bounds symlink expansion like the kernel's MAXSYMLINKS (40).
const maxLinks = 40

// walk resolves rel element by element, expanding symlinks inside the root,
// and returns the resolved root-relative path. followLast says whether a
// symlink as the last element is expanded.
func (f *FS) walk(rel string, followLast bool) (string, error) {
	todo := splitPath(rel)
	var done []string
	links := 0
	for len(todo) > 0 {
		elem := todo[0]
		todo = todo[1:]
		switch elem {
		case "", ".":
			continue
		case "..":
			if len(done) == 0 {
				return "", ErrEscape
			}
			done = done[:len(done)-1]
			continue
		}
		cur := strings.Join(append(done, elem), "/")
		var st unix.Stat_t
		if err := unix.Fstatat(f.rootFD, cur, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return "", err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFLNK || (len(todo) == 0 && !followLast) {
			done = append(done, elem)
			continue
		}
		links++
		if links > maxLinks {
			return "", unix.ELOOP
		}
		target, err := readlinkat(f.rootFD, cur)
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(target, "/") {
			// An absolute link names the host's tree, never ours.
			return "", ErrEscape
		}
		todo = append(splitPath(target), todo...)
	}
	return strings.Join(done, "/"), nil
}

func splitPath(p string) []string {
	return strings.FieldsFunc(p, func(r rune) bool { return r == '/' })
}

// bufs are scratch buffers for getdents and readlink: a scan makes tens of
// thousands of those calls, and a fresh 8 KiB each was a sixth of its
// garbage.
var bufs = sync.Pool{New: func() any { b := make([]byte, 8192); return &b }}

func readlinkat(dirfd int, name string) (string, error) {
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	for size := 256; ; size *= 2 {
		var buf []byte
		if size <= len(*bp) {
			buf = (*bp)[:size]
		} else {
			buf = make([]byte, size)
		}
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// readlinkDirent is readlinkat of a name eachDirent handed over: the
// getdents record holds it NUL-terminated right after its bytes, so the
// syscall takes it where it lies. A name without its NUL (never from the
// kernel) goes through readlinkat.
func readlinkDirent(dirfd int, nb []byte, name string) (string, error) {
	if len(nb) == 0 || cap(nb) == len(nb) || nb[:len(nb)+1][len(nb)] != 0 {
		return readlinkat(dirfd, name)
	}
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	buf := (*bp)[:256]
	for {
		r, _, e := unix.Syscall6(unix.SYS_READLINKAT, uintptr(dirfd), uintptr(unsafe.Pointer(&nb[0])),
			uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
		switch {
		case e == unix.EINTR:
			continue
		case e != 0:
			return "", e
		case int(r) < len(buf):
			return string(buf[:r]), nil
		}
		return readlinkat(dirfd, name) // longer than 255 bytes
	}
}

// maxFileSize bounds one read; sysfs attributes are at most a page, and a
// copied tree may hold anything.
const maxFileSize = 1 << 20

// readAll reads an open attribute. A sysfs attribute hands over its whole
// value in one read, so a short read is taken as the end of the file: one
// read(2) instead of two for almost every attribute.
func readAll(fd int) ([]byte, error) {
	var stack [512]byte
	buf := stack[:]
	n := 0
	for {
		m, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		n += m
		if m == 0 || n < len(buf) {
			return append([]byte(nil), buf[:n]...), nil
		}
		if len(buf) >= maxFileSize {
			return nil, unix.EFBIG
		}
		buf = append(buf, make([]byte, len(buf))...)
	}
}

// ReadFile returns the contents of the file rel. A symlink as the last
// element is followed only while it stays inside the root.
func (f *FS) ReadFile(rel string) ([]byte, error) {
	// O_NONBLOCK: a FIFO planted in a copied tree must not hang a scan.
	fd, err := f.open(rel, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return nil, f.pathErr("read", clean(rel), err)
	}
	defer unix.Close(fd)
	b, err := readAll(fd)
	if err != nil {
		return nil, f.pathErr("read", clean(rel), err)
	}
	return b, nil
}

// ReadString returns the file's contents with surrounding white space removed,
// the way sysfs attributes ("0x15b3\n") are meant to be read.
func (f *FS) ReadString(rel string) (string, error) {
	b, err := f.ReadFile(rel)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// ReadInt parses a decimal attribute ("-1\n", "4092\n").
func (f *FS) ReadInt(rel string) (int, error) {
	s, err := f.ReadString(rel)
	if err != nil {
		return 0, err
	}
	return parseInt(f, clean(rel), s)
}

func parseInt(f *FS, rel, s string) (int, error) {
	v, err := strconv.Atoi(s)
	if err != nil {
		return 0, &os.PathError{Op: "parse", Path: filepath.Join(f.root, rel), Err: err}
	}
	return v, nil
}

// Dirent is one directory entry: its name and whether it is a symlink.
type Dirent struct {
	Name    string
	Symlink bool
}

// ReadDirents lists directory rel (following links inside the root), sorted by name.
func (f *FS) ReadDirents(rel string) ([]Dirent, error) {
	fd, err := f.open(rel, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, f.pathErr("readdir", clean(rel), err)
	}
	defer unix.Close(fd)
	ents, err := getdents(fd)
	if err != nil {
		return nil, f.pathErr("readdir", clean(rel), err)
	}
	return ents, nil
}

// getdents reads a whole directory with getdents64, without the os.File
// machinery (poller registration, fcntl) that costs three extra syscalls.
// Only a reply of 0 ends the directory: the kernel cuts a reply short when
// a signal is pending (Go preempts goroutines with SIGURG), with room to
// spare in the buffer.
func getdents(fd int) ([]Dirent, error) {
	var out []Dirent
	err := eachDirent(fd, func(name []byte, symlink bool) {
		out = append(out, Dirent{Name: string(name), Symlink: symlink})
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b Dirent) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// eachDirent calls fn with every entry but . and .. (name valid during the
// call only).
func eachDirent(fd int, fn func(name []byte, symlink bool)) error {
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	buf := *bp
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n <= 0 {
			return nil
		}
		for b := buf[:n]; len(b) >= 19; {
			// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name.
			reclen := int(b[16]) | int(b[17])<<8
			if reclen < 19 || reclen > len(b) {
				return unix.EIO
			}
			typ := b[18]
			name := b[19:reclen]
			if i := indexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if s := string(name); s != "." && s != ".." {
				fn(name, typ == unix.DT_LNK)
			}
			b = b[reclen:]
		}
	}
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// ReadNames lists the names in directory rel, sorted.
func (f *FS) ReadNames(rel string) ([]string, error) {
	ents, err := f.ReadDirents(rel)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name
	}
	return names, nil
}

// Readlink returns the target of the symlink rel, as written. The directory
// holding the link is resolved inside the root; the target is not followed.
func (f *FS) Readlink(rel string) (string, error) {
	rel = clean(rel)
	dir, base := path.Split(rel)
	if base == "" {
		return "", f.pathErr("readlink", rel, unix.EINVAL)
	}
	fd, err := f.open(dir, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return "", f.pathErr("readlink", rel, err)
	}
	defer unix.Close(fd)
	t, err := readlinkat(fd, base)
	if err != nil {
		return "", f.pathErr("readlink", rel, err)
	}
	return t, nil
}

// LinkBase returns the last element of the target of symlink rel, the way a
// "driver" or "physfn" link is read (→ "mlx5_core", "0000:18:00.0").
func (f *FS) LinkBase(rel string) (string, error) {
	t, err := f.Readlink(rel)
	if err != nil {
		return "", err
	}
	return path.Base(t), nil
}

// Exists reports whether rel resolves to something inside the root. A
// dangling link or an escaping one does not exist.
func (f *FS) Exists(rel string) bool {
	fd, err := f.open(rel, unix.O_PATH)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

// RealPath resolves every symlink in rel and returns the root-relative path
// it names ("bus/pci/devices/0000:18:00.0" →
// "devices/pci0000:15/0000:15:01.0/.../0000:18:00.0").
func (f *FS) RealPath(rel string) (string, error) {
	rel = clean(rel)
	if f.openat2 {
		fd, err := f.open(rel, unix.O_PATH)
		if err != nil {
			return "", f.pathErr("realpath", rel, err)
		}
		abs, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
		unix.Close(fd)
		if err == nil {
			if abs == f.root {
				return "", nil
			}
			if r, ok := strings.CutPrefix(abs, f.root+"/"); ok {
				return r, nil
			}
			if f.root == "/" && strings.HasPrefix(abs, "/") {
				return abs[1:], nil
			}
		}
		// /proc is unavailable or disagrees: fall through to the walk, which
		// needs nothing but the root.
	}
	r, err := f.walk(rel, true)
	if err != nil {
		return "", f.pathErr("realpath", rel, err)
	}
	return r, nil
}

// ReadLinks lists directory rel and returns, for each symlink in it, its
// target joined onto rel and cleaned: the root-relative path the link names
// lexically ("bus/pci/devices" → {"0000:18:00.0": "devices/pci0000:15/…"}).
// One directory handle serves every link, which matters for directories of
// thousands of devices. A target that climbs out of the root is left out
// and reported in the returned error list, never followed.
func (f *FS) ReadLinks(rel string) (links map[string]string, escaped []error, err error) {
	return f.ReadLinksOf(rel, nil)
}

// joinLink is path.Join(dir, target) for a link's target. sysfs writes
// them as "../../devices/…": the leading ".." drop dir's last elements and
// the rest is appended as is, one allocation instead of path.Clean's three
// (a scan joins thousands); anything else goes through path.Join.
func joinLink(dir, target string) string {
	up := 0
	for strings.HasPrefix(target[3*up:], "../") {
		up++
	}
	rest := target[3*up:]
	if dir == "" || rest == "" || strings.HasPrefix(rest, "/") || strings.HasSuffix(rest, "/") || strings.Contains(rest, "//") ||
		strings.Contains(rest, "/./") || strings.Contains(rest, "/../") || strings.HasPrefix(rest, "./") || strings.HasPrefix(rest, "..") ||
		strings.HasSuffix(rest, "/.") || strings.HasSuffix(rest, "/..") || rest == "." || strings.Contains(dir, "..") || strings.Contains(dir, "./") {
		return path.Join(dir, target)
	}
	d := dir
	for ; up > 0; up-- {
		i := strings.LastIndexByte(d, '/')
		if i < 0 {
			if d == "" {
				return path.Join(dir, target) // climbs above the root: path.Join says how
			}
			d = ""
			continue
		}
		d = d[:i]
	}
	if d == "" {
		return rest
	}
	return d + "/" + rest
}

// ReadLinksOf is ReadLinks of the entries want accepts (nil: all): a
// class directory lists a thousand devices a scan already knows.
func (f *FS) ReadLinksOf(rel string, want func(name string) bool) (links map[string]string, escaped []error, err error) {
	rel = clean(rel)
	name := rel
	if name == "" {
		name = "."
	}
	fd, err := f.open(name, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, nil, f.pathErr("readdir", rel, err)
	}
	defer unix.Close(fd)
	// Links are read as the listing goes (a map needs no sorted list), the
	// name handed to readlinkat as the kernel wrote it in the getdents
	// record, NUL-terminated: no C string is made for it.
	links = map[string]string{}
	err = eachDirent(fd, func(nb []byte, symlink bool) {
		if !symlink {
			return
		}
		name := string(nb)
		if want != nil && !want(name) {
			return
		}
		t, err := readlinkDirent(fd, nb, name)
		if err != nil {
			escaped = append(escaped, f.pathErr("readlink", path.Join(rel, name), err))
			return
		}
		if strings.HasPrefix(t, "/") {
			escaped = append(escaped, f.pathErr("readlink", path.Join(rel, name), ErrEscape))
			return
		}
		j := joinLink(rel, t)
		if j == ".." || strings.HasPrefix(j, "../") {
			escaped = append(escaped, f.pathErr("readlink", path.Join(rel, name), ErrEscape))
			return
		}
		links[name] = j
	})
	if err != nil {
		return nil, nil, f.pathErr("readdir", rel, err)
	}
	return links, escaped, nil
}
