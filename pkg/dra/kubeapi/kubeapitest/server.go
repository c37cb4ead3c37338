// Package kubeapitest is an in-memory Kubernetes API server for the calls
// kubeapi makes, over real HTTP: ResourceClaims and their status,
// ResourceSlices (field selectors, generateName, resourceVersion and UID
// preconditions) and nodes. Tests of the DRA driver run against it; the
// cluster e2e runs against the real one.
package kubeapitest

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	"github.com/railnet/railnet/pkg/dra/kubeapi"
)

// Server holds the objects; its methods are safe while requests run.
type Server struct {
	*httptest.Server

	mu     sync.Mutex
	rv     int
	claims map[string]*resourceapi.ResourceClaim // namespace/name
	slices map[string]*resourceapi.ResourceSlice
	nodes  map[string]types.UID
	writes int
	// Fail, when set, answers a request with this code and a Status
	// instead of serving it (code 0: serve).
	Fail func(r *http.Request) int
}

// Start serves until the test ends.
func Start(tb testing.TB) *Server {
	s := &Server{claims: map[string]*resourceapi.ResourceClaim{}, slices: map[string]*resourceapi.ResourceSlice{},
		nodes: map[string]types.UID{}}
	mux := http.NewServeMux()
	const claims = "/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaims/{name}"
	mux.HandleFunc("GET /api/v1/nodes/{name}", s.getNode)
	mux.HandleFunc("GET "+claims, s.getClaim)
	mux.HandleFunc("PUT "+claims+"/status", s.putClaimStatus)
	mux.HandleFunc("GET /apis/resource.k8s.io/v1/resourceslices", s.listSlices)
	mux.HandleFunc("POST /apis/resource.k8s.io/v1/resourceslices", s.createSlice)
	mux.HandleFunc("PUT /apis/resource.k8s.io/v1/resourceslices/{name}", s.updateSlice)
	mux.HandleFunc("DELETE /apis/resource.k8s.io/v1/resourceslices/{name}", s.deleteSlice)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.Fail != nil {
			if code := s.Fail(r); code != 0 {
				status(w, code, metav1.StatusReasonInternalError, "injected failure")
				return
			}
		}
		mux.ServeHTTP(w, r)
	}))
	tb.Cleanup(s.Close)
	return s
}

// Client is a kubeapi client of this server.
func (s *Server) Client(tb testing.TB) *kubeapi.Client {
	c, err := kubeapi.New(&rest.Config{Host: s.URL})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// AddNode makes a node with this UID.
func (s *Server) AddNode(name string, uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nodes[name] = uid
}

// AddClaim stores a claim (a copy), giving it a resourceVersion.
func (s *Server) AddClaim(c *resourceapi.ResourceClaim) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c = c.DeepCopy()
	s.rv++
	c.ResourceVersion = strconv.Itoa(s.rv)
	s.claims[c.Namespace+"/"+c.Name] = c
}

// DeleteClaim removes a claim.
func (s *Server) DeleteClaim(namespace, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.claims, namespace+"/"+name)
}

// Claim returns a copy of a stored claim, or nil.
func (s *Server) Claim(namespace, name string) *resourceapi.ResourceClaim {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.claims[namespace+"/"+name]; c != nil {
		return c.DeepCopy()
	}
	return nil
}

// Slices returns copies of the stored slices, by name.
func (s *Server) Slices() []resourceapi.ResourceSlice {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []resourceapi.ResourceSlice
	for _, n := range slices.Sorted(maps.Keys(s.slices)) {
		out = append(out, *s.slices[n].DeepCopy())
	}
	return out
}

// DeleteSlice removes a slice as another client would.
func (s *Server) DeleteSlice(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.slices, name)
}

// Writes counts the creates, updates and deletes served.
func (s *Server) Writes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes
}

func status(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status: metav1.StatusFailure, Message: msg, Reason: reason, Code: int32(code)})
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// decode reads a JSON body whose kind, if given, is kind.
func decode(w http.ResponseWriter, r *http.Request, kind string, v any) bool {
	b, err := io.ReadAll(r.Body)
	if err == nil {
		err = json.Unmarshal(b, v)
	}
	var tm metav1.TypeMeta
	json.Unmarshal(b, &tm)
	if err == nil && tm.Kind != "" && tm.Kind != kind {
		err = fmt.Errorf("kind %s, want %s", tm.Kind, kind)
	}
	if err != nil {
		status(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
		return false
	}
	return true
}

func (s *Server) getNode(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	uid, ok := s.nodes[r.PathValue("name")]
	if !ok {
		status(w, http.StatusNotFound, metav1.StatusReasonNotFound, "nodes \""+r.PathValue("name")+"\" not found")
		return
	}
	reply(w, http.StatusOK, metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{Kind: "Node", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: r.PathValue("name"), UID: uid}})
}

func (s *Server) getClaim(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.claims[r.PathValue("ns")+"/"+r.PathValue("name")]
	if c == nil {
		status(w, http.StatusNotFound, metav1.StatusReasonNotFound, "resourceclaims \""+r.PathValue("name")+"\" not found")
		return
	}
	reply(w, http.StatusOK, c)
}

// putClaimStatus replaces the status only, if the resourceVersion is
// current.
func (s *Server) putClaimStatus(w http.ResponseWriter, r *http.Request) {
	var in resourceapi.ResourceClaim
	if !decode(w, r, "ResourceClaim", &in) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.claims[r.PathValue("ns")+"/"+r.PathValue("name")]
	switch {
	case c == nil:
		status(w, http.StatusNotFound, metav1.StatusReasonNotFound, "not found")
		return
	case in.ResourceVersion != c.ResourceVersion || in.UID != c.UID:
		status(w, http.StatusConflict, metav1.StatusReasonConflict, "the object has been modified")
		return
	}
	s.rv++
	s.writes++
	c.Status = in.Status
	c.ResourceVersion = strconv.Itoa(s.rv)
	reply(w, http.StatusOK, c)
}

// listSlices supports the field selectors the API has for slices:
// spec.driver and spec.nodeName, joined by commas.
func (s *Server) listSlices(w http.ResponseWriter, r *http.Request) {
	want := map[string]string{}
	if fs := r.URL.Query().Get("fieldSelector"); fs != "" {
		for _, term := range strings.Split(fs, ",") {
			k, v, ok := strings.Cut(term, "=")
			if !ok || (k != "spec.driver" && k != "spec.nodeName") {
				status(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, "field label not supported: "+k)
				return
			}
			want[k] = v
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := resourceapi.ResourceSliceList{TypeMeta: metav1.TypeMeta{Kind: "ResourceSliceList", APIVersion: "resource.k8s.io/v1"}}
	for _, n := range slices.Sorted(maps.Keys(s.slices)) {
		sl := s.slices[n]
		node := ""
		if sl.Spec.NodeName != nil {
			node = *sl.Spec.NodeName
		}
		if v, ok := want["spec.driver"]; ok && v != sl.Spec.Driver {
			continue
		}
		if v, ok := want["spec.nodeName"]; ok && v != node {
			continue
		}
		out.Items = append(out.Items, *sl)
	}
	reply(w, http.StatusOK, out)
}

func validSlice(sl *resourceapi.ResourceSlice) error {
	switch {
	case sl.Spec.Driver == "" || sl.Spec.Pool.Name == "":
		return fmt.Errorf("spec.driver and spec.pool.name are required")
	case sl.Spec.Pool.ResourceSliceCount < 1:
		return fmt.Errorf("spec.pool.resourceSliceCount must be positive")
	case len(sl.Spec.Devices) > resourceapi.ResourceSliceMaxDevices:
		return fmt.Errorf("%d devices, at most %d", len(sl.Spec.Devices), resourceapi.ResourceSliceMaxDevices)
	case sl.Spec.NodeName == nil && (sl.Spec.AllNodes == nil || !*sl.Spec.AllNodes) && sl.Spec.NodeSelector == nil:
		return fmt.Errorf("one of nodeName, nodeSelector, allNodes is required")
	}
	return nil
}

// decodeSlice reads a slice the API would accept, or answers 400 or 422.
func decodeSlice(w http.ResponseWriter, r *http.Request) (*resourceapi.ResourceSlice, bool) {
	var in resourceapi.ResourceSlice
	if !decode(w, r, "ResourceSlice", &in) {
		return nil, false
	}
	if err := validSlice(&in); err != nil {
		status(w, http.StatusUnprocessableEntity, metav1.StatusReasonInvalid, err.Error())
		return nil, false
	}
	return &in, true
}

func (s *Server) createSlice(w http.ResponseWriter, r *http.Request) {
	in, ok := decodeSlice(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rv++
	if in.Name == "" {
		in.Name = fmt.Sprintf("%s%05x", in.GenerateName, s.rv)
	}
	if s.slices[in.Name] != nil {
		status(w, http.StatusConflict, metav1.StatusReasonAlreadyExists, "already exists")
		return
	}
	s.writes++
	in.UID = types.UID(fmt.Sprintf("slice-uid-%d", s.rv))
	in.ResourceVersion = strconv.Itoa(s.rv)
	s.slices[in.Name] = in
	reply(w, http.StatusCreated, in)
}

func (s *Server) updateSlice(w http.ResponseWriter, r *http.Request) {
	in, ok := decodeSlice(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.existing(w, r)
	if old == nil {
		return
	}
	if in.ResourceVersion != old.ResourceVersion {
		status(w, http.StatusConflict, metav1.StatusReasonConflict, "the object has been modified")
		return
	}
	s.rv++
	s.writes++
	in.UID, in.Name = old.UID, old.Name
	in.ResourceVersion = strconv.Itoa(s.rv)
	s.slices[in.Name] = in
	reply(w, http.StatusOK, in)
}

// existing is the slice the path names, or nil after answering 404; the
// caller holds s.mu.
func (s *Server) existing(w http.ResponseWriter, r *http.Request) *resourceapi.ResourceSlice {
	old := s.slices[r.PathValue("name")]
	if old == nil {
		status(w, http.StatusNotFound, metav1.StatusReasonNotFound, "resourceslices \""+r.PathValue("name")+"\" not found")
	}
	return old
}

func (s *Server) deleteSlice(w http.ResponseWriter, r *http.Request) {
	var opts metav1.DeleteOptions
	if r.ContentLength != 0 && !decode(w, r, "DeleteOptions", &opts) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.existing(w, r)
	if old == nil {
		return
	}
	if opts.Preconditions != nil && opts.Preconditions.UID != nil && *opts.Preconditions.UID != old.UID {
		status(w, http.StatusConflict, metav1.StatusReasonConflict, "precondition failed: UID")
		return
	}
	s.writes++
	delete(s.slices, old.Name)
	reply(w, http.StatusOK, metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusSuccess})
}
