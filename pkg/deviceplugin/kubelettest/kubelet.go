// Package kubelettest is a fake kubelet for tests: the Registration
// service on <dir>/kubelet.sock, and a client that talks to plugins the
// way the kubelet's device manager does.
package kubelettest

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// Kubelet is a fake kubelet's registration server.
type Kubelet struct {
	pluginapi.UnimplementedRegistrationServer
	Dir string

	mu       sync.Mutex
	regs     []*pluginapi.RegisterRequest
	consumed map[string]int // resource ("" = any) → registrations already returned by WaitRegistration
	notify   chan struct{}  // closed and replaced on every registration
	refuse   error
	refused  int // Register calls refused
	srv      *grpc.Server
}

// Start serves kubelet.sock in dir.
func Start(tb testing.TB, dir string) *Kubelet {
	tb.Helper()
	k := &Kubelet{Dir: dir, notify: make(chan struct{}), consumed: map[string]int{}}
	if err := k.start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(k.Stop)
	return k
}

func (k *Kubelet) start() error {
	sock := filepath.Join(k.Dir, "kubelet.sock")
	os.Remove(sock)
	lis, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	pluginapi.RegisterRegistrationServer(srv, k)
	k.mu.Lock()
	k.srv = srv
	k.mu.Unlock()
	go srv.Serve(lis)
	return nil
}

// Stop stops serving (the socket stays, like a dead kubelet's).
func (k *Kubelet) Stop() {
	k.mu.Lock()
	srv := k.srv
	k.srv = nil
	k.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
}

// Restart does what a kubelet restart does: the plugin sockets in the
// directory are deleted, then kubelet.sock is created anew.
func (k *Kubelet) Restart(tb testing.TB) {
	tb.Helper()
	k.Stop()
	ents, _ := os.ReadDir(k.Dir)
	for _, e := range ents {
		os.Remove(filepath.Join(k.Dir, e.Name()))
	}
	if err := k.start(); err != nil {
		tb.Fatal(err)
	}
}

// Refuse makes Register fail with err (nil: accept).
func (k *Kubelet) Refuse(err error) {
	k.mu.Lock()
	k.refuse = err
	k.mu.Unlock()
}

// Refused counts the Register calls refused so far.
func (k *Kubelet) Refused() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.refused
}

// Register records the request as the kubelet does, checking the version.
func (k *Kubelet) Register(_ context.Context, r *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	k.mu.Lock()
	refuse := k.refuse
	if refuse != nil {
		k.refused++
	}
	k.mu.Unlock()
	if refuse != nil {
		return nil, status.Error(codes.Unavailable, refuse.Error())
	}
	if r.Version != pluginapi.Version {
		return nil, status.Errorf(codes.InvalidArgument, "unsupported version %q", r.Version)
	}
	if _, err := os.Stat(filepath.Join(k.Dir, r.Endpoint)); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "endpoint %s: %v", r.Endpoint, err)
	}
	k.mu.Lock()
	k.regs = append(k.regs, r)
	close(k.notify)
	k.notify = make(chan struct{})
	k.mu.Unlock()
	return &pluginapi.Empty{}, nil
}

// Registrations returns every registration so far.
func (k *Kubelet) Registrations() []*pluginapi.RegisterRequest {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]*pluginapi.RegisterRequest(nil), k.regs...)
}

// WaitRegistration returns the next registration of resource ("" = of any
// resource) that no earlier WaitRegistration call for it returned, or fails
// after timeout. Registrations of other resources are kept for their callers.
func (k *Kubelet) WaitRegistration(tb testing.TB, resource string, timeout time.Duration) *pluginapi.RegisterRequest {
	tb.Helper()
	deadline := time.After(timeout)
	for {
		k.mu.Lock()
		seen := 0
		for _, r := range k.regs {
			if resource != "" && r.ResourceName != resource {
				continue
			}
			if seen == k.consumed[resource] {
				k.consumed[resource]++
				k.mu.Unlock()
				return r
			}
			seen++
		}
		wait := k.notify
		k.mu.Unlock()
		select {
		case <-wait:
		case <-deadline:
			tb.Fatalf("no registration of %q within %v", resource, timeout)
			return nil
		}
	}
}

// Plugin is a connection to one plugin endpoint.
type Plugin struct {
	pluginapi.DevicePluginClient
	conn *grpc.ClientConn
}

// Dial connects to an endpoint in the kubelet directory.
func (k *Kubelet) Dial(tb testing.TB, endpoint string) *Plugin {
	tb.Helper()
	conn, err := grpc.NewClient("unix://"+filepath.Join(k.Dir, endpoint), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return &Plugin{DevicePluginClient: pluginapi.NewDevicePluginClient(conn), conn: conn}
}

// Watch starts ListAndWatch and delivers every list on the channel.
func (p *Plugin) Watch(tb testing.TB) <-chan []*pluginapi.Device {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	stream, err := p.ListAndWatch(ctx, &pluginapi.Empty{})
	if err != nil {
		tb.Fatal(err)
	}
	out := make(chan []*pluginapi.Device, 64)
	go func() {
		defer close(out)
		for {
			r, err := stream.Recv()
			if err != nil {
				return
			}
			out <- r.Devices
		}
	}()
	return out
}

// Next waits for the next list that satisfies ok.
func Next(tb testing.TB, ch <-chan []*pluginapi.Device, timeout time.Duration, ok func([]*pluginapi.Device) bool) []*pluginapi.Device {
	tb.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, open := <-ch:
			if !open {
				tb.Fatal("ListAndWatch stream ended")
			}
			if ok(l) {
				return l
			}
		case <-deadline:
			tb.Fatalf("no matching device list within %v", timeout)
			return nil
		}
	}
}

// ErrRefused is a registration refusal for tests.
var ErrRefused = errors.New("registration refused by test kubelet")
