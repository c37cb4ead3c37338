package deviceplugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/railnet/railnet/pkg/deviceinfo"
)

// Options configure a Manager.
type Options struct {
	KubeletDir string // default /var/lib/kubelet/device-plugins
	DevInfoDir string // default /var/run/k8s.cni.cncf.io/devinfo/dp; "-" disables the files
	CDI        bool   // Allocate returns CDI names; a CDI spec per pool is written to CDIDir
	CDIDir     string // default /var/run/cdi
	// DevfsRoot is the directory that stands for /dev on the node, as the
	// container runtime sees it (default /dev): device specs and CDI specs
	// name host paths below it; pods still see /dev/infiniband/....
	DevfsRoot          string
	Logger             *slog.Logger
	Metrics            *Metrics
	RegisterBackoff    time.Duration // first retry delay (default 200ms)
	RegisterBackoffMax time.Duration // default 10s
}

// Manager runs one server per pool and keeps them registered.
type Manager struct {
	opts    Options
	log     *slog.Logger
	metrics *Metrics

	mu      sync.Mutex
	closed  bool // Close ran: updates are ignored
	swept   bool // sweep ran
	servers map[string]*server
	known   map[string]map[string]Device // pool → every device ever advertised (vanished ones stay, Unhealthy)

	regMu   sync.Mutex
	regWait map[string][]chan struct{}
}

// NewManager builds a manager; Run serves.
func NewManager(o Options) *Manager {
	if o.KubeletDir == "" {
		o.KubeletDir = pluginapi.DevicePluginPath
	}
	if o.DevInfoDir == "" {
		o.DevInfoDir = deviceinfo.DefaultDir
	}
	if o.CDIDir == "" {
		o.CDIDir = DefaultCDIDir
	}
	if o.DevfsRoot == "" {
		o.DevfsRoot = "/dev"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.RegisterBackoff <= 0 {
		o.RegisterBackoff = 200 * time.Millisecond
	}
	if o.RegisterBackoffMax <= 0 {
		o.RegisterBackoffMax = 10 * time.Second
	}
	m := &Manager{opts: o, log: o.Logger, metrics: o.Metrics, servers: map[string]*server{},
		known: map[string]map[string]Device{}, regWait: map[string][]chan struct{}{}}
	if m.metrics == nil {
		m.metrics = NewMetrics()
	}
	return m
}

// Update makes the served pools equal to pools: new pools start and
// register, removed pools stop, changed device lists reach every
// ListAndWatch stream. A device that was advertised and is no longer found
// stays listed as Unhealthy until it comes back.
func (m *Manager) Update(pools []Pool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		// A rescan that finishes after shutdown must not serve sockets,
		// register or write files again.
		return nil
	}
	want := map[string]bool{}
	var errs []error
	type files struct{ p, old Pool }
	var later []files
	for _, p := range pools {
		want[p.Name] = true
		p = m.merge(p)
		var old Pool
		if s := m.servers[p.Name]; s != nil {
			old, _ = s.snapshot()
		}
		m.metrics.setDevices(p)
		if s := m.servers[p.Name]; s != nil {
			if cur, _ := s.snapshot(); cur.Resource == p.Resource {
				// A served pool changes: its files first, so that what
				// ListAndWatch reports never has a stale file beside it.
				m.writeFiles(p, old)
				s.setPool(p)
				continue
			}
			m.stopLocked(s)
		}
		later = append(later, files{p, old})
		s := newServer(m, p)
		if err := s.serve(); err != nil {
			errs = append(errs, fmt.Errorf("pool %s: %w", p.Name, err))
			continue
		}
		m.servers[p.Name] = s
		s.register()
	}
	// New pools' files once every pool serves and registers (in the
	// background): a kubelet waits for none of them. Allocate writes a
	// device's device-info file itself if it is not there yet.
	for _, f := range later {
		m.writeFiles(f.p, f.old)
	}
	for name, s := range m.servers {
		if !want[name] {
			m.stopLocked(s)
		}
	}
	if !m.swept && len(pools) > 0 {
		m.swept = true
		m.sweep(pools)
	}
	return errors.Join(errs...)
}

// sweep removes, once the first pools are known, what an earlier run left
// in the device-info and CDI directories that no current pool owns: files
// of our resource prefix(es), and the ".<name>.*" temp files of writes a
// crash interrupted. A device-info file for a device nobody advertises
// would let the CNI attach it.
func (m *Manager) sweep(pools []Pool) {
	owned := map[string]bool{}
	prefixes := map[string]bool{}
	for _, p := range pools {
		domain, _, _ := strings.Cut(p.Resource, "/")
		prefixes[domain+"-"] = true
		owned[filepath.Base(cdiSpecPath("", p.Resource))] = true
		for _, d := range p.Devices {
			owned[deviceinfo.FileName(p.Resource, d.ID)] = true
		}
	}
	ours := func(name string) bool {
		for pre := range prefixes {
			if strings.HasPrefix(name, pre) || strings.HasPrefix(name, "."+pre) {
				return true
			}
		}
		return false
	}
	dirs := []string{}
	if m.opts.DevInfoDir != "-" {
		dirs = append(dirs, m.opts.DevInfoDir)
	}
	if m.opts.CDI {
		dirs = append(dirs, m.opts.CDIDir)
	}
	for _, dir := range dirs {
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if e.IsDir() || !ours(e.Name()) || owned[e.Name()] {
				continue
			}
			if err := os.Remove(filepath.Join(dir, e.Name())); err == nil {
				m.log.Info("removed a file no pool owns", "file", filepath.Join(dir, e.Name()))
			}
		}
	}
}

// merge keeps vanished devices as Unhealthy.
func (m *Manager) merge(p Pool) Pool {
	known := m.known[p.Name]
	if known == nil {
		known = map[string]Device{}
		m.known[p.Name] = known
	}
	seen := map[string]bool{}
	for _, d := range p.Devices {
		seen[d.ID] = true
		known[d.ID] = d
	}
	devs := slices.Clone(p.Devices)
	for id, d := range known {
		if !seen[id] {
			d.Healthy, d.Reason = false, "PCI function vanished"
			devs = append(devs, d)
		}
	}
	slices.SortFunc(devs, func(a, b Device) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	p.Devices = devs
	return p
}

func (m *Manager) stopLocked(s *server) {
	s.shutdown()
	p, _ := s.snapshot()
	m.removeDevInfo(p)
	if m.opts.CDI {
		removeCDISpec(m.opts.CDIDir, p.Resource)
	}
	delete(m.servers, s.name)
	delete(m.known, s.name)
	m.metrics.dropPool(s.name)
}

// writeDevInfo (re)creates the device-info file of every device and removes
// those of devices no longer present.
func (m *Manager) writeDevInfo(p, old Pool) {
	if m.opts.DevInfoDir == "-" {
		return
	}
	written := map[string]Device{}
	for _, d := range old.Devices {
		if d.Reason != "PCI function vanished" {
			written[d.ID] = d
		}
	}
	present := map[string]bool{}
	for _, d := range p.Devices {
		if d.Reason == "PCI function vanished" {
			continue
		}
		present[d.ID] = true
		rd := ""
		if len(d.RDMA) > 0 {
			rd = d.RDMA[0]
		}
		// Recreated on change only: a rescan every 30 s must not rewrite
		// a thousand unchanged files under Multus' feet.
		if w, ok := written[d.ID]; ok && old.Resource == p.Resource && w.BDF == d.BDF && w.PF == d.PF && firstOf(w.RDMA) == rd &&
			deviceinfo.Exists(m.opts.DevInfoDir, p.Resource, d.ID) {
			continue
		}
		if err := deviceinfo.Write(m.opts.DevInfoDir, p.Resource, d.ID, deviceinfo.NewPCI(d.BDF, rd, d.PF)); err != nil {
			m.log.Error("write device-info file", "device", d.ID, "err", err)
		}
	}
	for _, d := range old.Devices {
		if !present[d.ID] {
			deviceinfo.Remove(m.opts.DevInfoDir, old.Resource, d.ID)
		}
	}
}

func firstOf(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// writeFiles writes a pool's device-info files and CDI spec.
func (m *Manager) writeFiles(p, old Pool) {
	m.writeDevInfo(p, old)
	if m.opts.CDI {
		if err := writeCDISpec(m.opts.CDIDir, m.opts.DevfsRoot, p); err != nil {
			m.log.Error("write CDI spec", "pool", p.Name, "err", err)
		}
	}
}

// ensureDevInfo writes one device's device-info file if it is missing
// (Allocate came before Update wrote it): Multus reads it after Allocate.
func (m *Manager) ensureDevInfo(resource string, d Device) {
	if m.opts.DevInfoDir == "-" || deviceinfo.Exists(m.opts.DevInfoDir, resource, d.ID) {
		return
	}
	if err := deviceinfo.Write(m.opts.DevInfoDir, resource, d.ID, deviceinfo.NewPCI(d.BDF, firstOf(d.RDMA), d.PF)); err != nil {
		m.log.Error("write device-info file", "device", d.ID, "err", err)
	}
}

func (m *Manager) removeDevInfo(p Pool) {
	if m.opts.DevInfoDir == "-" {
		return
	}
	for _, d := range p.Devices {
		if err := deviceinfo.Remove(m.opts.DevInfoDir, p.Resource, d.ID); err != nil {
			m.log.Warn("remove device-info file", "device", d.ID, "err", err)
		}
	}
}

// Registered reports whether the pool is registered with the kubelet.
func (m *Manager) Registered(pool string) bool {
	m.mu.Lock()
	s := m.servers[pool]
	m.mu.Unlock()
	if s == nil {
		return false
	}
	s.regMu.Lock()
	defer s.regMu.Unlock()
	return s.registered
}

// WaitRegistered returns a channel closed at the pool's next successful registration.
func (m *Manager) WaitRegistered(pool string) <-chan struct{} {
	ch := make(chan struct{})
	m.regMu.Lock()
	m.regWait[pool] = append(m.regWait[pool], ch)
	m.regMu.Unlock()
	return ch
}

func (m *Manager) notifyRegistered(pool string) {
	m.regMu.Lock()
	defer m.regMu.Unlock()
	for _, ch := range m.regWait[pool] {
		close(ch)
	}
	delete(m.regWait, pool)
}

// Pools lists the served pool names, sorted.
func (m *Manager) Pools() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.servers))
	for n := range m.servers {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Run watches the kubelet directory until ctx ends, then stops every
// server, removes the sockets and the device-info files. The kubelet
// deletes plugin sockets when it restarts; a removed socket of ours, or a
// kubelet.sock created anew, makes us serve again and re-register.
func (m *Manager) Run(ctx context.Context) error {
	defer m.Close()
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	if err := os.MkdirAll(m.opts.KubeletDir, 0o755); err != nil {
		return err
	}
	if err := w.Add(m.opts.KubeletDir); err != nil {
		return fmt.Errorf("watch %s: %w", m.opts.KubeletDir, err)
	}
	kubeletSock := filepath.Join(m.opts.KubeletDir, "kubelet.sock")
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-w.Errors:
			m.log.Warn("watch kubelet directory", "err", err)
		case ev := <-w.Events:
			switch {
			case ev.Name == kubeletSock && ev.Has(fsnotify.Create):
				m.log.Info("kubelet.sock created: kubelet restarted, registering again")
				m.reRegister(nil)
			case ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename):
				m.reRegister(func(s *server) bool { return s.socket == ev.Name })
			}
		}
	}
}

// reRegister serves again (new socket) and re-registers the servers that
// match (all when match is nil).
func (m *Manager) reRegister(match func(*server) bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.servers {
		if match != nil && !match(s) {
			continue
		}
		if _, err := os.Stat(s.socket); err != nil {
			s.log.Info("plugin socket removed: serving again")
			if err := s.serve(); err != nil {
				s.log.Error("serve", "err", err)
				continue
			}
		}
		s.register()
	}
}

// Close stops every server and removes its socket and device-info files.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	for _, s := range m.servers {
		m.stopLocked(s)
	}
}

// hostDevPath maps a /dev path (what a pod sees) to the node's path below
// devfsRoot (what the runtime opens).
func hostDevPath(devfsRoot, p string) string {
	rel, ok := strings.CutPrefix(p, "/dev/")
	if !ok || devfsRoot == "/dev" {
		return p
	}
	return filepath.Join(devfsRoot, rel)
}

// ResourceOf names the resource that advertises device id (a BDF, or a
// shared slot BDF#k), if any pool does.
func (m *Manager) ResourceOf(id string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, devs := range m.known {
		if _, ok := devs[id]; ok {
			if s := m.servers[name]; s != nil {
				p, _ := s.snapshot()
				return p.Resource, true
			}
		}
	}
	return "", false
}
