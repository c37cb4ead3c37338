// Package keys reads the encryption keys the admin gives a namespace: one
// file per network, mirrored from a Secret by the DaemonSet to
// <keysDir>/<pod namespace>/<name>, and derives what each attachment needs
// from them (HKDF-SHA256). Errors name a file and a line, never what is in
// it: key material never reaches a log, an error or a result.
//
// A key file holds one key per line:
//
//	<id> <algorithm> <hex key> [sendAfter=<RFC3339 time>]
//
// id is 1-255 and unique in the file; algorithm is aes-gcm-128 (16-byte
// key) or aes-gcm-256 (32-byte key); blank lines and lines starting with
// '#' are ignored. A key is used for receiving as soon as it is in the
// file, and for sending from its sendAfter on (none: at once); the sender
// is the key whose sendAfter passed last (ties: the higher id).
package keys

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultDir is where the DaemonSet mirrors the keys Secret.
const DefaultDir = "/etc/railnet/keys"

// Algorithms and their key lengths in bytes.
var Algorithms = map[string]int{"aes-gcm-128": 16, "aes-gcm-256": 32}

// Key is one key of a file.
type Key struct {
	ID        uint8
	Algorithm string
	Secret    []byte
	SendAfter time.Time // zero: sends at once
}

// String never shows the secret.
func (k Key) String() string { return fmt.Sprintf("key %d (%s)", k.ID, k.Algorithm) }

// Set is a key file's keys, by id.
type Set struct {
	Keys []Key
}

// Sender is the key to send with at now: the one whose sendAfter passed
// last (ties: the higher id). ok is false when no key may send yet.
func (s *Set) Sender(now time.Time) (k Key, ok bool) {
	for _, c := range s.Keys {
		if c.SendAfter.After(now) {
			continue
		}
		if !ok || c.SendAfter.After(k.SendAfter) || (c.SendAfter.Equal(k.SendAfter) && c.ID > k.ID) {
			k, ok = c, true
		}
	}
	return k, ok
}

// NextSwitch is the earliest sendAfter after now (zero: none): when the
// sender changes next.
func (s *Set) NextSwitch(now time.Time) time.Time {
	var t time.Time
	for _, c := range s.Keys {
		if c.SendAfter.After(now) && (t.IsZero() || c.SendAfter.Before(t)) {
			t = c.SendAfter
		}
	}
	return t
}

// IDs lists the key ids.
func (s *Set) IDs() []uint8 {
	var ids []uint8
	for _, k := range s.Keys {
		ids = append(ids, k.ID)
	}
	return ids
}

// ErrInvalid wraps every refusal of a key file or a keys name.
var ErrInvalid = errors.New("invalid keys")

// nameRE and a length check: a bounded repetition ({0,251}) would compile
// into 251 copies at every start of the CNI binary (3 ms, 165 kB).
var nameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`)

// ValidName reports why a keys name (the NAD's) or a pod namespace cannot
// name a file below keysDir: "" when it can.
func ValidName(s string) string {
	switch {
	case s == "":
		return "empty"
	case strings.Contains(s, "/"):
		return "contains /"
	case strings.Contains(s, ".."):
		return "contains .."
	case len(s) > 253 || !nameRE.MatchString(s):
		return "not a Secret key name (letters, digits, '.', '_', '-')"
	}
	return ""
}

// Path is <dir>/<namespace>/<name>, once both are known to stay below dir.
func Path(dir, namespace, name string) (string, error) {
	if why := ValidName(namespace); why != "" {
		return "", fmt.Errorf("%w: pod namespace %q: %s", ErrInvalid, namespace, why)
	}
	if why := ValidName(name); why != "" {
		return "", fmt.Errorf("%w: keys %q: %s", ErrInvalid, name, why)
	}
	p := filepath.Join(dir, namespace, name)
	if rel, err := filepath.Rel(dir, p); err != nil || strings.HasPrefix(rel, "..") {
		return "", fmt.Errorf("%w: keys %q is not below %s", ErrInvalid, name, dir)
	}
	return p, nil
}

// maxFile bounds a key file: 255 keys of 64 hex digits and a time fit.
const maxFile = 64 << 10

// Load reads and checks <dir>/<namespace>/<name>: the directories and the
// file must be root's and closed to group and others, the file a regular
// file (no symlink anywhere below dir), with at least one valid key.
func Load(dir, namespace, name string) (*Set, error) {
	p, err := Path(dir, namespace, name)
	if err != nil {
		return nil, err
	}
	if err := private(dir, true); err != nil {
		return nil, err
	}
	if err := private(filepath.Dir(p), true); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s does not exist (no key %s.%s in the keys Secret)", ErrInvalid, p, namespace, name)
		}
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("%w: %s is a symlink", ErrInvalid, p)
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, p, err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, p, err)
	}
	if err := checkMode(p, st, false); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, p, err)
	}
	if len(b) > maxFile {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrInvalid, p, maxFile)
	}
	keys, err := Parse(b)
	clear(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return &Set{Keys: keys}, nil
}

func private(dir string, isDir bool) error {
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalid, dir, err)
	}
	return checkMode(dir, st, isDir)
}

func checkMode(p string, st unix.Stat_t, isDir bool) error {
	typ := st.Mode & unix.S_IFMT
	switch {
	case isDir && typ != unix.S_IFDIR:
		return fmt.Errorf("%w: %s is not a directory (a symlink?)", ErrInvalid, p)
	case !isDir && typ != unix.S_IFREG:
		return fmt.Errorf("%w: %s is not a regular file", ErrInvalid, p)
	case st.Uid != 0:
		return fmt.Errorf("%w: %s is owned by uid %d, not root", ErrInvalid, p, st.Uid)
	case st.Mode&0o077 != 0:
		return fmt.Errorf("%w: %s is open to group or others (mode %04o; want %s)", ErrInvalid, p, st.Mode&0o7777,
			map[bool]string{true: "0700", false: "0400 or 0600"}[isDir])
	}
	return nil
}

// Parse reads a key file's content. Errors say which line and why, never
// what the line holds.
func Parse(b []byte) ([]Key, error) {
	var keys []Key
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 4096), maxFile)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 3 || len(f) > 4 {
			return nil, fmt.Errorf("%w: line %d: want <id> <algorithm> <hex key> [sendAfter=<RFC3339>], found %d fields", ErrInvalid, n, len(f))
		}
		id, err := strconv.ParseUint(f[0], 10, 8)
		if err != nil || id == 0 {
			return nil, fmt.Errorf("%w: line %d: the id is not a number 1-255", ErrInvalid, n)
		}
		want, ok := Algorithms[f[1]]
		if !ok {
			return nil, fmt.Errorf("%w: line %d: unknown algorithm (want aes-gcm-128 or aes-gcm-256)", ErrInvalid, n)
		}
		secret, err := hex.DecodeString(f[2])
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: the key is not hexadecimal", ErrInvalid, n)
		}
		if len(secret) != want {
			clear(secret)
			return nil, fmt.Errorf("%w: line %d: %s takes a %d-byte key, this one has %d bytes", ErrInvalid, n, f[1], want, len(secret))
		}
		if allZero(secret) {
			return nil, fmt.Errorf("%w: line %d: the key is all zeros", ErrInvalid, n)
		}
		k := Key{ID: uint8(id), Algorithm: f[1], Secret: secret}
		if len(f) == 4 {
			v, ok := strings.CutPrefix(f[3], "sendAfter=")
			t, err := time.Parse(time.RFC3339, v)
			if !ok || err != nil {
				return nil, fmt.Errorf("%w: line %d: the fourth field is not sendAfter=<RFC3339 time>", ErrInvalid, n)
			}
			k.SendAfter = t
		}
		if slices.ContainsFunc(keys, func(o Key) bool { return o.ID == k.ID }) {
			return nil, fmt.Errorf("%w: line %d: id %d is used twice", ErrInvalid, n, k.ID)
		}
		keys = append(keys, k)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: line %d: %v", ErrInvalid, n+1, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no key in the file", ErrInvalid)
	}
	slices.SortFunc(keys, func(a, b Key) int { return int(a.ID) - int(b.ID) })
	return keys, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
