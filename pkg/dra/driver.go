package dra

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	"github.com/railnet/railnet/pkg/deviceinfo"
	"github.com/railnet/railnet/pkg/deviceplugin"
	"github.com/railnet/railnet/pkg/discovery"
	"github.com/railnet/railnet/pkg/dra/claims"
	"github.com/railnet/railnet/pkg/dra/kubeapi"
	"github.com/railnet/railnet/pkg/pools"
	"github.com/railnet/railnet/pkg/topology"
)

// apiTimeout bounds one API call of the driver's own (Prepare waits on
// some; an unreachable apiserver must not hold the kubelet for ever).
const apiTimeout = 10 * time.Second

// PodClaimNameAnnotation is set by the resource claim controller on a
// claim made from a pod's template: the pod's own name for it.
const PodClaimNameAnnotation = "resource.kubernetes.io/pod-claim-name"

// CDIKind is the kind of the CDI devices Prepare writes (one spec file per
// claim, removed by Unprepare).
const CDIKind = DriverName + "/claim"

// Options configure a Driver.
type Options struct {
	NodeName     string
	Client       *kubeapi.Client // nil: Start fails; tests drive Prepare directly
	ClaimsDir    string          // checkpoints (claims.Dir of the CNI's state dir)
	CDIDir       string          // where the runtime reads CDI specs
	DevfsRoot    string          // the host paths of character devices
	RegistrarDir string          // "": /var/lib/kubelet/plugins_registry
	PluginDir    string          // "": /var/lib/kubelet/plugins/railnet.io
	MaxPerSlice  int             // "": 128, the API's limit
	Logger       *slog.Logger
}

type key struct{ pool, device string }

// entry is a device a claim may be given: a dra pool's device, healthy or
// not (an allocated device whose PF went down is still the claim's).
type entry struct {
	pool     string // railnet's
	resource string
	rdmaCM   string
	dev      pools.Device
}

// Driver is the DRA kubelet plugin (kubelet.go), the publisher of this
// node's ResourceSlices (slices.go) and the agent's DRAPublisher.
type Driver struct {
	o   Options
	log *slog.Logger

	mu        sync.Mutex
	devices   map[key]entry
	resources *DriverResources // the last computed
	wake      chan struct{}    // resources changed
	kubelet   *kubeletServer
	cancel    context.CancelFunc
	done      chan struct{} // the publisher returned

	grpcMu  sync.Mutex // one prepare or unprepare at a time
	syncMu  sync.Mutex // one pass of the publisher at a time; guards nodeUID
	nodeUID types.UID  // owner of the slices
}

// PreparedDevice is what Prepare tells the kubelet of one device.
type PreparedDevice struct {
	Requests     []string
	PoolName     string
	DeviceName   string
	CDIDeviceIDs []string
}

// New returns a driver that publishes nothing until Start.
func New(o Options) *Driver {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxPerSlice <= 0 || o.MaxPerSlice > resourceapi.ResourceSliceMaxDevices {
		o.MaxPerSlice = resourceapi.ResourceSliceMaxDevices
	}
	return &Driver{o: o, log: o.Logger, devices: map[key]entry{}, wake: make(chan struct{}, 1)}
}

// Start serves the kubelet (plugin registration and DRA sockets) and
// publishes the pools of the last scan, if any, and of every scan after.
func (d *Driver) Start(ctx context.Context) error {
	if d.o.Client == nil {
		return errors.New("DRA driver: no Kubernetes client")
	}
	if d.o.NodeName == "" {
		return errors.New("DRA driver: no node name (--node-name or $NODE_NAME)")
	}
	ks, err := d.serveKubelet()
	if err != nil {
		return fmt.Errorf("DRA driver: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	d.mu.Lock()
	d.kubelet, d.cancel, d.done = ks, cancel, make(chan struct{})
	d.mu.Unlock()
	go func() {
		defer close(d.done)
		d.runSlices(ctx)
	}()
	d.log.Info("DRA driver serving the kubelet", "driver", DriverName, "node", d.o.NodeName, "registration", ks.regPath)
	return nil
}

// Stop unregisters; published slices stay (a restarted daemon takes them
// over; a node that goes away has them deleted with it).
func (d *Driver) Stop() {
	d.mu.Lock()
	ks, cancel, done := d.kubelet, d.cancel, d.done
	d.kubelet, d.cancel = nil, nil
	d.mu.Unlock()
	if ks == nil {
		return
	}
	ks.stop()
	cancel()
	<-done
}

// Resources computes what a scan's dra pools publish, and the devices
// Prepare may hand out.
func (d *Driver) Resources(ps []pools.Resolved, inv *discovery.Inventory, topo *topology.Topology) (*DriverResources, map[key]entry) {
	res := &DriverResources{Pools: map[string]Pool{}}
	devs := map[key]entry{}
	for i := range ps {
		p := &ps[i]
		name := PoolName(d.o.NodeName, p.Name)
		var pool Pool
		for _, s := range Split(Devices(p, inv, topo), d.o.MaxPerSlice) {
			pool.Slices = append(pool.Slices, Slice{Devices: s})
		}
		res.Pools[name] = pool
		for _, dev := range p.Devices {
			devs[key{name, DeviceName(dev.ID)}] = entry{pool: p.Name, resource: p.Resource, rdmaCM: p.RDMACM, dev: dev}
		}
	}
	return res, devs
}

// Publish takes a scan's dra pools (the agent calls it after every scan);
// the publisher writes the slices that changed.
func (d *Driver) Publish(ps []pools.Resolved, inv *discovery.Inventory, topo *topology.Topology) {
	res, devs := d.Resources(ps, inv, topo)
	d.mu.Lock()
	changed := d.resources == nil || !reflect.DeepEqual(d.resources, res)
	d.devices, d.resources = devs, res
	d.mu.Unlock()
	if changed {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

// Prepare validates a claim's allocation against this node's devices and
// the claims already prepared, writes its CDI spec, then its checkpoint.
// Preparing a prepared claim again gives the same answer (the kubelet
// retries after restarts).
func (d *Driver) Prepare(c *resourceapi.ResourceClaim) ([]PreparedDevice, error) {
	if c.Status.Allocation == nil {
		return nil, fmt.Errorf("claim %s/%s is not allocated", c.Namespace, c.Name)
	}
	uid := string(c.UID)
	held := map[string]*claims.Claim{} // device ID → claim holding it
	all, _ := claims.List(d.o.ClaimsDir)
	for _, other := range all {
		if other.UID == uid {
			continue
		}
		for _, dv := range other.Devices {
			held[dv.ID] = other
		}
	}
	rec := &claims.Claim{UID: uid, Namespace: c.Namespace, Name: c.Name, PodClaimName: c.Annotations[PodClaimNameAnnotation]}
	for _, r := range c.Status.ReservedFor {
		if r.Resource == "pods" && r.APIGroup == "" {
			rec.Pods = append(rec.Pods, string(r.UID))
		}
	}
	type group struct {
		request, resource, rdmaCM string
		devs                      []deviceplugin.Device
	}
	var groups []*group
	var results []PreparedDevice
	d.mu.Lock()
	known := d.devices
	d.mu.Unlock()
	for _, r := range c.Status.Allocation.Devices.Results {
		if r.Driver != DriverName {
			continue
		}
		e, ok := known[key{r.Pool, r.Device}]
		if !ok {
			return nil, fmt.Errorf("claim %s/%s: device %s of pool %s is not one of this node's railnet.io devices", c.Namespace, c.Name, r.Device, r.Pool)
		}
		if other := held[e.dev.ID]; other == rec {
			return nil, fmt.Errorf("claim %s/%s: device %s is allocated to it twice", c.Namespace, c.Name, r.Device)
		} else if other != nil && d.stillHeld(other) {
			return nil, fmt.Errorf("claim %s/%s: device %s (%s) is prepared for claim %s/%s", c.Namespace, c.Name, r.Device, e.dev.ID, other.Namespace, other.Name)
		}
		held[e.dev.ID] = rec
		var g *group
		for _, x := range groups {
			if x.request == r.Request && x.resource == e.resource {
				g = x
			}
		}
		first := g == nil
		if first {
			g = &group{request: r.Request, resource: e.resource, rdmaCM: e.rdmaCM}
			groups = append(groups, g)
		}
		g.devs = append(g.devs, deviceplugin.Device{ID: e.dev.ID, BDF: e.dev.BDF, PF: e.dev.PF, RDMA: e.dev.RDMA,
			CharDevs: e.dev.CharDevs, NUMA: e.dev.NUMA, Rail: e.dev.Rail, IB: e.dev.IB})
		dv := claims.Device{Request: r.Request, Pool: e.pool, DRAPool: r.Pool, Device: r.Device, ID: e.dev.ID,
			BDF: e.dev.BDF, RDMA: e.dev.RDMA, Resource: e.resource}
		kd := PreparedDevice{Requests: []string{r.Request}, PoolName: r.Pool, DeviceName: r.Device}
		if first {
			// One CDI device per request: the env (PCIDEVICE_*, NCCL_IB_HCA)
			// lists all of the request's devices at once.
			id := CDIKind + "=" + cdiName(uid, r.Request, e.resource)
			kd.CDIDeviceIDs = []string{id}
			dv.CDI = kd.CDIDeviceIDs
		}
		rec.Devices = append(rec.Devices, dv)
		results = append(results, kd)
	}
	spec := deviceplugin.CDISpec{Version: "0.6.0", Kind: CDIKind}
	for _, g := range groups {
		env, nodes, err := deviceplugin.ContainerEdits(g.resource, g.rdmaCM, d.o.DevfsRoot, g.devs)
		if err != nil {
			return nil, err
		}
		cd := deviceplugin.CDIDevice{Name: cdiName(uid, g.request, g.resource)}
		for _, k := range slices.Sorted(maps.Keys(env)) {
			cd.Edits.Env = append(cd.Edits.Env, k+"="+env[k])
		}
		for _, n := range nodes {
			cd.Edits.DeviceNodes = append(cd.Edits.DeviceNodes, deviceplugin.CDIDeviceNode{Path: n.ContainerPath, HostPath: n.HostPath, Permissions: "rw"})
		}
		spec.Devices = append(spec.Devices, cd)
	}
	if len(spec.Devices) > 0 {
		b, err := json.MarshalIndent(spec, "", "  ")
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(d.o.CDIDir, 0o755); err != nil {
			return nil, err
		}
		if err := deviceinfo.WriteFile(cdiSpecPath(d.o.CDIDir, uid), b); err != nil {
			return nil, fmt.Errorf("CDI spec: %w", err)
		}
	}
	if err := claims.Save(d.o.ClaimsDir, rec); err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	return results, nil
}

// stillHeld: a claim checkpointed as holding a device still exists; one
// the API no longer has is unprepared on the spot (Collect would later).
func (d *Driver) stillHeld(c *claims.Claim) bool {
	if d.o.Client == nil || d.claimExists(context.Background(), c) {
		return true
	}
	err := d.Unprepare(c.UID)
	d.log.Info("DRA: unprepared a claim that no longer exists", "claim", c.Namespace+"/"+c.Name, "uid", c.UID, "err", err)
	return err != nil
}

// Unprepare removes what Prepare wrote for a claim; idempotent.
func (d *Driver) Unprepare(uid string) error {
	if err := os.Remove(cdiSpecPath(d.o.CDIDir, uid)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return claims.Remove(d.o.ClaimsDir, uid)
}

// cdiSpecPath: one file per claim; its device names start with the claim
// UID, so a runtime's cache never confuses two claims. The name is not the
// device plugin's <domain>-<pool>.json: its start-up sweep of files no
// pool owns must not take a running claim's spec.
func cdiSpecPath(dir, uid string) string {
	return filepath.Join(dir, "dra."+DriverName+"-"+uid+".json")
}

func cdiName(uid, request, resource string) string {
	r := strings.NewReplacer("/", "_", "#", "_")
	return uid + "-" + r.Replace(request) + "-" + r.Replace(resource[strings.LastIndex(resource, "/")+1:])
}

// Collect unprepares checkpoints whose claim is gone from the API (or is
// another claim by now): a pod force-deleted before the kubelet could
// unprepare it, or a prepare the kubelet gave up on, would otherwise hold
// its devices for ever. A claim the API cannot be asked about is kept.
func (d *Driver) Collect(ctx context.Context) {
	if d.o.Client == nil {
		return
	}
	all, _ := claims.List(d.o.ClaimsDir)
	for _, c := range all {
		if d.claimExists(ctx, c) {
			continue
		}
		err := d.Unprepare(c.UID)
		d.log.Info("DRA: unprepared a claim that no longer exists", "claim", c.Namespace+"/"+c.Name, "uid", c.UID, "err", err)
	}
}

// claimExists: true unless the API says the claim, with this UID, is gone.
func (d *Driver) claimExists(ctx context.Context, c *claims.Claim) bool {
	got, err := d.getClaim(ctx, c.Namespace, c.Name)
	switch {
	case apierrors.IsNotFound(err):
		return false
	case err != nil:
		return true
	}
	return string(got.UID) == c.UID
}

// getClaim reads a claim, bounded by apiTimeout.
func (d *Driver) getClaim(ctx context.Context, namespace, name string) (*resourceapi.ResourceClaim, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	return d.o.Client.GetClaim(ctx, namespace, name)
}
