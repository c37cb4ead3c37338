package deviceplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/railnet/railnet/pkg/deviceinfo"
)

// server serves one pool on its own socket.
type server struct {
	pluginapi.UnimplementedDevicePluginServer
	m      *Manager
	name   string
	socket string
	log    *slog.Logger

	mu      sync.Mutex
	pool    Pool
	byID    map[string]*Device
	changed chan struct{} // closed and replaced on every change
	grpc    *grpc.Server
	stop    chan struct{} // closed when the server is stopped for good

	regMu      sync.Mutex
	regCancel  context.CancelFunc
	registered bool
}

func newServer(m *Manager, p Pool) *server {
	s := &server{m: m, name: p.Name, socket: filepath.Join(m.opts.KubeletDir, socketName(p.Name)),
		log: m.log.With("pool", p.Name, "resource", p.Resource), changed: make(chan struct{}), stop: make(chan struct{})}
	s.setPool(p)
	return s
}

// setPool replaces the device list and wakes every ListAndWatch stream.
func (s *server) setPool(p Pool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pool = p
	s.byID = make(map[string]*Device, len(p.Devices))
	for i := range s.pool.Devices {
		s.byID[s.pool.Devices[i].ID] = &s.pool.Devices[i]
	}
	indexDevices(s.byID)
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *server) snapshot() (Pool, chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pool, s.changed
}

// serve listens on the pool's socket (replacing a stale one) and serves.
func (s *server) serve() error {
	s.mu.Lock()
	old := s.grpc
	s.grpc = nil
	s.mu.Unlock()
	if old != nil {
		old.Stop()
	}
	if err := os.Remove(s.socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	lis, err := net.Listen("unix", s.socket)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.socket, err)
	}
	// We remove the socket ourselves: a listener that unlinks its path on
	// close would delete a newer socket created at the same path.
	lis.(*net.UnixListener).SetUnlinkOnClose(false)
	g := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(g, s)
	s.mu.Lock()
	s.grpc = g
	s.mu.Unlock()
	go func() {
		if err := g.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.log.Error("serve", "err", err)
		}
	}()
	return nil
}

// shutdown stops serving and removes the socket.
func (s *server) shutdown() {
	s.cancelRegistration()
	s.mu.Lock()
	g := s.grpc
	s.grpc = nil
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.mu.Unlock()
	if g != nil {
		g.Stop()
	}
	os.Remove(s.socket)
}

func (s *server) cancelRegistration() {
	s.regMu.Lock()
	defer s.regMu.Unlock()
	if s.regCancel != nil {
		s.regCancel()
		s.regCancel = nil
	}
	s.registered = false
	s.m.metrics.setRegistered(s.name, false)
}

// register registers with the kubelet in the background, retrying with
// backoff until it succeeds or is cancelled: an absent kubelet is waited
// for, never a reason to exit.
func (s *server) register() {
	s.regMu.Lock()
	if s.regCancel != nil {
		s.regCancel()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.regCancel = cancel
	s.registered = false
	s.regMu.Unlock()
	s.m.metrics.setRegistered(s.name, false)

	go func() {
		backoff := s.m.opts.RegisterBackoff
		for attempt := 1; ; attempt++ {
			err := s.registerOnce(ctx)
			if err == nil {
				s.regMu.Lock()
				if ctx.Err() == nil {
					s.registered = true
				}
				s.regMu.Unlock()
				s.m.metrics.setRegistered(s.name, true)
				s.log.Info("registered with kubelet", "attempt", attempt)
				s.m.notifyRegistered(s.name)
				return
			}
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("registration failed; retrying", "err", err, "attempt", attempt, "backoff", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, s.m.opts.RegisterBackoffMax)
		}
	}()
}

func (s *server) registerOnce(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	kubelet := filepath.Join(s.m.opts.KubeletDir, "kubelet.sock")
	conn, err := grpc.NewClient("unix://"+kubelet, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	s.mu.Lock()
	res := s.pool.Resource
	s.mu.Unlock()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     filepath.Base(s.socket),
		ResourceName: res,
		Options:      &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: true},
	}, grpc.WaitForReady(false))
	return err
}

// GetDevicePluginOptions says GetPreferredAllocation is available.
func (s *server) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: true}, nil
}

// ListAndWatch sends the full list, then the full list again on every change.
func (s *server) ListAndWatch(_ *pluginapi.Empty, stream grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	for {
		pool, changed := s.snapshot()
		if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: kubeletDevices(pool)}); err != nil {
			return err
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		case <-s.stop:
			return nil
		}
	}
}

func kubeletDevices(p Pool) []*pluginapi.Device {
	out := make([]*pluginapi.Device, 0, len(p.Devices))
	for _, d := range p.Devices {
		kd := &pluginapi.Device{ID: d.ID, Health: pluginapi.Unhealthy}
		if d.Healthy {
			kd.Health = pluginapi.Healthy
		}
		if d.NUMA >= 0 {
			kd.Topology = &pluginapi.TopologyInfo{Nodes: []*pluginapi.NUMANode{{ID: int64(d.NUMA)}}}
		}
		out = append(out, kd)
	}
	return out
}

// Allocate answers, per container: PCIDEVICE_<RES> (BDFs), its _INFO JSON,
// the RDMA character devices, NCCL_IB_HCA in exact-match form, CDI names.
func (s *server) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := &pluginapi.AllocateResponse{}
	for _, c := range req.ContainerRequests {
		cr, err := s.allocateContainer(c.DevicesIds)
		if err != nil {
			return nil, err
		}
		resp.ContainerResponses = append(resp.ContainerResponses, cr)
	}
	s.m.metrics.allocated(s.name, req)
	return resp, nil
}

type infoEntry struct {
	Generic map[string]string `json:"generic"`
	PCI     *deviceinfo.PCI   `json:"pci,omitempty"`
	RDMA    map[string]string `json:"rdma,omitempty"`
}

func (s *server) allocateContainer(ids []string) (*pluginapi.ContainerAllocateResponse, error) {
	if len(ids) == 0 {
		return nil, status.Error(codes.InvalidArgument, "no devices requested")
	}
	devs := make([]Device, 0, len(ids))
	cr := &pluginapi.ContainerAllocateResponse{}
	for _, id := range ids {
		d := s.byID[id]
		if d == nil {
			return nil, status.Errorf(codes.InvalidArgument, "device %q is not in pool %s", id, s.pool.Resource)
		}
		s.m.ensureDevInfo(s.pool.Resource, *d)
		devs = append(devs, *d)
		if s.m.opts.CDI {
			cr.CdiDevices = append(cr.CdiDevices, &pluginapi.CDIDevice{Name: CDIName(s.pool.Resource, d.ID)})
		}
	}
	env, nodes, err := ContainerEdits(s.pool.Resource, s.pool.RDMACM, s.m.opts.DevfsRoot, devs)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	cr.Envs = env
	for _, n := range nodes {
		cr.Devices = append(cr.Devices, &pluginapi.DeviceSpec{ContainerPath: n.ContainerPath, HostPath: n.HostPath, Permissions: "rw"})
	}
	return cr, nil
}

// DeviceNode is a character device a container gets.
type DeviceNode struct {
	ContainerPath string // /dev/infiniband/uverbs3
	HostPath      string // below the devfs root
}

// ContainerEdits is what a container gets for devices of one pool, through
// either allocation path: PCIDEVICE_<RESOURCE> (their PCI addresses),
// PCIDEVICE_<RESOURCE>_INFO, NCCL_IB_HCA (and NCCL_IB_GID_INDEX on
// InfiniBand), and the RDMA character devices with rdma_cm.
func ContainerEdits(resource, rdmaCM, devfsRoot string, devs []Device) (map[string]string, []DeviceNode, error) {
	var bdfs, hcas []string
	allIB := true
	info := map[string]infoEntry{}
	env := map[string]string{}
	var nodes []DeviceNode
	seenDev := map[string]bool{}
	for _, d := range devs {
		if !slices.Contains(bdfs, d.BDF) {
			bdfs = append(bdfs, d.BDF)
		}
		e := infoEntry{Generic: map[string]string{"deviceID": d.ID},
			PCI: &deviceinfo.PCI{PCIAddress: d.BDF, PFPCIAddress: d.PF}}
		if len(d.RDMA) > 0 {
			e.PCI.RDMADevice = d.RDMA[0]
			e.RDMA = map[string]string{"rdma-device": strings.Join(d.RDMA, ",")}
			if rdmaCM != "" {
				e.RDMA["rdma_cm"] = rdmaCM
			}
		}
		info[d.ID] = e
		allIB = allIB && d.IB
		for _, r := range d.RDMA {
			if !slices.Contains(hcas, r) {
				hcas = append(hcas, r)
			}
		}
		for _, c := range d.CharDevs {
			if !seenDev[c] {
				seenDev[c] = true
				nodes = append(nodes, DeviceNode{ContainerPath: c, HostPath: hostDevPath(devfsRoot, c)})
			}
		}
	}
	if len(hcas) > 0 && rdmaCM != "" {
		nodes = append(nodes, DeviceNode{ContainerPath: rdmaCM, HostPath: hostDevPath(devfsRoot, rdmaCM)})
	}
	name := EnvName(resource)
	env[name] = strings.Join(bdfs, ",")
	b, err := json.Marshal(info)
	if err != nil {
		return nil, nil, err
	}
	env[name+"_INFO"] = string(b)
	if len(hcas) > 0 {
		// "=" asks NCCL for exact names: without it mlx5_1 also selects mlx5_10.
		env["NCCL_IB_HCA"] = "=" + strings.Join(hcas, ",")
		if allIB {
			// On InfiniBand GID 0 is the port's own GID, whatever the pod's
			// addresses. On RoCE a GID comes with each address added to the
			// port's netdevs (a shared slot's child included), at an index
			// the kernel picks then: not known here, so NCCL detects it.
			env["NCCL_IB_GID_INDEX"] = "0"
		}
	}
	return env, nodes, nil
}

// CDIName is the CDI device a device is known by: <resource>=<id>, with
// the characters CDI forbids in names replaced.
func CDIName(resource, id string) string { return resource + "=" + cdiDeviceName(id) }

// GetPreferredAllocation picks, per container, a set that holds every
// must-include device, sits on as few NUMA nodes as possible, and spreads
// over distinct PFs and rails.
func (s *server) GetPreferredAllocation(_ context.Context, req *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := &pluginapi.PreferredAllocationResponse{}
	for _, c := range req.ContainerRequests {
		ids, err := preferred(s.byID, c.AvailableDeviceIDs, c.MustIncludeDeviceIDs, int(c.AllocationSize))
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerPreferredAllocationResponse{DeviceIDs: ids})
	}
	return resp, nil
}

// indexDevices gives every device its place in ID order and its PF and
// rail small integers, once per pool change: GetPreferredAllocation then
// compares integers, not strings, and looks nothing up but the device.
func indexDevices(byID map[string]*Device) {
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	pfs, rails := map[string]int32{}, map[string]int32{}
	intern := func(m map[string]int32, s string) int32 {
		v, ok := m[s]
		if !ok {
			v = int32(len(m))
			m[s] = v
		}
		return v
	}
	for i, id := range ids {
		d := byID[id]
		d.ord, d.pfIdx, d.railIdx, d.indexed = int32(i), intern(pfs, d.PF), intern(rails, d.Rail), true
	}
}

// preferredArgs checks a request's sizes and indexes the pool if it
// changed since.
func preferredArgs(byID map[string]*Device, available, must []string, size int) error {
	if size < len(must) {
		return fmt.Errorf("allocation size %d is smaller than the %d must-include devices", size, len(must))
	}
	if size > len(available) {
		return fmt.Errorf("allocation size %d exceeds the %d available devices", size, len(available))
	}
	for _, d := range byID {
		if !d.indexed {
			indexDevices(byID)
		}
		break
	}
	return nil
}

// preferred is the selection behind GetPreferredAllocation: a set that
// holds every must-include device, sits on as few NUMA nodes as possible,
// and spreads over distinct rails and PFs; ties go to the lower ID.
//
// Candidates fall into groups of equal NUMA rank, rail and PF: within a
// group every device scores alike, so a pick compares the groups (a few
// per PF) and takes the lowest ID of the best; the lists it scans are the
// picked group's, not every candidate (kubelet asks with a pool's every
// free device, a thousand or more).
func preferred(byID map[string]*Device, available, must []string, size int) ([]string, error) {
	if err := preferredArgs(byID, available, must, size); err != nil {
		return nil, err
	}
	chosen := make([]string, 0, size)
	taken := make([]bool, len(byID)) // by ord
	var inSetUnknown []string        // chosen IDs that are no device of the pool
	var usedPF, usedRail []int32
	count := func(counts []int32, i int32) int32 {
		if int(i) < len(counts) {
			return counts[i]
		}
		return 0
	}
	use := func(counts []int32, i int32) []int32 {
		for len(counts) <= int(i) {
			counts = append(counts, 0)
		}
		counts[i]++
		return counts
	}
	// NUMA nodes: a handful, in a slice.
	type numaInfo struct {
		node       int
		used       bool
		free, rank int
	}
	var numas []numaInfo
	last := -1 // devices come in runs of one NUMA node
	numaAt := func(n int) *numaInfo {
		if last >= 0 && numas[last].node == n {
			return &numas[last]
		}
		for i := range numas {
			if numas[i].node == n {
				last = i
				return &numas[i]
			}
		}
		numas = append(numas, numaInfo{node: n})
		last = len(numas) - 1
		return &numas[last]
	}
	isTaken := func(id string) bool {
		if d := byID[id]; d != nil {
			return taken[d.ord]
		}
		return slices.Contains(inSetUnknown, id)
	}
	take := func(d *Device, id string) {
		chosen = append(chosen, id)
		if d == nil {
			inSetUnknown = append(inSetUnknown, id)
			return
		}
		taken[d.ord] = true
		usedPF = use(usedPF, d.pfIdx)
		usedRail = use(usedRail, d.railIdx)
		numaAt(d.NUMA).used = true
	}
	for _, m := range must {
		if !isTaken(m) {
			take(byID[m], m)
		}
	}
	cands := make([]*Device, 0, len(available))
	for _, a := range available {
		d := byID[a]
		if d == nil || !d.Healthy || taken[d.ord] {
			continue
		}
		taken[d.ord] = true // a device listed twice is one candidate
		cands = append(cands, d)
		numaAt(d.NUMA).free++
	}
	for _, d := range cands {
		taken[d.ord] = false
	}
	// NUMA order: nodes already used first, then a node that can hold the
	// whole rest (most candidates first), unknown (-1) last.
	need := size - len(chosen)
	order := make([]int, len(numas))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(i, j int) bool {
		a, b := &numas[order[i]], &numas[order[j]]
		if (a.node < 0) != (b.node < 0) {
			return b.node < 0
		}
		if a.used != b.used {
			return a.used
		}
		fa, fb := a.free >= need, b.free >= need
		if fa != fb {
			return fa
		}
		if a.free != b.free {
			return a.free > b.free
		}
		return a.node < b.node
	})
	for r, i := range order {
		numas[i].rank = r
	}
	// Groups: same NUMA rank, rail and PF score alike.
	type group struct {
		rank     int
		rail, pf int32
		members  []*Device
		best     int32 // the lowest untaken ord, -1: none left
		bestAt   int
	}
	var groups []group
	var byPF [][]int // PF index → its groups (one, unless a PF's devices disagree)
	for _, d := range cands {
		for len(byPF) <= int(d.pfIdx) {
			byPF = append(byPF, nil)
		}
		r := numaAt(d.NUMA).rank
		gi := -1
		for _, g := range byPF[d.pfIdx] {
			if groups[g].rank == r && groups[g].rail == d.railIdx {
				gi = g
				break
			}
		}
		if gi < 0 {
			gi = len(groups)
			groups = append(groups, group{rank: r, rail: d.railIdx, pf: d.pfIdx, best: -1})
			byPF[d.pfIdx] = append(byPF[d.pfIdx], gi)
		}
		g := &groups[gi]
		if g.best < 0 || d.ord < g.best {
			g.best, g.bestAt = d.ord, len(g.members)
		}
		g.members = append(g.members, d)
	}
	for len(chosen) < size {
		// Best next: lowest NUMA rank, then least-used rail and PF, then ID.
		bi := -1
		var brail, bpf int32
		for i := range groups {
			g := &groups[i]
			if g.best < 0 {
				continue
			}
			cr, cp := count(usedRail, g.rail), count(usedPF, g.pf)
			if bi >= 0 {
				b := &groups[bi]
				if g.rank != b.rank {
					if g.rank > b.rank {
						continue
					}
				} else if cr != brail {
					if cr > brail {
						continue
					}
				} else if cp != bpf {
					if cp > bpf {
						continue
					}
				} else if g.best > b.best {
					continue
				}
			}
			bi, brail, bpf = i, cr, cp
		}
		if bi < 0 {
			break
		}
		g := &groups[bi]
		d := g.members[g.bestAt]
		take(d, d.ID)
		g.best = -1
		for i, m := range g.members {
			if !taken[m.ord] && (g.best < 0 || m.ord < g.best) {
				g.best, g.bestAt = m.ord, i
			}
		}
	}
	// Not enough healthy devices: fill from the rest of available, as asked.
	for _, a := range available {
		if len(chosen) == size {
			break
		}
		if !isTaken(a) {
			take(byID[a], a)
		}
	}
	return chosen, nil
}

// PreStartContainer is not required.
func (s *server) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}
