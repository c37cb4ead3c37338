// Command railnet-deviceplugin is the node DaemonSet: it discovers NICs,
// RDMA devices and GPUs from sysfs and advertises topology-aware sriov and
// rdma pools to the kubelet.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/railnet/railnet/pkg/agent"
	"github.com/railnet/railnet/pkg/audit"
	cniconfig "github.com/railnet/railnet/pkg/cni/config"
	"github.com/railnet/railnet/pkg/deviceinfo"
	"github.com/railnet/railnet/pkg/deviceplugin"
	"github.com/railnet/railnet/pkg/dra"
	"github.com/railnet/railnet/pkg/dra/claims"
	"github.com/railnet/railnet/pkg/dra/kubeapi"
	"github.com/railnet/railnet/pkg/keys"
	"github.com/railnet/railnet/pkg/pools"
	"github.com/railnet/railnet/pkg/sysfs"
)

var version = "dev"

const defaultConfig = "/etc/railnet/config.yaml"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, reload))
}

type flags struct {
	config, sys, dev, kubeletDir, devinfoDir, cdiDir, metricsAddr, installCNIDir, cniBinary, logLevel string
	cdi, netlinkEvents, configSet                                                                     bool
	rescan, reconcile                                                                                 time.Duration
	cniStateDir, cniPath                                                                              string
	hostRoot, hostCNIBinary, podResources, cniNodeConfig                                              string
	version, installOnly                                                                              bool
	keysSecretDir, keysDir, cniKeysDir, auditFile                                                     string
	keysInterval                                                                                      time.Duration
	memoryLimit                                                                                       int64
	dra, nodeName, kubeconfig, draRegistrarDir, draPluginDir                                          string
	draNetworkData                                                                                    time.Duration
}

func parseFlags(args []string, stderr io.Writer) (*flags, error) {
	f := &flags{}
	fs := flag.NewFlagSet("railnet-deviceplugin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	self, _ := os.Executable()
	fs.StringVar(&f.config, "config", defaultConfig, "pool configuration (JSON or YAML); without one, and without "+defaultConfig+": one pool per GPU rail")
	fs.StringVar(&f.sys, "sysfs-root", "/sys", "directory that stands for /sys")
	fs.StringVar(&f.dev, "devfs-root", "/dev", "directory that stands for /dev")
	fs.StringVar(&f.kubeletDir, "kubelet-dir", "/var/lib/kubelet/device-plugins", "kubelet device plugin directory")
	fs.StringVar(&f.devinfoDir, "devinfo-dir", deviceinfo.DefaultDir, "device-info files directory")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on this address (e.g. :9110); empty: off")
	fs.StringVar(&f.installCNIDir, "install-cni-dir", "", "install the railnet CNI binary into this directory (e.g. /opt/cni/bin)")
	fs.StringVar(&f.cniBinary, "cni-binary", filepath.Join(filepath.Dir(self), "railnet"), "the CNI binary that --install-cni-dir installs")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&f.cdi, "cdi", false, "return CDI device names from Allocate and write a CDI spec per pool")
	fs.StringVar(&f.cdiDir, "cdi-dir", deviceplugin.DefaultCDIDir, "where --cdi writes its specs")
	fs.BoolVar(&f.netlinkEvents, "netlink-events", true, "rescan on netlink link events")
	fs.DurationVar(&f.rescan, "rescan-interval", 30*time.Second, "periodic full rescan")
	fs.StringVar(&f.cniStateDir, "cni-state-dir", "/var/lib/cni/railnet", "the railnet CNI's attachment records, for the reconciler")
	fs.StringVar(&f.cniPath, "cni-path", "", "where IPAM plugins are for the reconciler's DEL (default: as recorded by ADD)")
	fs.DurationVar(&f.reconcile, "reconcile-interval", time.Minute, "release attachments no running pod holds (or whose netns is gone); 0 disables")
	fs.StringVar(&f.hostRoot, "host-root", "", "the host's / as this process sees it (a hostPath / mount with Bidirectional propagation, or /proc/1/root): the reconciler's DEL runs chrooted there, in the host's mount view; empty: this process's own view")
	fs.StringVar(&f.podResources, "pod-resources-socket", agent.DefaultPodResourcesSocket, "the kubelet's pod-resources API, for the reconciler; empty: netns paths only")
	fs.StringVar(&f.cniNodeConfig, "cni-node-config", "", "write the CNI's node settings (sysfs root, state dir) to this file (the host's /etc/railnet/cni.json)")
	fs.StringVar(&f.hostCNIBinary, "host-cni-binary", "/opt/cni/bin/railnet", "with --host-root: the CNI binary the reconciler runs, as the host sees it")
	fs.BoolVar(&f.installOnly, "install-only", false, "install the CNI binary (--install-cni-dir) and its node settings (--cni-node-config), then exit: an init container")
	fs.StringVar(&f.keysSecretDir, "keys-secret-dir", "", "the encryption keys Secret's volume (entries <pod namespace>.<keys name>), mirrored onto --keys-dir; empty: keys are put on the host otherwise")
	fs.StringVar(&f.keysDir, "keys-dir", keys.DefaultDir, "the host's keys directory as this process sees it (with the host's / at /host: /host"+keys.DefaultDir+")")
	fs.StringVar(&f.cniKeysDir, "cni-keys-dir", keys.DefaultDir, "the keys directory as the host sees it, for the CNI's node settings")
	fs.StringVar(&f.auditFile, "audit-file", audit.DefaultFile, "the audit log as the host sees it (CNI node settings, key rotation)")
	fs.DurationVar(&f.keysInterval, "keys-interval", time.Minute, "rotate encrypted attachments' keys at least this often (also on key changes and at each sendAfter); 0 disables")
	fs.Int64Var(&f.memoryLimit, "memory-limit", 24<<20, "the Go runtime's soft memory limit in bytes (the garbage collector works harder near it; not a cap): a start-up scan of thousands of VFs leaves much garbage, and the node's memory is the workloads'; 0: none. $GOMEMLIMIT wins")
	fs.StringVar(&f.dra, "dra", "auto", "the DRA driver railnet.io for pools with api: dra: auto (started when the config has such a pool; if it cannot start, the device plugin's pools still serve), on (it must start) or off; it needs API access (in-cluster, or --kubeconfig)")
	fs.StringVar(&f.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (the DRA driver's ResourceSlices); default $NODE_NAME")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig for the DRA driver; empty: in-cluster (the pod's ServiceAccount)")
	fs.StringVar(&f.draRegistrarDir, "dra-registrar-dir", dra.DefaultRegistrarDir, "the kubelet's plugin registration directory")
	fs.StringVar(&f.draPluginDir, "dra-plugin-dir", filepath.Join(dra.DefaultPluginsDir, dra.DriverName), "the DRA driver's socket directory")
	fs.DurationVar(&f.draNetworkData, "dra-networkdata-interval", 2*time.Second, "how often attached DRA devices' networkData is written to their claims")
	fs.BoolVar(&f.version, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	f.configSet = false
	fs.Visit(func(fl *flag.Flag) { f.configSet = f.configSet || fl.Name == "config" })
	switch f.dra {
	case "auto", "on", "off":
	default:
		return nil, fmt.Errorf("--dra %q: auto, on or off", f.dra)
	}
	if f.rescan < 100*time.Millisecond {
		return nil, fmt.Errorf("--rescan-interval %v: at least 100ms", f.rescan)
	}
	return f, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, reload <-chan struct{}) int {
	f, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "railnet-deviceplugin: %v\n", err)
		return 2
	}
	if f.version {
		fmt.Fprintln(stdout, "railnet-deviceplugin", version)
		return 0
	}
	if f.memoryLimit > 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(f.memoryLimit)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		fmt.Fprintf(stderr, "railnet-deviceplugin: --log-level: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	if err := serve(ctx, f, log, reload); err != nil {
		log.Error("exiting", "err", err)
		return 1
	}
	return 0
}

// install puts the CNI binary and its node settings on the host.
func install(f *flags, log *slog.Logger) error {
	if f.installCNIDir != "" {
		if err := agent.InstallCNI(f.cniBinary, f.installCNIDir); err != nil {
			return err
		}
		log.Info("installed CNI binary", "dir", f.installCNIDir)
	}
	if f.cniNodeConfig != "" {
		if err := agent.WriteCNINodeConfig(f.cniNodeConfig, cniconfig.Node{
			HostPaths:  cniconfig.HostPaths{SysfsRoot: f.sys, DevfsRoot: f.dev, StateDir: f.cniStateDir, KeysDir: f.cniKeysDir, AuditFile: f.auditFile},
			DevInfoDir: f.devinfoDir}); err != nil {
			return err
		}
		log.Info("wrote the CNI's node settings", "file", f.cniNodeConfig)
	}
	return nil
}

func serve(ctx context.Context, f *flags, log *slog.Logger, reload <-chan struct{}) error {
	log.Info("starting", "version", version, "sysfsRoot", f.sys, "devfsRoot", f.dev, "kubeletDir", f.kubeletDir, "config", f.config)
	if f.installOnly {
		return install(f, log)
	}
	sys, err := sysfs.New(f.sys)
	if err != nil {
		return fmt.Errorf("--sysfs-root: %w", err)
	}
	defer sys.Close()
	dev, err := sysfs.New(f.dev)
	if err != nil {
		return fmt.Errorf("--devfs-root: %w", err)
	}
	defer dev.Close()
	configPath := f.config
	if _, err := os.Stat(configPath); err != nil && !f.configSet {
		log.Info("no config file: one pool per GPU rail", "default", agent.DefaultConfig)
		configPath = ""
	}
	metrics := deviceplugin.NewMetrics()
	mgr := deviceplugin.NewManager(deviceplugin.Options{KubeletDir: f.kubeletDir, DevInfoDir: f.devinfoDir,
		CDI: f.cdi, CDIDir: f.cdiDir, DevfsRoot: f.dev, Logger: log, Metrics: metrics})
	a, err := agent.New(agent.Options{ConfigPath: configPath, Sys: sys, Dev: dev, Manager: mgr, Metrics: metrics,
		Logger: log, RescanInterval: f.rescan})
	if err != nil {
		return err
	}
	if err := install(f, log); err != nil {
		return err
	}
	if draWanted(f.dra, a.Config()) {
		drv, err := startDRA(ctx, f, log)
		switch {
		case err != nil && f.dra == "on":
			return err
		case err != nil:
			// auto: the device plugin's pools still serve; the dra pools
			// wait for a restart with API access.
			log.Error("the DRA driver did not start: pools with api: dra are not served", "err", err)
		default:
			defer drv.Stop()
			a.SetDRA(drv)
			nd := &dra.NetworkData{Driver: drv, StateDir: f.cniStateDir}
			go nd.Run(ctx, f.draNetworkData)
		}
	}
	if f.metricsAddr != "" {
		lis, err := net.Listen("tcp", f.metricsAddr)
		if err != nil {
			return fmt.Errorf("--metrics-addr: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(lis)
		defer srv.Close()
		log.Info("metrics", "addr", lis.Addr().String())
	}
	if f.netlinkEvents {
		go agent.WatchLinks(ctx, agent.NetlinkSubscribe(log), a.Trigger, agent.NewResubscribeCounter(metrics.Registry), log)
	}
	reconciled := make(chan struct{})
	if f.reconcile > 0 {
		// Multus sends GC only to the cluster network: orphaned railnet
		// attachments on secondary networks are ours to release.
		bin := f.cniBinary
		if f.hostRoot != "" {
			bin = f.hostCNIBinary
		}
		r := &agent.Reconciler{StateDir: f.cniStateDir, CNIBinary: bin, CNIPath: f.cniPath, HostRoot: f.hostRoot,
			ResourceOf: mgr.ResourceOf, Logger: log, Metrics: agent.NewReconcileMetrics(metrics.Registry)}
		if f.podResources != "" {
			pods := &agent.KubeletPods{Socket: f.podResources}
			defer pods.Close()
			r.Pods = pods
		}
		go func() {
			defer close(reconciled)
			r.Run(ctx, f.reconcile)
		}()
	} else {
		close(reconciled)
	}
	if f.keysInterval > 0 {
		// Encrypted attachments: the keys Secret onto the host, and each
		// attachment's SAs kept what its key file says.
		kk := &agent.KeyKeeper{SecretDir: f.keysSecretDir, KeysDir: f.keysDir, Interval: f.keysInterval, Log: log,
			Rotator: &agent.KeyRotator{StateDir: f.cniStateDir, HostRoot: f.hostRoot, AuditFile: f.auditFile, Log: log, Lock: time.Second}}
		go kk.Run(ctx)
	}
	// The manager outlives the agent: it stops (sockets and files removed)
	// only once no rescan can update it any more, and after the
	// reconciler's DEL in progress has finished.
	mgrDone := make(chan error, 1)
	mctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { mgrDone <- mgr.Run(mctx) }()
	err = a.Run(ctx, reload)
	<-reconciled
	cancel()
	if merr := <-mgrDone; err == nil {
		err = merr
	}
	log.Info("stopped: sockets and device-info files removed")
	return err
}

// draWanted: --dra on, or auto with a pool whose api is dra.
func draWanted(mode string, cfg *pools.Config) bool {
	switch mode {
	case "on":
		return true
	case "off":
		return false
	}
	for _, p := range cfg.Pools {
		if p.API == pools.APIDRA {
			return true
		}
	}
	return false
}

// startDRA registers the DRA driver with the kubelet; its slices follow
// the agent's scans.
func startDRA(ctx context.Context, f *flags, log *slog.Logger) (*dra.Driver, error) {
	var cfg *rest.Config
	var err error
	if f.kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", f.kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("DRA driver: Kubernetes API: %w", err)
	}
	cfg.UserAgent = "railnet-deviceplugin/" + version
	client, err := kubeapi.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("DRA driver: %w", err)
	}
	// client-go's transport logs through klog: into ours.
	klog.SetSlogLogger(log)
	drv := dra.New(dra.Options{NodeName: f.nodeName, Client: client, ClaimsDir: claims.Dir(f.cniStateDir), CDIDir: f.cdiDir,
		DevfsRoot: f.dev, RegistrarDir: f.draRegistrarDir, PluginDir: f.draPluginDir, Logger: log})
	if err := drv.Start(ctx); err != nil {
		return nil, err
	}
	return drv, nil
}
