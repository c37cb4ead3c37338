// Package claims is the DRA driver's checkpoint: one file per prepared
// ResourceClaim (claim → devices → pod UIDs), written by Prepare before it
// answers the kubelet and removed by Unprepare. The daemon reads it back
// after a restart; the CNI reads it to find its device when Multus passes
// no deviceID (the kubelet prepares a pod's claims before its sandbox
// exists). No Kubernetes types: the CNI binary imports this package.
package claims

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/railnet/railnet/pkg/atomicfile"
)

// Driver is the DRA driver's name.
const Driver = "railnet.io"

// Version of the file format.
const Version = 1

// Dir is where a CNI state directory keeps the driver's claims.
func Dir(stateDir string) string { return filepath.Join(stateDir, "dra") }

// Claim is one prepared ResourceClaim's railnet devices on this node.
type Claim struct {
	Version   int    `json:"version"`
	UID       string `json:"uid"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// PodClaimName is the pod's own name for the claim (spec.resourceClaims[].name;
	// the resource.kubernetes.io/pod-claim-name annotation of a claim made
	// from a template), which a NAD's "claim" may name.
	PodClaimName string   `json:"podClaimName,omitempty"`
	Pods         []string `json:"pods"` // UIDs of the pods it is reserved for
	Devices      []Device `json:"devices"`
}

// Device is one allocated device of a claim.
type Device struct {
	Request  string   `json:"request"` // as allocated: "nic" or "nic/subrequest"
	Pool     string   `json:"pool"`    // railnet's pool name
	DRAPool  string   `json:"draPool"` // the ResourceSlice pool
	Device   string   `json:"device"`  // the device's name in the slice
	ID       string   `json:"id"`      // what the CNI attaches: BDF, or BDF#k for a shared slot
	BDF      string   `json:"bdf"`     // the PCI function
	RDMA     []string `json:"rdma,omitempty"`
	CDI      []string `json:"cdi,omitempty"` // CDI device IDs returned for it
	Resource string   `json:"resource"`      // railnet.io/<pool>
}

// RequestName is the request's own name (a subrequest's parent).
func (d Device) RequestName() string {
	r, _, _ := strings.Cut(d.Request, "/")
	return r
}

var reUID = regexp.MustCompile(`^[0-9a-zA-Z-]+$`) // and at most 64 long: see file

func file(dir, uid string) (string, error) {
	if len(uid) > 64 || !reUID.MatchString(uid) {
		return "", fmt.Errorf("claim UID %q is not a UID", uid)
	}
	return filepath.Join(dir, uid+".json"), nil
}

// Save writes a claim atomically and durably (0600, in a 0700 directory).
func Save(dir string, c *Claim) error {
	p, err := file(dir, c.UID)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	c.Version = Version
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return atomicfile.Write(p, b, 0o600, true)
}

// Remove deletes a claim's file; a missing one is not an error.
func Remove(dir, uid string) error {
	p, err := file(dir, uid)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Load reads one claim; fs.ErrNotExist when it is not prepared.
func Load(dir, uid string) (*Claim, error) {
	p, err := file(dir, uid)
	if err != nil {
		return nil, err
	}
	return read(p)
}

// read refuses what root did not write: a file other users own or may
// write is not a checkpoint of the driver's.
func read(p string) (*Claim, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fs.ErrNotExist
		}
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Uid != uint32(os.Geteuid()) || st.Mode&0o022 != 0 {
		return nil, fmt.Errorf("%s: not a regular file of this user's, writable by it only", p)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var c Claim
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if c.Version != Version {
		return nil, fmt.Errorf("%s: version %d, want %d", p, c.Version, Version)
	}
	return &c, nil
}

// List reads every claim, sorted by UID; unreadable files are skipped and
// reported in errs.
func List(dir string) (out []*Claim, errs []error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, []error{err}
	}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".json") || strings.HasPrefix(name, ".") {
			continue
		}
		c, err := read(filepath.Join(dir, name))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *Claim) int { return strings.Compare(a.UID, b.UID) })
	return out, errs
}

// Match is a device a pod's claim holds.
type Match struct {
	Claim  *Claim
	Device Device
}

func (m Match) String() string {
	return fmt.Sprintf("%s/%s request %s: %s", m.Claim.Namespace, m.Claim.Name, m.Device.Request, m.Device.ID)
}

// Find returns the one device of the pod's prepared claims that name
// selects: a claim by its name or the pod's name for it, or a request by
// its name. An empty name selects the pod's only device. None, or more
// than one, is an error that says what there is.
func Find(dir, podUID, name string) (Match, error) {
	if podUID == "" {
		return Match{}, errors.New("no K8S_POD_UID in CNI_ARGS: a DRA-allocated device is found by its pod")
	}
	all, errs := List(dir)
	var mine, picked []Match
	for _, c := range all {
		if !slices.Contains(c.Pods, podUID) {
			continue
		}
		for _, d := range c.Devices {
			m := Match{Claim: c, Device: d}
			mine = append(mine, m)
			if name == "" || name == c.Name || name == c.PodClaimName || name == d.RequestName() || name == d.Request {
				picked = append(picked, m)
			}
		}
	}
	what := func(ms []Match) string {
		s := make([]string, len(ms))
		for i, m := range ms {
			s[i] = m.String()
		}
		return strings.Join(s, "; ")
	}
	switch {
	case len(picked) == 1:
		return picked[0], nil
	case len(picked) > 1:
		return Match{}, fmt.Errorf("claim %q is ambiguous for pod %s: it selects %d devices (%s); name one request", name, podUID, len(picked), what(picked))
	case len(mine) == 0:
		err := fmt.Errorf("pod %s has no prepared railnet.io claim on this node (in %s)", podUID, dir)
		if len(errs) > 0 {
			err = fmt.Errorf("%w; unreadable: %w", err, errors.Join(errs...))
		}
		return Match{}, err
	default:
		return Match{}, fmt.Errorf("claim %q names none of pod %s's railnet.io devices (%s)", name, podUID, what(mine))
	}
}
