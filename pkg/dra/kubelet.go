package dra

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	resourceapi "k8s.io/api/resource/v1"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"google.golang.org/grpc"
)

// The kubelet's side of DRA: two gRPC services on unix sockets.
//   - plugin registration, in the directory the kubelet watches
//     (<RegistrarDir>/railnet.io-reg.sock): GetInfo names the driver, the
//     DRA socket and the services it serves (v1.DRAPlugin);
//   - v1.DRAPlugin on <PluginDir>/dra.sock: NodePrepareResources and
//     NodeUnprepareResources, serialized (a prepare reads every checkpoint
//     to refuse a device held by another claim).
//
// Health (DRAResourceHealth) is not offered: an unhealthy device is not in
// the slices. v1beta1 is not served: the kubelets that speak it (≤ 1.33)
// have no resource.k8s.io/v1 either.

// DefaultRegistrarDir and DefaultPluginsDir are the kubelet's directories.
const (
	DefaultRegistrarDir = "/var/lib/kubelet/plugins_registry"
	DefaultPluginsDir   = "/var/lib/kubelet/plugins"
)

type kubeletServer struct {
	reg, dra         *grpc.Server
	regPath, draPath string
	wg               sync.WaitGroup
}

// listen removes a socket a previous process left, then listens (0600:
// only root, the kubelet, may call).
func listen(path string) (net.Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// serveKubelet starts the DRA service, then the registration socket the
// kubelet's plugin watcher finds (so the endpoint it is told of answers).
func (d *Driver) serveKubelet() (*kubeletServer, error) {
	regDir, pluginDir := d.o.RegistrarDir, d.o.PluginDir
	if regDir == "" {
		regDir = DefaultRegistrarDir
	}
	if pluginDir == "" {
		pluginDir = filepath.Join(DefaultPluginsDir, DriverName)
	}
	for _, dir := range []string{regDir, pluginDir} {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, err
		}
	}
	s := &kubeletServer{draPath: filepath.Join(pluginDir, "dra.sock"), regPath: filepath.Join(regDir, DriverName+"-reg.sock")}
	dl, err := listen(s.draPath)
	if err != nil {
		return nil, fmt.Errorf("DRA socket: %w", err)
	}
	s.dra = grpc.NewServer()
	drapb.RegisterDRAPluginServer(s.dra, &draService{d: d})
	rl, err := listen(s.regPath)
	if err != nil {
		dl.Close()
		os.Remove(s.draPath)
		return nil, fmt.Errorf("registration socket: %w", err)
	}
	s.reg = grpc.NewServer()
	registerapi.RegisterRegistrationServer(s.reg, &registration{d: d, endpoint: s.draPath})
	for _, x := range []struct {
		srv *grpc.Server
		l   net.Listener
	}{{s.dra, dl}, {s.reg, rl}} {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := x.srv.Serve(x.l); err != nil {
				d.log.Error("DRA: kubelet socket", "err", err)
			}
		}()
	}
	return s, nil
}

// stop: the registration socket goes first (the kubelet deregisters the
// driver when it disappears), then the DRA service.
func (s *kubeletServer) stop() {
	s.reg.Stop()
	os.Remove(s.regPath)
	s.dra.Stop()
	os.Remove(s.draPath)
	s.wg.Wait()
}

type registration struct {
	registerapi.UnsafeRegistrationServer
	d        *Driver
	endpoint string
}

func (r *registration) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{Type: registerapi.DRAPlugin, Name: DriverName, Endpoint: r.endpoint,
		SupportedVersions: []string{drapb.DRAPluginService}}, nil
}

func (r *registration) NotifyRegistrationStatus(_ context.Context, st *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if !st.PluginRegistered {
		r.d.log.Error("DRA: the kubelet refused the driver", "err", st.Error)
		return nil, fmt.Errorf("registration refused: %s", st.Error)
	}
	r.d.log.Info("DRA driver registered with the kubelet", "driver", DriverName, "node", r.d.o.NodeName)
	return &registerapi.RegistrationStatusResponse{}, nil
}

type draService struct {
	drapb.UnsafeDRAPluginServer
	d *Driver
}

// NodePrepareResources reads each claim from the API (the kubelet sends
// only its name and UID), checks it is the claim meant and allocated, and
// prepares it. A claim's failure is its own answer; the call fails only
// when it cannot be answered at all.
func (s *draService) NodePrepareResources(ctx context.Context, req *drapb.NodePrepareResourcesRequest) (*drapb.NodePrepareResourcesResponse, error) {
	resp := &drapb.NodePrepareResourcesResponse{Claims: make(map[string]*drapb.NodePrepareResourceResponse, len(req.Claims))}
	cs := make([]*resourceapi.ResourceClaim, 0, len(req.Claims))
	for _, c := range req.Claims {
		got, err := s.d.getClaim(ctx, c.Namespace, c.Name)
		switch {
		case err != nil:
			err = fmt.Errorf("read claim %s/%s: %w", c.Namespace, c.Name, err)
		case string(got.UID) != c.Uid:
			err = fmt.Errorf("claim %s/%s is another claim now (UID %s, the kubelet asked for %s)", c.Namespace, c.Name, got.UID, c.Uid)
		case got.Status.Allocation == nil:
			err = fmt.Errorf("claim %s/%s is not allocated", c.Namespace, c.Name)
		}
		if err != nil {
			s.d.log.Error("DRA: prepare", "claim", c.Namespace+"/"+c.Name, "uid", c.Uid, "err", err)
			resp.Claims[c.Uid] = &drapb.NodePrepareResourceResponse{Error: err.Error()}
			continue
		}
		cs = append(cs, got)
	}
	s.d.grpcMu.Lock()
	defer s.d.grpcMu.Unlock()
	for _, c := range cs {
		devs, err := s.d.Prepare(c)
		if err != nil {
			s.d.log.Error("DRA: prepare", "claim", c.Namespace+"/"+c.Name, "uid", c.UID, "err", err)
			resp.Claims[string(c.UID)] = &drapb.NodePrepareResourceResponse{Error: err.Error()}
			continue
		}
		s.d.log.Info("DRA: prepared", "claim", c.Namespace+"/"+c.Name, "uid", c.UID, "devices", len(devs))
		r := &drapb.NodePrepareResourceResponse{}
		for _, dv := range devs {
			r.Devices = append(r.Devices, &drapb.Device{RequestNames: baseRequests(dv.Requests), PoolName: dv.PoolName,
				DeviceName: dv.DeviceName, CdiDeviceIds: dv.CDIDeviceIDs})
		}
		resp.Claims[string(c.UID)] = r
	}
	return resp, nil
}

// NodeUnprepareResources removes what Prepare wrote; a claim never
// prepared here is fine.
func (s *draService) NodeUnprepareResources(_ context.Context, req *drapb.NodeUnprepareResourcesRequest) (*drapb.NodeUnprepareResourcesResponse, error) {
	s.d.grpcMu.Lock()
	defer s.d.grpcMu.Unlock()
	resp := &drapb.NodeUnprepareResourcesResponse{Claims: make(map[string]*drapb.NodeUnprepareResourceResponse, len(req.Claims))}
	for _, c := range req.Claims {
		err := s.d.Unprepare(c.Uid)
		s.d.log.Info("DRA: unprepared", "claim", c.Namespace+"/"+c.Name, "uid", c.Uid, "err", err)
		r := &drapb.NodeUnprepareResourceResponse{}
		if err != nil {
			r.Error = err.Error()
		}
		resp.Claims[c.Uid] = r
	}
	return resp, nil
}

// baseRequests: a device allocated for a subrequest ("req/alt") answers
// for its request ("req"), which is what the kubelet matches containers
// against.
func baseRequests(rs []string) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i], _, _ = strings.Cut(r, "/")
	}
	return out
}
