package keys

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const k128 = "000102030405060708090a0b0c0d0e0f"
const k256 = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100"

// keyDir makes <root>/<ns>/<name> with body, as the DaemonSet does.
func keyDir(t *testing.T, ns, name, body string) (root, path string) {
	t.Helper()
	root = filepath.Join(t.TempDir(), "keys")
	if err := os.MkdirAll(filepath.Join(root, ns), 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chmod(root, 0o700)
	path = filepath.Join(root, ns, name)
	if err := os.WriteFile(path, []byte(body), 0o400); err != nil {
		t.Fatal(err)
	}
	return root, path
}

func TestParse(t *testing.T) {
	keys, err := Parse([]byte("# rotation\n\n2 aes-gcm-256 " + k256 + " sendAfter=2026-12-01T00:00:00Z\n1 aes-gcm-128 " + k128 + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].ID != 1 || keys[1].ID != 2 || len(keys[0].Secret) != 16 || len(keys[1].Secret) != 32 ||
		!keys[1].SendAfter.Equal(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("keys %v", keys)
	}
	if s := keys[0].String(); strings.Contains(s, k128) {
		t.Errorf("String shows the key: %s", s)
	}
}

// Every refusal names the line and the reason, and never quotes the file.
func TestParseRefusals(t *testing.T) {
	for _, c := range []struct{ body, want string }{
		{"", "no key"},
		{"# only a comment\n", "no key"},
		{"1 aes-gcm-128 " + k128[:30] + "\n", "line 1: aes-gcm-128 takes a 16-byte key, this one has 15 bytes"},
		{"1 aes-gcm-256 " + k128 + "\n", "takes a 32-byte key"},
		{"1 aes-gcm-128 " + k128 + "\n1 aes-gcm-128 " + k128 + "\n", "line 2: id 1 is used twice"},
		{"0 aes-gcm-128 " + k128 + "\n", "line 1: the id is not a number 1-255"},
		{"256 aes-gcm-128 " + k128 + "\n", "the id is not a number 1-255"},
		{"1 chacha20 " + k128 + "\n", "unknown algorithm"},
		{"1 aes-gcm-128 zz" + k128[2:] + "\n", "not hexadecimal"},
		{"1 aes-gcm-128\n", "found 2 fields"},
		{"1 aes-gcm-128 " + k128 + " sendAfter=tomorrow\n", "sendAfter=<RFC3339 time>"},
		{"1 aes-gcm-128 00000000000000000000000000000000\n", "all zeros"},
		{"\x00\x01garbage\xff\n", "line 1"},
	} {
		_, err := Parse([]byte(c.body))
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.body, err, c.want)
			continue
		}
		for _, secret := range []string{k128, k128[:30], k128[2:], "garbage", "tomorrow"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%q: the error quotes the file: %v", c.body, err)
			}
		}
	}
}

func TestLoadRefusals(t *testing.T) {
	good := "1 aes-gcm-128 " + k128 + "\n"
	root, p := keyDir(t, "ml", "training", good)
	if s, err := Load(root, "ml", "training"); err != nil || len(s.Keys) != 1 {
		t.Fatalf("good file: %v", err)
	}
	for _, name := range []string{"../ml/training", "a/b", "..", ".hidden-", ""} {
		if _, err := Load(root, "ml", name); err == nil || !errors.Is(err, ErrInvalid) {
			t.Errorf("keys %q: %v", name, err)
		}
	}
	if _, err := Load(root, "..", "training"); err == nil {
		t.Error("namespace .. accepted")
	}
	if _, err := Load(root, "ml", "missing"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing: %v", err)
	}
	os.Chmod(p, 0o440)
	if _, err := Load(root, "ml", "training"); err == nil || !strings.Contains(err.Error(), "group or others") {
		t.Errorf("group-readable: %v", err)
	}
	os.Chmod(p, 0o404)
	if _, err := Load(root, "ml", "training"); err == nil || !strings.Contains(err.Error(), "group or others") {
		t.Errorf("world-readable: %v", err)
	}
	os.Chmod(p, 0o400)
	if os.Geteuid() == 0 {
		os.Chown(p, 1234, 1234)
		if _, err := Load(root, "ml", "training"); err == nil || !strings.Contains(err.Error(), "not root") {
			t.Errorf("owned by 1234: %v", err)
		}
		os.Chown(p, 0, 0)
	}
	os.Chmod(filepath.Dir(p), 0o755)
	if _, err := Load(root, "ml", "training"); err == nil || !strings.Contains(err.Error(), "group or others") {
		t.Errorf("open namespace directory: %v", err)
	}
	os.Chmod(filepath.Dir(p), 0o700)
	// A symlink in place of the file, or of the namespace directory.
	other := filepath.Join(t.TempDir(), "elsewhere")
	os.WriteFile(other, []byte(good), 0o400)
	os.Symlink(other, filepath.Join(root, "ml", "linked"))
	if _, err := Load(root, "ml", "linked"); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("symlinked file: %v", err)
	}
	os.Symlink(filepath.Join(root, "ml"), filepath.Join(root, "team"))
	if _, err := Load(root, "team", "training"); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("symlinked namespace: %v", err)
	}
	// Bad content: the error names the file and line, not the content.
	bad := "1 aes-gcm-128 " + k128[:31] + "\n"
	os.Chmod(p, 0o600)
	os.WriteFile(p, []byte(bad), 0o400)
	_, err := Load(root, "ml", "training")
	if err == nil || !strings.Contains(err.Error(), p) || strings.Contains(err.Error(), k128[:31]) {
		t.Errorf("bad content: %v", err)
	}
	os.WriteFile(p, nil, 0o400)
	if _, err := Load(root, "ml", "training"); err == nil || !strings.Contains(err.Error(), "no key") {
		t.Errorf("empty file: %v", err)
	}
}

func TestSender(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	s := &Set{Keys: []Key{{ID: 1}, {ID: 2, SendAfter: t0}, {ID: 3, SendAfter: t0.Add(time.Hour)}}}
	for _, c := range []struct {
		at   time.Time
		want uint8
		next time.Time
	}{{t0.Add(-time.Second), 1, t0}, {t0, 2, t0.Add(time.Hour)}, {t0.Add(2 * time.Hour), 3, time.Time{}}} {
		k, ok := s.Sender(c.at)
		if !ok || k.ID != c.want || !s.NextSwitch(c.at).Equal(c.next) {
			t.Errorf("at %v: sender %d (%v), next %v; want %d, %v", c.at, k.ID, ok, s.NextSwitch(c.at), c.want, c.next)
		}
	}
	if _, ok := (&Set{Keys: []Key{{ID: 1, SendAfter: t0}}}).Sender(t0.Add(-1)); ok {
		t.Error("a key sends before its sendAfter")
	}
}

// hkdfRef is RFC 5869 written out with HMAC-SHA256, independent of the
// standard library's crypto/hkdf.
func hkdfRef(secret, salt, info []byte, n int) []byte {
	m := hmac.New(sha256.New, salt)
	m.Write(secret)
	prk := m.Sum(nil)
	var out, t []byte
	for i := byte(1); len(out) < n; i++ {
		m := hmac.New(sha256.New, prk)
		m.Write(t)
		m.Write(info)
		m.Write([]byte{i})
		t = m.Sum(nil)
		out = append(out, t...)
	}
	return out[:n]
}

// Known answers: the derivations for fixed keys and addresses, written
// here (a change to any label, order or length breaks interoperability
// between nodes running different railnet versions), and checked against
// RFC 5869 written out independently.
func TestDerivationKnownAnswers(t *testing.T) {
	s128, _ := hex.DecodeString(k128)
	s256, _ := hex.DecodeString(k256)
	a, b := netip.MustParseAddr("10.20.0.5"), netip.MustParseAddr("10.20.1.7")
	k1, k2 := Key{ID: 1, Algorithm: "aes-gcm-128", Secret: s128}, Key{ID: 9, Algorithm: "aes-gcm-256", Secret: s256}
	a16, b16 := a.As16(), b.As16()
	for _, c := range []struct {
		name, want string
		got, ref   []byte
	}{
		{"ESP k1 a→b", "KAT_ESP_K1_AB", ESP(k1, a, b), hkdfRef(s128, []byte(salt), append(append(append([]byte("esp\x00\x01\x00"), a16[:]...), 0), b16[:]...), 20)},
		{"ESP k1 b→a", "KAT_ESP_K1_BA", ESP(k1, b, a), hkdfRef(s128, []byte(salt), append(append(append([]byte("esp\x00\x01\x00"), b16[:]...), 0), a16[:]...), 20)},
		{"ESP k9 a→b", "KAT_ESP_K9_AB", ESP(k2, a, b), hkdfRef(s256, []byte(salt), append(append(append([]byte("esp\x00\x09\x00"), a16[:]...), 0), b16[:]...), 36)},
		{"MACsec SAK k9", "KAT_SAK_K9", MACsecSAK(k2), hkdfRef(s256, []byte(salt), []byte("macsec sak\x00\x09"), 32)},
		{"MACsec salt k1", "KAT_SALT_K1", MACsecSalt(k1), hkdfRef(s128, []byte(salt), []byte("macsec salt\x00\x01"), 12)},
	} {
		if hex.EncodeToString(c.got) != hex.EncodeToString(c.ref) {
			t.Errorf("%s: %x, RFC 5869 gives %x", c.name, c.got, c.ref)
		}
		if hex.EncodeToString(c.got) != kat[c.want] {
			t.Errorf("%s: %x, known answer %s", c.name, c.got, kat[c.want])
		}
	}
	if hex.EncodeToString(ESP(k1, a, b)) == hex.EncodeToString(ESP(k1, b, a)) {
		t.Error("both directions share a key")
	}
	if got := SPI(9, 261); got != 0x09000105 || SPIKeyID(got) != 9 {
		t.Errorf("SPI %#x", got)
	}
	if sa, sb := SCI(a), SCI(b); sa == sb || sa>>56&1 != 0 || sa>>57&1 != 1 || sa&0xffff != 1 {
		t.Errorf("SCI %#x %#x", sa, sb)
	}
	if fmtSCI := SCI(a); fmtSCI != kSCI {
		t.Errorf("SCI(10.20.0.5) = %#x, known answer %#x", fmtSCI, kSCI)
	}
}

// TestESPDeriverIsHKDF holds the deriver's expand step (one HMAC keyed
// once) equal to crypto/hkdf's, for both key lengths (one and two HMAC
// blocks), many address pairs and after reuse.
func TestESPDeriverIsHKDF(t *testing.T) {
	for _, alg := range []string{"aes-gcm-128", "aes-gcm-256"} {
		k := Key{ID: 7, Algorithm: alg, Secret: bytes.Repeat([]byte{0x5a}, Algorithms[alg])}
		d := NewESP(k)
		prk, _ := hkdf.Extract(sha256.New, k.Secret, []byte(salt))
		buf := make([]byte, d.Len())
		for i := 0; i < 300; i++ {
			src := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
			dst := netip.AddrFrom4([4]byte{10, 1, byte(i >> 7), byte(i * 3)})
			if i%2 == 1 {
				src = netip.MustParseAddr(fmt.Sprintf("fd00::%x", i))
			}
			info := append(append(append([]byte("esp\x00"), k.ID, 0), addr16(src)...), 0)
			info = append(info, addr16(dst)...)
			want, err := hkdf.Expand(sha256.New, prk, string(info), Algorithms[alg]+4)
			if err != nil {
				t.Fatal(err)
			}
			d.DeriveTo(buf, src, dst)
			if !bytes.Equal(buf, want) || !bytes.Equal(d.Derive(src, dst), want) {
				t.Fatalf("%s %s→%s: %x, hkdf says %x", alg, src, dst, buf, want)
			}
		}
		d.Wipe()
	}
}

func TestValidNameBounds(t *testing.T) {
	long := "a" + strings.Repeat("x", 251) + "z"
	for name, want := range map[string]bool{long: true, long + "q": false, "a": true, "a.b-c_d": true, ".a": false, "a.": false, "a..b": false, "a/b": false, "": false, "a b": false} {
		if got := ValidName(name) == ""; got != want {
			t.Errorf("ValidName(%q) accepted %v, want %v", name, got, want)
		}
	}
}
