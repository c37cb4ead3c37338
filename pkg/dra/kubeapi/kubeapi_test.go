package kubeapi_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/railnet/railnet/pkg/dra/kubeapi"
	"github.com/railnet/railnet/pkg/dra/kubeapi/kubeapitest"
)

func TestClaims(t *testing.T) {
	srv := kubeapitest.Start(t)
	c := srv.Client(t)
	ctx := context.Background()
	if _, err := c.GetClaim(ctx, "ns", "missing"); !apierrors.IsNotFound(err) {
		t.Fatalf("a missing claim: %v, want NotFound", err)
	}
	srv.AddClaim(&resourceapi.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "c", UID: "u1"}})
	got, err := c.GetClaim(ctx, "ns", "c")
	if err != nil || got.UID != "u1" || got.ResourceVersion == "" {
		t.Fatalf("GetClaim: %+v %v", got, err)
	}
	got.Status.Devices = []resourceapi.AllocatedDeviceStatus{{Driver: "railnet.io", Pool: "p", Device: "d"}}
	upd, err := c.UpdateClaimStatus(ctx, got, "railnet.io")
	if err != nil || len(upd.Status.Devices) != 1 || upd.ResourceVersion == got.ResourceVersion {
		t.Fatalf("UpdateClaimStatus: %+v %v", upd, err)
	}
	if len(srv.Claim("ns", "c").Status.Devices) != 1 {
		t.Fatal("status not stored")
	}
	// The old resourceVersion again: a conflict, as the API answers it.
	if _, err := c.UpdateClaimStatus(ctx, got, "railnet.io"); !apierrors.IsConflict(err) {
		t.Fatalf("stale update: %v, want Conflict", err)
	}
}

func TestSlices(t *testing.T) {
	srv := kubeapitest.Start(t)
	c := srv.Client(t)
	ctx := context.Background()
	mk := func(driver, node string) *resourceapi.ResourceSlice {
		return &resourceapi.ResourceSlice{ObjectMeta: metav1.ObjectMeta{GenerateName: "x-"},
			Spec: resourceapi.ResourceSliceSpec{Driver: driver, NodeName: &node,
				Pool: resourceapi.ResourcePool{Name: node + "/p", ResourceSliceCount: 1}, Devices: []resourceapi.Device{{Name: "d0"}}}}
	}
	a, err := c.CreateSlice(ctx, mk("railnet.io", "n1"), "railnet.io")
	if err != nil || a.Name == "" || a.UID == "" {
		t.Fatalf("CreateSlice: %+v %v", a, err)
	}
	for _, s := range []*resourceapi.ResourceSlice{mk("railnet.io", "n2"), mk("gpu.example.com", "n1")} {
		if _, err := c.CreateSlice(ctx, s, "railnet.io"); err != nil {
			t.Fatal(err)
		}
	}
	got, err := c.ListSlices(ctx, "spec.driver=railnet.io,spec.nodeName=n1")
	if err != nil || len(got) != 1 || got[0].Name != a.Name {
		t.Fatalf("ListSlices: %+v %v", got, err)
	}
	a.Spec.Devices = append(a.Spec.Devices, resourceapi.Device{Name: "d1"})
	b, err := c.UpdateSlice(ctx, a, "railnet.io")
	if err != nil || len(b.Spec.Devices) != 2 {
		t.Fatalf("UpdateSlice: %+v %v", b, err)
	}
	if _, err := c.UpdateSlice(ctx, a, "railnet.io"); !apierrors.IsConflict(err) {
		t.Fatalf("stale UpdateSlice: %v", err)
	}
	bad := mk("railnet.io", "n1")
	bad.Spec.Pool.ResourceSliceCount = 0
	if _, err := c.CreateSlice(ctx, bad, "railnet.io"); !apierrors.IsInvalid(err) {
		t.Fatalf("invalid slice: %v", err)
	}
	if err := c.DeleteSlice(ctx, a.Name, "another-uid"); !apierrors.IsConflict(err) {
		t.Fatalf("delete with a wrong UID precondition: %v", err)
	}
	if err := c.DeleteSlice(ctx, a.Name, a.UID); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteSlice(ctx, a.Name, a.UID); !apierrors.IsNotFound(err) {
		t.Fatalf("deleted twice: %v", err)
	}
	srv.AddNode("n1", "node-uid")
	if uid, err := c.NodeUID(ctx, "n1"); err != nil || uid != "node-uid" {
		t.Fatalf("NodeUID: %q %v", uid, err)
	}
	if _, err := c.NodeUID(ctx, "n9"); !apierrors.IsNotFound(err) {
		t.Fatalf("NodeUID of a missing node: %v", err)
	}
}

// A server that answers without a Status (a proxy's error page): the code
// still classifies the error, and the credentials of the rest.Config
// (a token file, re-read as it rotates) are sent.
func TestTransport(t *testing.T) {
	var auth []string
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = append(auth, r.Header.Get("Authorization"))
		if r.Header.Get("User-Agent") != "railnet-test/1" {
			t.Errorf("User-Agent %q", r.Header.Get("User-Agent"))
		}
		http.Error(w, "upstream unavailable", http.StatusServiceUnavailable)
	}))
	defer hs.Close()
	tok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tok, []byte("tok-1\n"), 0o600)
	c, err := kubeapi.New(&rest.Config{Host: hs.URL, BearerTokenFile: tok, UserAgent: "railnet-test/1"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GetClaim(context.Background(), "ns", "c")
	if !apierrors.IsServiceUnavailable(err) || !strings.Contains(err.Error(), "upstream unavailable") {
		t.Fatalf("a plain-text 503: %v", err)
	}
	if len(auth) != 1 || auth[0] != "Bearer tok-1" {
		t.Fatalf("Authorization: %q", auth)
	}
}
