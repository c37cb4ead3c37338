// Package netdev moves network devices between namespaces and configures
// VFs on their PF, each mutation paired with its undo. It works through
// netlink handles opened in the namespace concerned, never by switching the
// calling thread.
package netdev

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NewPinnedNetns creates a network namespace bind-mounted at path, so it
// outlives this process: a crash while a device sits in it leaves the
// device where DEL or GC can find it (a veth in an unreferenced namespace
// is destroyed; a VF would be pushed back to the host under any name).
func NewPinnedNetns(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("temp netns %s: %w", path, err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		// The thread enters the new namespace and comes back; if it cannot
		// come back it stays locked, and the runtime discards it when the
		// goroutine ends. (The main thread cannot be discarded, only
		// parked: left in the new namespace, it would change what
		// /proc/<pid>/ns/net, "the host", means for the whole process.)
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			runtime.UnlockOSThread()
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		merr := unix.Mount(src, path, "none", unix.MS_BIND, "")
		if err := netns.Set(orig); err == nil {
			runtime.UnlockOSThread()
		}
		if merr != nil {
			errc <- fmt.Errorf("bind %s: %w", path, merr)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// RemovePinnedNetns unmounts and removes a pinned namespace. Missing is fine.
func RemovePinnedNetns(path string) error {
	// UMOUNT_NOFOLLOW: a symlink planted at path must not unmount what it
	// points to.
	if err := unix.Unmount(path, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Namespace is an open network namespace with a netlink handle in it.
type Namespace struct {
	NS     netns.NsHandle
	Handle *netlink.Handle
	Path   string
	rdma   *netlink.Handle
}

// RDMA is a handle for RDMA netlink in the namespace (the process's own:
// Handle itself).
func (n *Namespace) RDMA() (*netlink.Handle, error) {
	if n.Path == "" {
		return n.Handle, nil
	}
	if n.rdma == nil {
		h, err := netlink.NewHandleAt(n.NS, unix.NETLINK_RDMA)
		if err != nil {
			return nil, err
		}
		n.rdma = h
	}
	return n.rdma, nil
}

// OpenNamespace opens the namespace at path ("" = this process's).
func OpenNamespace(path string) (*Namespace, error) {
	var h netns.NsHandle
	var err error
	if path == "" {
		h, err = netns.GetFromPath(fmt.Sprintf("/proc/%d/ns/net", os.Getpid()))
	} else {
		h, err = netns.GetFromPath(path)
	}
	if err != nil {
		return nil, err
	}
	if err := isNetns(int(h)); err != nil {
		h.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	// Only the families railnet speaks: a bare NewHandleAt also opens
	// NETLINK_NETFILTER. This process's own namespace needs no namespace
	// switch to open sockets in, and gets RDMA netlink too (only with
	// ib_core loaded); another namespace gets route netlink, and RDMA
	// netlink when asked (RDMA), since each socket there costs a switch in
	// and out.
	var nh *netlink.Handle
	if path == "" {
		nh, err = netlink.NewHandle(unix.NETLINK_ROUTE, unix.NETLINK_RDMA)
		if err != nil {
			nh, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		}
	} else {
		nh, err = netlink.NewHandleAt(h, unix.NETLINK_ROUTE)
	}
	if err != nil {
		h.Close()
		return nil, err
	}
	return &Namespace{NS: h, Handle: nh, Path: path}, nil
}

// ErrNotNetns is returned for a path that is not a network namespace.
var ErrNotNetns = errors.New("not a network namespace")

func isNetns(fd int) error {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return err
	}
	// NSFS_MAGIC; older kernels: PROC_SUPER_MAGIC.
	if st.Type != 0x6e736673 && st.Type != 0x9fa0 {
		return ErrNotNetns
	}
	return nil
}

// Close releases the handle and the namespace; closing twice is harmless.
func (n *Namespace) Close() {
	if n == nil {
		return
	}
	if n.Handle != nil {
		n.Handle.Close()
		n.Handle = nil
	}
	if n.rdma != nil {
		n.rdma.Close()
		n.rdma = nil
	}
	if n.NS.IsOpen() {
		n.NS.Close()
		n.NS = netns.None()
	}
}
