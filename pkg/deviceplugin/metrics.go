package deviceplugin

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// Metrics are the daemon's Prometheus series, on their own registry.
type Metrics struct {
	Registry     *prometheus.Registry
	devices      *prometheus.GaugeVec
	allocations  *prometheus.CounterVec
	allocDevices *prometheus.CounterVec
	registered   *prometheus.GaugeVec
	scan         prometheus.Histogram
	scanWarnings prometheus.Gauge
}

// NewMetrics registers the series.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		devices: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "railnet_pool_devices", Help: "Devices advertised per pool and health.",
		}, []string{"pool", "resource", "health"}),
		allocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "railnet_allocations_total", Help: "Allocate calls per pool.",
		}, []string{"pool"}),
		allocDevices: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "railnet_allocated_devices_total", Help: "Devices handed out by Allocate per pool.",
		}, []string{"pool"}),
		registered: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "railnet_pool_registered", Help: "1 while the pool is registered with the kubelet.",
		}, []string{"pool"}),
		scan: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "railnet_scan_duration_seconds", Help: "Duration of a full sysfs discovery and pool resolution.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		scanWarnings: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "railnet_scan_warnings", Help: "Warnings of the last scan (unreadable or missing sysfs files).",
		}),
	}
	m.Registry.MustRegister(m.devices, m.allocations, m.allocDevices, m.registered, m.scan, m.scanWarnings,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

func (m *Metrics) setDevices(p Pool) {
	var healthy, unhealthy int
	for _, d := range p.Devices {
		if d.Healthy {
			healthy++
		} else {
			unhealthy++
		}
	}
	m.devices.WithLabelValues(p.Name, p.Resource, pluginapi.Healthy).Set(float64(healthy))
	m.devices.WithLabelValues(p.Name, p.Resource, pluginapi.Unhealthy).Set(float64(unhealthy))
}

func (m *Metrics) dropPool(pool string) {
	m.devices.DeletePartialMatch(prometheus.Labels{"pool": pool})
	m.registered.DeleteLabelValues(pool)
}

func (m *Metrics) setRegistered(pool string, ok bool) {
	v := 0.0
	if ok {
		v = 1
	}
	m.registered.WithLabelValues(pool).Set(v)
}

func (m *Metrics) allocated(pool string, req *pluginapi.AllocateRequest) {
	m.allocations.WithLabelValues(pool).Inc()
	n := 0
	for _, c := range req.ContainerRequests {
		n += len(c.DevicesIds)
	}
	m.allocDevices.WithLabelValues(pool).Add(float64(n))
}

// ObserveScan records one scan.
func (m *Metrics) ObserveScan(d time.Duration, warnings int) {
	m.scan.Observe(d.Seconds())
	m.scanWarnings.Set(float64(warnings))
}
