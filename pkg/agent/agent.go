// Package agent is the node daemon's loop: discovery of sysfs, selection
// of devices into pools, and the device plugin manager, driven by netlink
// link events, a periodic rescan and config reloads.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/railnet/railnet/pkg/atomicfile"
	cniconfig "github.com/railnet/railnet/pkg/cni/config"
	"github.com/railnet/railnet/pkg/deviceplugin"
	"github.com/railnet/railnet/pkg/discovery"
	"github.com/railnet/railnet/pkg/doctor"
	"github.com/railnet/railnet/pkg/pools"
	"github.com/railnet/railnet/pkg/sysfs"
	"github.com/railnet/railnet/pkg/topology"
)

// Options configure an Agent.
type Options struct {
	ConfigPath     string // "" = DefaultConfig, with nothing to watch or reload
	Sys, Dev       *sysfs.FS
	Manager        *deviceplugin.Manager
	Metrics        *deviceplugin.Metrics
	Logger         *slog.Logger
	RescanInterval time.Duration // periodic full rescan (default 30s)
	MinInterval    time.Duration // rate limit between two rescans (default 1s)
	// DRA receives the pools whose api is dra after every scan; nil: such
	// pools are served by nobody (logged).
	DRA DRAPublisher
}

// DRAPublisher is the DRA driver as the agent sees it: the dra pools of
// each scan, with the inventory and topology they were selected from.
type DRAPublisher interface {
	Publish(pools []pools.Resolved, inv *discovery.Inventory, topo *topology.Topology)
}

// Agent keeps the manager's pools equal to what sysfs and the config say.
type Agent struct {
	o       Options
	log     *slog.Logger
	trigger chan struct{}

	mu  sync.Mutex
	cfg *pools.Config // the last good config

	doctorMu sync.Mutex           // rescans may overlap (a trigger and an explicit call)
	findings *prometheus.GaugeVec // railnet_doctor_findings; nil without metrics
	seen     map[doctor.Finding]bool

	first *resolution // New's, served by the first Rescan instead of scanning again

	draWarned atomic.Bool
}

// resolution is one scan's pools, with what doctor reads.
type resolution struct {
	pools []deviceplugin.Pool // the device plugin's
	dra   []pools.Resolved    // the DRA driver's
	cfg   *pools.Config
	inv   *discovery.Inventory
	topo  *topology.Topology
}

// New loads and checks the config against the current inventory; a config
// that does not parse, or that puts a device in two pools, is an error.
func New(o Options) (*Agent, error) {
	if o.RescanInterval <= 0 {
		o.RescanInterval = 30 * time.Second
	}
	if o.MinInterval <= 0 {
		o.MinInterval = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	a := &Agent{o: o, log: o.Logger, trigger: make(chan struct{}, 1), seen: map[doctor.Finding]bool{}}
	if o.Metrics != nil {
		a.findings = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "railnet_doctor_findings",
			Help: "1 per railnetctl doctor finding of the last scan (what slows GPUDirect: PCIe links, ACS, IOMMU, rails, ...).",
		}, []string{"check", "severity", "device"})
		o.Metrics.Registry.MustRegister(a.findings)
	}
	cfg, err := a.load()
	if err != nil {
		return nil, err
	}
	first, err := a.resolve(cfg)
	if err != nil {
		return nil, err
	}
	a.cfg, a.first = cfg, first
	return a, nil
}

// DefaultConfig serves when no config file is given: one pool per GPU rail.
const DefaultConfig = `{"railPools": true}`

func (a *Agent) load() (*pools.Config, error) {
	if a.o.ConfigPath == "" {
		return pools.Parse([]byte(DefaultConfig))
	}
	return pools.Load(a.o.ConfigPath)
}

// SetDRA hands the dra pools of every later scan to p; call it before Run.
func (a *Agent) SetDRA(p DRAPublisher) {
	a.mu.Lock()
	a.o.DRA = p
	a.mu.Unlock()
}

// Config returns the config in force.
func (a *Agent) Config() *pools.Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg
}

// resolve scans and selects devices into the config's pools.
func (a *Agent) resolve(cfg *pools.Config) (*resolution, error) {
	start := time.Now()
	inv, err := discovery.NewScanner(a.o.Sys, a.o.Dev).Lean().Scan()
	if err != nil {
		return nil, err
	}
	scanned := time.Now()
	topo := topology.Build(inv)
	resolved, warnings, err := pools.Resolve(cfg, inv, topo)
	if a.o.Metrics != nil {
		a.o.Metrics.ObserveScan(time.Since(start), len(inv.Warnings))
	}
	a.log.Debug("scanned", "functions", len(inv.PCI), "scan", scanned.Sub(start), "resolve", time.Since(scanned))
	if err != nil {
		return nil, err
	}
	for _, w := range warnings {
		a.log.Warn(w)
	}
	for _, w := range inv.Warnings {
		a.log.Debug("discovery", "path", w.Path, "msg", w.Msg)
	}
	r := &resolution{cfg: cfg, inv: inv, topo: topo}
	var dp []pools.Resolved
	for _, p := range resolved {
		if p.API == pools.APIDRA {
			r.dra = append(r.dra, p)
		} else {
			dp = append(dp, p)
		}
	}
	r.pools = Convert(dp)
	return r, nil
}

// serve hands a resolution to the device plugin, then (off the path that
// registers pools) to doctor.
func (a *Agent) serve(r *resolution) error {
	err := a.o.Manager.Update(r.pools)
	a.mu.Lock()
	dra := a.o.DRA
	a.mu.Unlock()
	if dra != nil {
		dra.Publish(r.dra, r.inv, r.topo)
	} else if len(r.dra) > 0 && !a.draWarned.Swap(true) {
		a.log.Warn("pools with api: dra are served by the DRA driver, which is off (--dra=off, or it could not start): nobody offers their devices", "pools", len(r.dra))
	}
	a.doctor(r)
	return err
}

// doctor exports what slows GPUDirect on this node after every scan, and
// logs each finding once, when it first appears. Findings change no
// device's health: a NIC on a degraded link works, slowly.
func (a *Agent) doctor(r *resolution) {
	findings := doctor.Run(doctor.Options{Sys: a.o.Sys, Config: r.cfg}, r.inv, r.topo)
	a.doctorMu.Lock()
	defer a.doctorMu.Unlock()
	now := map[doctor.Finding]bool{}
	if a.findings != nil {
		a.findings.Reset()
	}
	for _, f := range findings {
		now[f] = true
		if a.findings != nil {
			a.findings.WithLabelValues(f.Check, f.Severity, f.Device).Set(1)
		}
		if !a.seen[f] {
			a.log.Warn("doctor: "+f.Found, "check", f.Check, "severity", f.Severity, "device", f.Device, "want", f.Want, "fix", f.Fix)
		}
	}
	a.seen = now
}

// Convert turns selected pools into what the device plugin serves.
func Convert(rs []pools.Resolved) []deviceplugin.Pool {
	out := make([]deviceplugin.Pool, 0, len(rs))
	for _, r := range rs {
		p := deviceplugin.Pool{Name: r.Name, Resource: r.Resource, Kind: r.Kind, RDMACM: r.RDMACM}
		for _, d := range r.Devices {
			p.Devices = append(p.Devices, deviceplugin.Device{ID: d.ID, BDF: d.BDF, PF: d.PF, RDMA: d.RDMA,
				CharDevs: d.CharDevs, NUMA: d.NUMA, Rail: d.Rail, IB: d.IB, Healthy: d.Health == pools.Healthy, Reason: d.Reason})
		}
		out = append(out, p)
	}
	return out
}

// Rescan reads sysfs again and updates the served pools.
func (a *Agent) Rescan() error {
	a.mu.Lock()
	r := a.first
	a.first = nil
	a.mu.Unlock()
	if r != nil {
		// New resolved the pools a moment ago: serve them at once
		// (start-up scans once, not twice).
		return a.serve(r)
	}
	r, err := a.resolve(a.Config())
	if err != nil {
		return fmt.Errorf("rescan: %w", err)
	}
	return a.serve(r)
}

// Reload reads the config file again. An invalid config is logged and
// refused; the last good one keeps serving.
func (a *Agent) Reload() error {
	cfg, err := a.load()
	if err == nil {
		var r *resolution
		if r, err = a.resolve(cfg); err == nil {
			a.mu.Lock()
			a.cfg = cfg
			a.first = nil
			a.mu.Unlock()
			a.log.Info("config reloaded", "path", a.o.ConfigPath)
			return a.serve(r)
		}
	}
	a.log.Error("config refused; the previous one keeps serving", "path", a.o.ConfigPath, "err", err)
	return err
}

// Trigger asks for a rescan; bursts coalesce into one.
func (a *Agent) Trigger() {
	select {
	case a.trigger <- struct{}{}:
	default:
	}
}

// Run serves the first scan, then rescans on triggers (rate-limited) and
// periodically, and reloads the config when its file changes or reload
// receives, until ctx ends.
func (a *Agent) Run(ctx context.Context, reload <-chan struct{}) error {
	// Watch the config before serving: a change written while the first
	// pools register must not go unseen.
	cfgEvents, stopWatch := a.watchConfig()
	defer stopWatch()
	if err := a.Rescan(); err != nil {
		return err
	}
	tick := time.NewTicker(a.o.RescanInterval)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-reload:
			a.Reload()
		case <-cfgEvents:
			a.Reload()
		case <-tick.C:
			a.rescanLogged()
			last = time.Now()
		case <-a.trigger:
			// Rate limit: at most one rescan per MinInterval; later
			// triggers in the window were coalesced into this one.
			if wait := a.o.MinInterval - time.Since(last); wait > 0 {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(wait):
				}
			}
			a.rescanLogged()
			last = time.Now()
		}
	}
}

func (a *Agent) rescanLogged() {
	if err := a.Rescan(); err != nil {
		a.log.Error("rescan", "err", err)
	}
}

// watchConfig reports changes of the config file. The directory is
// watched: a ConfigMap volume swaps a ..data symlink rather than writing
// the file.
func (a *Agent) watchConfig() (<-chan struct{}, func()) {
	out := make(chan struct{}, 1)
	if a.o.ConfigPath == "" {
		return out, func() {}
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		a.log.Warn("config watch unavailable; SIGHUP still reloads", "err", err)
		return out, func() {}
	}
	dir := filepath.Dir(a.o.ConfigPath)
	if err := w.Add(dir); err != nil {
		a.log.Warn("config watch unavailable; SIGHUP still reloads", "err", err)
		w.Close()
		return out, func() {}
	}
	base := filepath.Base(a.o.ConfigPath)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if b := filepath.Base(ev.Name); b == base || b == "..data" {
					select {
					case out <- struct{}{}:
					default:
					}
				}
			case _, ok := <-w.Errors:
				if !ok {
					return
				}
			}
		}
	}()
	return out, func() { close(done); w.Close() }
}

// InstallCNI copies the CNI binary into dir atomically (0755).
func InstallCNI(src, dir string) error {
	in, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("install CNI: %w", err)
	}
	if len(in) == 0 {
		return errors.New("install CNI: " + src + " is empty")
	}
	tmp, err := os.CreateTemp(dir, ".railnet-*")
	if err != nil {
		return fmt.Errorf("install CNI: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(in); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, filepath.Base(src)))
}

// WriteCNINodeConfig writes the CNI's node settings: host paths are the
// node's to choose, not a NAD's. Written atomically, 0644.
func WriteCNINodeConfig(path string, node cniconfig.Node) error {
	b, err := json.Marshal(node)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("CNI node settings: %w", err)
	}
	if err := atomicfile.Write(path, append(b, '\n'), 0o644, true); err != nil {
		return fmt.Errorf("CNI node settings: %w", err)
	}
	return nil
}
