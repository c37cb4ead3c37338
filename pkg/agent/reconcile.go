package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/railnet/railnet/pkg/state"
)

// Reconciler returns devices whose pod is gone. Multus sends GC only to the
// cluster network, so for railnet's secondary networks nobody else would:
// it runs the CNI's own DEL (the code that knows how to undo an
// attachment) for every record no running pod stands behind.
//
// Who is alive comes from the kubelet's pod-resources API when it answers:
// a record is released when no running pod holds its device (a netns path
// can outlive its pod: a sandbox removed without a CNI DEL leaves the bind
// mount and the VF inside it), and never while one does (a live pod can lose
// its path). When the API does not answer, or the device is not one a pool
// advertises, a netns path that is gone (ENOENT, nothing else) is the
// fallback.
type Reconciler struct {
	StateDir  string // the CNI's records (default /var/lib/cni/railnet), as this process sees them
	CNIBinary string // the railnet CNI binary, as the DEL sees it (inside HostRoot when set)
	CNIPath   string // where IPAM plugins are, as the DEL sees them; "" = the record's
	// HostRoot is the host's root directory as this process sees it (in
	// the DaemonSet: a hostPath "/" mount with Bidirectional propagation;
	// /proc/1/root works too where pid 1 may be inspected). When set, netns
	// paths are looked up below it, and DEL runs chrooted there: in the
	// host's mount view, where the runtime's netns bind mounts, the pinned
	// staging netns, host-local's /var/lib/cni/networks and /opt/cni/bin
	// are, and, with hostPID, with the host's processes in /proc.
	HostRoot string
	// Pods lists the devices running pods hold; nil: netns paths only.
	Pods PodDevices
	// ResourceOf names the resource advertising a device ID (device plugin
	// pools); nil or false: the device is not the kubelet's to know.
	ResourceOf func(id string) (string, bool)
	Logger     *slog.Logger
	Metrics    *ReconcileMetrics

	// suspects are the records the last pass found held by no running pod.
	// The kubelet's answer alone releases a record only when two passes in
	// a row agree: right after a kubelet restart its pod list can be empty
	// for a moment, and that must not pull live pods' devices.
	suspects map[string]bool
}

// PodDevices lists what running pods hold: device ID → the pods holding it.
type PodDevices interface {
	Held(ctx context.Context) (map[string][]PodRef, error)
}

// PodRef is a pod by namespace and name (what pod-resources reports).
type PodRef struct{ Namespace, Name string }

// ReconcileMetrics count the reconciler's work.
type ReconcileMetrics struct {
	released *prometheus.CounterVec
	failed   prometheus.Counter
	podAPI   prometheus.Gauge
}

// NewReconcileMetrics registers the reconciler's series on reg.
func NewReconcileMetrics(reg prometheus.Registerer) *ReconcileMetrics {
	m := &ReconcileMetrics{
		released: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "railnet_reconciler_released_total", Help: "Attachments the reconciler released, by why.",
		}, []string{"reason"}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "railnet_reconciler_release_errors_total", Help: "Releases whose DEL failed (retried next pass).",
		}),
		podAPI: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "railnet_reconciler_pod_resources_up", Help: "1 when the last pass could list the kubelet's pod resources.",
		}),
	}
	reg.MustRegister(m.released, m.failed, m.podAPI)
	return m
}

// Why a record is released.
const (
	ReasonNoPod      = "no-running-pod" // pod-resources: nobody running holds the device
	ReasonOtherPod   = "other-pod"      // pod-resources: another pod holds the device now
	ReasonNetnsGone  = "netns-gone"     // the netns path no longer exists (fallback)
	reasonKeepHeld   = "held"
	reasonKeepAlive  = "netns-present"
	reasonKeepUnsure = "netns-unknown"
)

// Once checks every record and releases the orphaned ones. It keeps going
// past failures. Once is not safe for concurrent use (Run calls it in turn).
func (r *Reconciler) Once(ctx context.Context) (released int, err error) {
	log := r.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if _, err := os.Stat(r.StateDir); errors.Is(err, os.ErrNotExist) {
		return 0, nil // no attachment was ever made on this node
	}
	store, err := state.Open(r.StateDir)
	if err != nil {
		return 0, err
	}
	recs, errs := store.List()
	if len(recs) == 0 {
		return 0, errors.Join(errs...)
	}
	var held map[string][]PodRef
	podsKnown := false
	if r.Pods != nil {
		h, err := r.Pods.Held(ctx)
		if err != nil {
			log.Warn("kubelet pod-resources unavailable; releasing only attachments whose netns is gone", "err", err)
		} else {
			held, podsKnown = h, true
		}
	}
	if r.Metrics != nil {
		r.Metrics.podAPI.Set(map[bool]float64{true: 1}[podsKnown])
	}
	suspects := map[string]bool{}
	defer func() { r.suspects = suspects }()
	for _, rec := range recs {
		reason, detail := r.verdict(rec, held, podsKnown)
		switch reason {
		case reasonKeepHeld, reasonKeepAlive:
			continue
		case reasonKeepUnsure:
			log.Warn("reconciler keeps an attachment whose netns it cannot check", "containerID", rec.ContainerID,
				"ifname", rec.IfName, "netns", rec.Netns, "device", rec.DeviceID, "err", detail)
			continue
		case ReasonNoPod, ReasonOtherPod:
			key := rec.ContainerID + "\x00" + rec.IfName + "\x00" + rec.Created.String()
			if !r.suspects[key] {
				suspects[key] = true // released next pass if it still holds
				log.Info("reconciler suspects an orphaned attachment", "containerID", rec.ContainerID, "ifname", rec.IfName,
					"device", rec.DeviceID, "reason", reason, "detail", detail)
				continue
			}
		}
		if err := r.del(ctx, rec); err != nil {
			errs = append(errs, fmt.Errorf("%s/%s: %w", rec.ContainerID, rec.IfName, err))
			log.Error("reconciler could not release an orphaned attachment", "containerID", rec.ContainerID,
				"ifname", rec.IfName, "device", rec.DeviceID, "reason", reason, "err", err)
			if r.Metrics != nil {
				r.Metrics.failed.Inc()
			}
			continue
		}
		released++
		if r.Metrics != nil {
			r.Metrics.released.WithLabelValues(reason).Inc()
		}
		log.Info("reconciler released an orphaned attachment", "containerID", rec.ContainerID, "ifname", rec.IfName,
			"netns", rec.Netns, "device", rec.DeviceID, "pod", rec.PodNamespace+"/"+rec.PodName, "reason", reason, "detail", detail)
	}
	return released, errors.Join(errs...)
}

// verdict decides one record: a release reason, or a keep reason.
func (r *Reconciler) verdict(rec *state.Record, held map[string][]PodRef, podsKnown bool) (reason, detail string) {
	if podsKnown {
		ids := []string{rec.DeviceID}
		if rec.BDF != "" && rec.BDF != rec.DeviceID {
			ids = append(ids, rec.BDF)
		}
		var holders []PodRef
		pooled := false
		if c := rec.Claim; c != nil {
			// A DRA claim's device: the kubelet lists it under the claim.
			if id := DRAHeldID(c.Driver, c.Pool, c.Device); id != "" {
				holders, pooled = append(holders, held[id]...), true
			}
		}
		for _, id := range ids {
			holders = append(holders, held[id]...)
			if r.ResourceOf != nil {
				if _, ok := r.ResourceOf(id); ok {
					pooled = true
				}
			}
		}
		for _, p := range holders {
			if rec.PodName == "" || (p.Namespace == rec.PodNamespace && p.Name == rec.PodName) {
				return reasonKeepHeld, ""
			}
		}
		if len(holders) > 0 {
			return ReasonOtherPod, fmt.Sprintf("held by %s/%s, not %s/%s", holders[0].Namespace, holders[0].Name, rec.PodNamespace, rec.PodName)
		}
		if pooled {
			return ReasonNoPod, "no running pod holds " + rec.DeviceID
		}
		// Not a pool's device (a NAD naming its own deviceID): the kubelet
		// cannot know; the netns decides.
	}
	if rec.Netns == "" {
		return reasonKeepAlive, ""
	}
	switch err := r.netnsExists(rec.Netns); {
	case err == nil:
		return reasonKeepAlive, ""
	case errors.Is(err, unix.ENOENT):
		return ReasonNetnsGone, rec.Netns + " is gone"
	default:
		// EMFILE, EACCES, a path this process cannot see: not proof of
		// death. Pulling a live pod's VF would be worse than waiting.
		return reasonKeepUnsure, err.Error()
	}
}

// netnsExists: nil when the path names something in the host's view,
// an error wrapping ENOENT when it does not.
// With a host root, the path resolves inside it, as it would chrooted
// there: the host's /var/run is a symlink to /run, which joined onto the
// host root naively would name this container's /run, where no pod's
// netns is, and every live netns would look gone.
func (r *Reconciler) netnsExists(path string) error {
	if r.HostRoot == "" {
		var st unix.Stat_t
		return unix.Stat(path, &st)
	}
	root, err := unix.Open(r.HostRoot, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("host root %s: %w", r.HostRoot, err)
	}
	defer unix.Close(root)
	fd, err := unix.Openat2(root, strings.TrimLeft(path, "/"), &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT})
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

// del runs the CNI's DEL for rec. It is not cancelled with the
// reconciler: a DEL killed halfway leaves a device half restored; it has
// its own deadline instead.
func (r *Reconciler) del(_ context.Context, rec *state.Record) error {
	ctx, cancel := context.WithTimeout(context.Background(), DelTimeout)
	defer cancel()
	cniPath := rec.CNIPath
	if r.CNIPath != "" {
		cniPath = r.CNIPath
	}
	cmd := exec.CommandContext(ctx, r.CNIBinary)
	cmd.Env = append(os.Environ(), "CNI_COMMAND=DEL", "CNI_CONTAINERID="+rec.ContainerID, "CNI_NETNS="+rec.Netns,
		"CNI_IFNAME="+rec.IfName, "CNI_PATH="+cniPath)
	if rec.PodName != "" {
		cmd.Env = append(cmd.Env, "CNI_ARGS=K8S_POD_NAMESPACE="+rec.PodNamespace+";K8S_POD_NAME="+rec.PodName)
	}
	if r.HostRoot != "" {
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: r.HostRoot}
		cmd.Dir = "/"
	}
	cmd.Stdin = bytes.NewReader(rec.Config)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s DEL: %w: %s", r.CNIBinary, err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

// DelTimeout bounds one DEL the reconciler runs.
const DelTimeout = 20 * time.Second

// Run reconciles every interval until ctx ends; a pass in progress (and
// its DEL) finishes first.
func (r *Reconciler) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		r.Once(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
