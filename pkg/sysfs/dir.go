package sysfs

import (
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// Dir is an open directory below a FS's root. Names given to its methods are
// relative to it and resolved beneath it: a symlink that leaves the
// directory (a device's "driver" or "physfn") is not followed from here —
// read it with Readlink, or follow it through the FS. Reading many
// attributes of one device through a Dir spares the kernel walking the
// device's ten-element path for each of them, the bulk of a scan's cost.
type Dir struct {
	fs  *FS
	rel string // root-relative path
	fd  int    // -1 with the user-space resolver
}

// OpenDir opens directory rel. Close it when done.
func (f *FS) OpenDir(rel string) (*Dir, error) {
	rel = clean(rel)
	d := &Dir{fs: f, rel: rel, fd: -1}
	if !f.openat2 {
		if _, err := f.walk(rel, true); err != nil {
			return nil, f.pathErr("open", rel, err)
		}
		return d, nil
	}
	fd, err := f.open(rel, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return nil, f.pathErr("open", rel, err)
	}
	d.fd = fd
	return d, nil
}

// Close releases the directory.
func (d *Dir) Close() error {
	if d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	return err
}

// Path is the directory's root-relative path.
func (d *Dir) Path() string { return d.rel }

func (d *Dir) join(name string) string { return path.Join(d.rel, name) }

func (d *Dir) open(name string, flags int) (int, error) {
	if d.fd < 0 {
		return d.fs.open(d.join(name), flags)
	}
	name = strings.TrimPrefix(path.Clean(name), "/")
	for {
		var fd int
		var err error
		if !strings.Contains(name, "/") && name != ".." {
			// One element: a plain openat with O_NOFOLLOW cannot leave the directory.
			fd, err = unix.Openat(d.fd, name, flags|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
			if err == unix.ELOOP && flags&unix.O_PATH == 0 {
				err = unix.EXDEV // a symlink: not followed from a Dir
			}
		} else {
			fd, err = unix.Openat2(d.fd, name, &unix.OpenHow{
				Flags:   uint64(flags | unix.O_CLOEXEC),
				Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
			})
		}
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		return fd, err
	}
}

// ReadFile reads the file name in the directory.
func (d *Dir) ReadFile(name string) ([]byte, error) {
	fd, err := d.open(name, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return nil, d.fs.pathErr("read", d.join(name), err)
	}
	defer unix.Close(fd)
	b, err := readAll(fd)
	if err != nil {
		return nil, d.fs.pathErr("read", d.join(name), err)
	}
	return b, nil
}

// ReadString reads an attribute with surrounding white space removed.
func (d *Dir) ReadString(name string) (string, error) {
	b, err := d.ReadFile(name)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// ReadInt reads a decimal attribute.
func (d *Dir) ReadInt(name string) (int, error) {
	s, err := d.ReadString(name)
	if err != nil {
		return 0, err
	}
	return parseInt(d.fs, d.join(name), s)
}

// ReadDirents lists a subdirectory ("." for the directory itself).
func (d *Dir) ReadDirents(name string) ([]Dirent, error) {
	fd, err := d.open(name, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, d.fs.pathErr("readdir", d.join(name), err)
	}
	defer unix.Close(fd)
	ents, err := getdents(fd)
	if err != nil {
		return nil, d.fs.pathErr("readdir", d.join(name), err)
	}
	return ents, nil
}

// Which reports which of names directory name holds: a function's
// directory has some forty entries and a scan asks after ten, at a
// thousand functions a scan (no string per entry).
func (d *Dir) Which(name string, names []string) ([]bool, error) {
	fd, err := d.open(name, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, d.fs.pathErr("readdir", d.join(name), err)
	}
	defer unix.Close(fd)
	out := make([]bool, len(names))
	err = eachDirent(fd, func(e []byte, _ bool) {
		for i, n := range names {
			if string(e) == n {
				out[i] = true
				return
			}
		}
	})
	if err != nil {
		return nil, d.fs.pathErr("readdir", d.join(name), err)
	}
	return out, nil
}

// ReadNames lists a subdirectory's names, sorted.
func (d *Dir) ReadNames(name string) ([]string, error) {
	ents, err := d.ReadDirents(name)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(ents))
	for i, e := range ents {
		out[i] = e.Name
	}
	return out, nil
}

// Readlink returns the target of the symlink name, as written.
func (d *Dir) Readlink(name string) (string, error) {
	if d.fd < 0 || strings.Contains(name, "/") {
		return d.fs.Readlink(d.join(name))
	}
	t, err := readlinkat(d.fd, name)
	if err != nil {
		return "", d.fs.pathErr("readlink", d.join(name), err)
	}
	return t, nil
}

// LinkBase returns the last element of the symlink's target.
func (d *Dir) LinkBase(name string) (string, error) {
	t, err := d.Readlink(name)
	if err != nil {
		return "", err
	}
	return path.Base(t), nil
}

// OpenDir opens a subdirectory beneath d.
func (d *Dir) OpenDir(name string) (*Dir, error) {
	sub := &Dir{fs: d.fs, rel: d.join(name), fd: -1}
	if d.fd < 0 {
		return d.fs.OpenDir(sub.rel)
	}
	fd, err := d.open(name, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return nil, d.fs.pathErr("open", sub.rel, err)
	}
	sub.fd = fd
	return sub, nil
}
