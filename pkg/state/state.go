// Package state keeps one record per CNI attachment on disk: written
// atomically before a device is touched, read by DEL, GC and the reconciler,
// and guarded by a per-device file lock so two attachments never race for
// one device.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/railnet/railnet/pkg/atomicfile"
)

// DefaultDir is where the CNI keeps its records.
const DefaultDir = "/var/lib/cni/railnet"

// Phases of an ADD, recorded before each step so a crash leaves a record
// that says how far it got.
const (
	PhaseReserved = "reserved"   // record written, nothing touched
	PhaseVFConfig = "vf-config"  // VF settings being applied on the PF
	PhaseMoving   = "moving"     // netdev between host, temp netns and pod
	PhaseIPAM     = "ipam"       // IPAM ADD in progress
	PhaseEncrypt  = "encryption" // SAs and policies being installed
	PhaseDone     = "done"       // ADD returned success
)

// VFState is a VF's settings as the PF reports them.
type VFState struct {
	MAC       string `json:"mac,omitempty"`
	VLAN      int    `json:"vlan"`
	QoS       int    `json:"qos"`
	VLANProto int    `json:"vlanProto,omitempty"`
	SpoofChk  bool   `json:"spoofchk"`
	Trust     bool   `json:"trust"`
	LinkState uint32 `json:"linkState"`
	MinTxRate uint32 `json:"minTxRate"`
	MaxTxRate uint32 `json:"maxTxRate"`
}

// Record is one attachment.
type Record struct {
	ContainerID string    `json:"containerID"`
	IfName      string    `json:"ifName"`
	Netns       string    `json:"netns"`
	Network     string    `json:"network"` // the netconf's name: GC is per network
	CNIPath     string    `json:"cniPath,omitempty"`
	Created     time.Time `json:"created"`
	Phase       string    `json:"phase"`

	// The pod, from CNI_ARGS, when the runtime gave it: the reconciler
	// matches it against the kubelet's pod-resources.
	PodNamespace string `json:"podNamespace,omitempty"`
	PodName      string `json:"podName,omitempty"`
	PodUID       string `json:"podUID,omitempty"`

	DeviceID string `json:"deviceID"` // as given
	BDF      string `json:"bdf"`
	PF       string `json:"pf,omitempty"`   // PF netdev name (VF settings)
	VFIndex  int    `json:"vfIndex"`        // -1: not a VF
	Driver   string `json:"driver"`         // vfio-pci: no netdev move
	RDMA     string `json:"rdma,omitempty"` // RDMA device moved with the netdev

	// The host netdev as it was.
	HostName  string `json:"hostName,omitempty"`
	HostMAC   string `json:"hostMac,omitempty"`
	HostMTU   int    `json:"hostMtu,omitempty"`
	HostAlias string `json:"hostAlias,omitempty"`
	// How DEL knows the netdev again, whatever the pod renamed it to: its
	// PCI function (IFLA_PARENT_DEV_NAME), or, for a virtual link, its
	// ifindex.
	HostParent string `json:"hostParent,omitempty"`
	HostIndex  int    `json:"hostIndex,omitempty"`
	HostUp     bool   `json:"hostUp,omitempty"`
	TempNetns  string `json:"tempNetns,omitempty"` // where the netdev is renamed

	// Attach is how the device reached the pod: "" or "move" (the netdev
	// itself), or a child link of it ("macvlan", "ipvlan", "ipoib").
	Attach string `json:"attach,omitempty"`
	// Child is the child link, for attach other than move.
	Child *Child `json:"child,omitempty"`

	// Claim: the DRA claim the device came from (no deviceID from Multus);
	// the DaemonSet writes the claim's status.devices[].networkData from
	// it and Net.
	Claim *ClaimRef `json:"claim,omitempty"`
	// Net is what the pod got, recorded when ADD is done.
	Net *NetData `json:"net,omitempty"`

	// Encryption is what the encryption step installed (no key material).
	Encryption *Encryption `json:"encryption,omitempty"`

	VFOrig    *VFState `json:"vfOrig,omitempty"`    // VF settings before ADD
	RDMAMoved bool     `json:"rdmaMoved,omitempty"` // exclusive mode: moved into the pod

	Config []byte `json:"config"` // the netconf ADD got (DEL and GC reuse it)
}

// ClaimRef names a prepared ResourceClaim's device.
type ClaimRef struct {
	UID       string `json:"uid"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Request   string `json:"request"`
	Driver    string `json:"driver"`
	Pool      string `json:"pool"` // the ResourceSlice pool
	Device    string `json:"device"`
}

// NetData is the pod's interface as ADD left it.
type NetData struct {
	IfName string   `json:"ifName"`
	MAC    string   `json:"mac,omitempty"`
	IPs    []string `json:"ips,omitempty"` // CIDR
}

// Child is a child link created for a shared attachment. DEL finds it by
// its alias, whatever it is called and wherever it is.
type Child struct {
	Kind        string `json:"kind"`
	Parent      string `json:"parent"`      // the HCA's netdev in the host
	ParentIndex int    `json:"parentIndex"` // its ifindex then
	Alias       string `json:"alias"`
	TempName    string `json:"tempName"` // the name it is created under
	Mode        string `json:"mode,omitempty"`
	PKey        uint16 `json:"pkey,omitempty"`
}

// Encryption says how an attachment is encrypted: enough for DEL to remove
// it and for the DaemonSet to rotate its keys. Never key material.
type Encryption struct {
	Mode    string `json:"mode"`
	Keys    string `json:"keys"`
	Local   string `json:"local"`
	Subnet  string `json:"subnet"`
	IfIndex int    `json:"ifindex"`
	Reqid   uint32 `json:"reqid"`
	Offload string `json:"offload,omitempty"`
	KeysDir string `json:"keysDir"`
	// MACsec: the link railnet made and what is installed on it.
	MACsec *MACsec `json:"macsec,omitempty"`
}

// MACsec is an attachment's MACsec link: it carries CNI_IFNAME and the
// addresses; Lower is the pod's device renamed beneath it.
type MACsec struct {
	Lower   string  `json:"lower"`
	Alias   string  `json:"alias"`
	IfIndex int     `json:"ifindex"`
	KeyIDs  []uint8 `json:"keyIDs,omitempty"` // installed for receiving
	Sender  uint8   `json:"sender,omitempty"`
	Epoch   uint64  `json:"epoch,omitempty"` // packet numbers moved up to this epoch
}

// Shared reports whether the record is a child link on a shared device
// (which other attachments may share), not the device itself.
func (r *Record) Shared() bool { return r.Attach != "" && r.Attach != "move" }

// Store is a state directory.
type Store struct{ dir string }

// Open prepares dir and returns a store. The directory and its
// subdirectories must be real directories (not symlinks) owned by this
// process's user (root), and are kept at 0700: whoever could write in them
// could forge records or plant links that root then follows.
func Open(dir string) (*Store, error) {
	if dir == "" {
		dir = DefaultDir
	}
	for _, d := range []string{dir, filepath.Join(dir, "records"), filepath.Join(dir, "locks"), filepath.Join(dir, "netns")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("state dir: %w", err)
		}
		if err := private(d); err != nil {
			return nil, err
		}
	}
	return &Store{dir: dir}, nil
}

// private checks d with Lstat and takes group/other access away from a
// directory that is ours (a hostPath volume is created 0755).
func private(d string) error {
	var st unix.Stat_t
	if err := unix.Lstat(d, &st); err != nil {
		return fmt.Errorf("state dir %s: %w", d, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("state dir %s: not a directory (a symlink?)", d)
	}
	if int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("state dir %s: owned by uid %d, not %d", d, st.Uid, os.Geteuid())
	}
	if st.Mode&0o077 != 0 {
		if err := unix.Chmod(d, 0o700); err != nil {
			return fmt.Errorf("state dir %s: %w", d, err)
		}
	}
	return nil
}

// readNoFollow reads a regular file, refusing a symlink in its place.
func readNoFollow(p string) ([]byte, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// ReadOnly is a store to read records from, for tools (railnetctl): unlike
// Open it creates and changes nothing.
func ReadOnly(dir string) *Store {
	if dir == "" {
		dir = DefaultDir
	}
	return &Store{dir: dir}
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// Writable checks that records can be written (STATUS).
func (s *Store) Writable() error {
	f, err := os.CreateTemp(filepath.Join(s.dir, "records"), ".probe-*")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}

func key(containerID, ifName string) string {
	r := strings.NewReplacer("/", "_", "\x00", "_")
	return r.Replace(containerID) + "-" + r.Replace(ifName) + ".json"
}

func (s *Store) path(containerID, ifName string) string {
	return filepath.Join(s.dir, "records", key(containerID, ifName))
}

// Save writes the record atomically (temp file, fsync, rename, fsync dir).
func (s *Store) Save(r *Record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(s.path(r.ContainerID, r.IfName), b, 0o600, true)
}

// Load returns the record, or an error wrapping os.ErrNotExist.
func (s *Store) Load(containerID, ifName string) (*Record, error) {
	b, err := readNoFollow(s.path(containerID, ifName))
	if err != nil {
		return nil, err
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("record %s/%s: %w", containerID, ifName, err)
	}
	return &r, nil
}

// Delete removes the record; a missing one is fine.
func (s *Store) Delete(containerID, ifName string) error {
	err := os.Remove(s.path(containerID, ifName))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// List returns every record (unreadable ones are skipped and reported).
func (s *Store) List() ([]*Record, []error) {
	ents, err := os.ReadDir(filepath.Join(s.dir, "records"))
	if err != nil {
		return nil, []error{err}
	}
	var out []*Record
	var errs []error
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := readNoFollow(filepath.Join(s.dir, "records", e.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var r Record
		if err := json.Unmarshal(b, &r); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", e.Name(), err))
			continue
		}
		out = append(out, &r)
	}
	return out, errs
}

// ByBDF returns the record that holds the device, if any.
func (s *Store) ByBDF(bdf string) (*Record, error) {
	recs, _ := s.List()
	for _, r := range recs {
		if r.BDF == bdf {
			return r, nil
		}
	}
	return nil, os.ErrNotExist
}

// Lock is a held per-device lock.
type Lock struct {
	f    *os.File
	next *Lock // released with it
}

// LockDevice takes the device's lock, waiting up to timeout.
func (s *Store) LockDevice(bdf string, timeout time.Duration) (*Lock, error) {
	return s.lock(bdf, unix.LOCK_EX, timeout)
}

// LockDeviceShared takes the device's lock shared: attachments of child
// links hold it so, and each its slot's lock exclusively, so they run
// side by side but never while the device itself moves.
func (s *Store) LockDeviceShared(bdf string, timeout time.Duration) (*Lock, error) {
	return s.lock(bdf, unix.LOCK_SH, timeout)
}

// LockRecord takes the locks an operation on rec needs: the device's
// exclusively, or, for a child link, the device's shared and the slot's
// exclusively. Unlock releases both.
func (s *Store) LockRecord(r *Record, timeout time.Duration) (*Lock, error) {
	if !r.Shared() {
		return s.LockDevice(r.BDF, timeout)
	}
	return s.LockSlot(r.BDF, r.DeviceID, timeout)
}

// LockSlot takes bdf's lock shared and slot's exclusively.
func (s *Store) LockSlot(bdf, slot string, timeout time.Duration) (*Lock, error) {
	dev, err := s.LockDeviceShared(bdf, timeout)
	if err != nil {
		return nil, err
	}
	key := slot
	if key == bdf {
		key = bdf + "#child"
	}
	l, err := s.LockDevice(key, timeout)
	if err != nil {
		dev.Unlock()
		return nil, err
	}
	l.next = dev
	return l, nil
}

func (s *Store) lock(bdf string, how int, timeout time.Duration) (*Lock, error) {
	p := filepath.Join(s.dir, "locks", strings.ReplaceAll(bdf, "/", "_")+".lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return &Lock{f: f}, nil
		}
		if err != unix.EWOULDBLOCK || time.Now().After(deadline) {
			f.Close()
			if err == unix.EWOULDBLOCK {
				return nil, fmt.Errorf("device %s is locked by another operation", bdf)
			}
			return nil, err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Unlock releases the lock (also released when the process dies).
func (l *Lock) Unlock() {
	if l != nil && l.f != nil {
		unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
		l.f.Close()
		l.f = nil
	}
	if l != nil && l.next != nil {
		l.next.Unlock()
		l.next = nil
	}
}

// StagingPath is where the staging netns is bind-mounted: one namespace,
// shared by every attachment and kept across runs, in which links are
// renamed on their way into and out of pods. Hold LockStaging to use it.
func (s *Store) StagingPath() string { return filepath.Join(s.dir, "netns", "staging") }

// LockStaging serializes use of the staging netns (a rename there must not
// meet another attachment's link of the same name).
func (s *Store) LockStaging(timeout time.Duration) (*Lock, error) {
	return s.LockDevice("staging-netns", timeout)
}
