package claims_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/railnet/railnet/pkg/dra/claims"
)

func claim(uid, name, podClaim string, pods []string, devs ...claims.Device) *claims.Claim {
	return &claims.Claim{UID: uid, Namespace: "ns", Name: name, PodClaimName: podClaim, Pods: pods, Devices: devs}
}

func dev(req, id string) claims.Device {
	return claims.Device{Request: req, Pool: "p", DRAPool: "node/p", Device: "pci-" + id, ID: id, BDF: id,
		Resource: "railnet.io/p", CDI: []string{"railnet.io/claim=x"}}
}

func TestRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dra")
	c := claim("6f1c2d9e-0b7a-4e1f-9d3c-0123456789ab", "pod-nic-x7k2p", "nic", []string{"pod-1"}, dev("nic", "0000:04:00.2"))
	c.Devices[0].RDMA = []string{"mlx5_2"}
	if err := claims.Save(dir, c); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, c.UID+".json"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("file mode: %v %v", st, err)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v", st.Mode())
	}
	got, err := claims.Load(dir, c.UID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, c)
	}
	all, errs := claims.List(dir)
	if len(errs) != 0 || len(all) != 1 || !reflect.DeepEqual(all[0], c) {
		t.Fatalf("List: %v %v", all, errs)
	}
	if err := claims.Remove(dir, c.UID); err != nil {
		t.Fatal(err)
	}
	if err := claims.Remove(dir, c.UID); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if _, err := claims.Load(dir, c.UID); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load after Remove: %v", err)
	}
	if err := claims.Save(dir, claim("../../etc/passwd", "x", "", nil)); err == nil {
		t.Fatal("a UID with a path in it was saved")
	}
}

func TestRefusesFilesOthersCanWrite(t *testing.T) {
	dir := t.TempDir()
	c := claim("u1", "c", "", []string{"pod"}, dev("nic", "0000:04:00.2"))
	if err := claims.Save(dir, c); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "u1.json"), 0o666); err != nil {
		t.Fatal(err)
	}
	if _, err := claims.Load(dir, "u1"); err == nil || !strings.Contains(err.Error(), "writable") {
		t.Fatalf("a world-writable checkpoint was read: %v", err)
	}
	if _, err := claims.Find(dir, "pod", ""); err == nil {
		t.Fatal("Find used a world-writable checkpoint")
	}
}

func TestUIDBounds(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dra")
	ok := strings.Repeat("a", 63) + "b"
	if err := claims.Save(dir, claim(ok, "n", "nic", nil, dev("nic", "0000:04:00.2"))); err != nil {
		t.Fatalf("a 64-character UID: %v", err)
	}
	for _, bad := range []string{"", ok + "c", "../x", "a b", "a/b"} {
		if err := claims.Save(dir, claim(bad, "n", "nic", nil, dev("nic", "0000:04:00.2"))); err == nil {
			t.Errorf("UID %q accepted", bad)
		}
	}
}

func TestFind(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []*claims.Claim{
		claim("u1", "pod-a-nic-abcde", "nic", []string{"pod-a"}, dev("nic", "0000:04:00.2")),
		claim("u2", "shared-pair", "", []string{"pod-b", "pod-c"}, dev("left", "0000:04:00.3"), dev("right/fast", "0000:04:00.4")),
		claim("u3", "other", "", []string{"pod-d"}, dev("nic", "0000:04:00.5")),
	} {
		if err := claims.Save(dir, c); err != nil {
			t.Fatal(err)
		}
	}
	ok := []struct{ pod, name, want string }{
		{"pod-a", "nic", "0000:04:00.2"},             // the pod's claim name and the request's
		{"pod-a", "pod-a-nic-abcde", "0000:04:00.2"}, // the generated claim's name
		{"pod-a", "", "0000:04:00.2"},                // the pod's only device
		{"pod-b", "left", "0000:04:00.3"},
		{"pod-c", "right", "0000:04:00.4"}, // a subrequest's parent request
		{"pod-c", "right/fast", "0000:04:00.4"},
	}
	for _, tc := range ok {
		m, err := claims.Find(dir, tc.pod, tc.name)
		if err != nil || m.Device.ID != tc.want {
			t.Errorf("Find(%s, %q) = %v, %v; want %s", tc.pod, tc.name, m.Device.ID, err, tc.want)
		}
	}
	bad := []struct{ pod, name, says string }{
		{"pod-b", "shared-pair", "ambiguous"},      // a claim with two devices
		{"pod-b", "", "ambiguous"},                 // two devices, none named
		{"pod-a", "left", "names none"},            // another pod's request
		{"pod-x", "nic", "no prepared"},            // a pod with no claim
		{"", "nic", "K8S_POD_UID"},                 // no pod identity
		{"pod-d", "pod-a-nic-abcde", "names none"}, // another pod's claim
	}
	for _, tc := range bad {
		m, err := claims.Find(dir, tc.pod, tc.name)
		if err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("Find(%s, %q) = %v, %v; want an error saying %q", tc.pod, tc.name, m.Device.ID, err, tc.says)
		}
	}
}
