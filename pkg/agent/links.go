package agent

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
)

// Subscribe opens a link event subscription that delivers on ch until done
// closes or a receive error ends it (the channel is then closed).
type Subscribe func(ch chan<- netlink.LinkUpdate, done <-chan struct{}) error

// NetlinkSubscribe subscribes to the host's link events with a 4 MiB
// receive buffer: creating a hundred VFs sends a burst that overflows the
// default one (ENOBUFS), which ends a subscription.
func NetlinkSubscribe(log *slog.Logger) Subscribe {
	return func(ch chan<- netlink.LinkUpdate, done <-chan struct{}) error {
		return netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{
			ReceiveBufferSize: 4 << 20,
			ErrorCallback: func(err error) {
				select {
				case <-done:
					// Closing the subscription interrupts its receive (EAGAIN
					// at shutdown): not worth a warning.
				default:
					log.Warn("netlink link events", "err", err)
				}
			},
		})
	}
}

// WatchLinks triggers a rescan on every link event (a PF going down, VFs
// appearing after sriov_numvfs is raised) until ctx ends. A subscription
// that ends (ENOBUFS in a VF creation burst) or cannot be opened is opened
// again with backoff, and a rescan covers what was missed meanwhile;
// resubscriptions are counted.
func WatchLinks(ctx context.Context, subscribe Subscribe, trigger func(), resubscribed prometheus.Counter, log *slog.Logger) {
	backoff := 100 * time.Millisecond
	for first := true; ; first = false {
		ch := make(chan netlink.LinkUpdate, 256)
		done := make(chan struct{})
		if err := subscribe(ch, done); err != nil {
			close(done)
			log.Warn("netlink link events unavailable; retrying (periodic rescans meanwhile)", "err", err, "in", backoff)
		} else {
			if !first {
				resubscribed.Inc()
				log.Info("netlink link events resubscribed")
				trigger() // what happened while nobody listened
			}
			open := true
			for open {
				select {
				case <-ctx.Done():
					close(done)
					return
				case _, ok := <-ch:
					if ok {
						trigger()
						backoff = 100 * time.Millisecond
					}
					open = ok
				}
			}
			close(done)
			log.Warn("netlink link event subscription ended; resubscribing", "in", backoff)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// NewResubscribeCounter registers railnet_netlink_resubscriptions_total.
func NewResubscribeCounter(reg prometheus.Registerer) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "railnet_netlink_resubscriptions_total",
		Help: "Link event subscriptions opened again after one ended (ENOBUFS, receive errors).",
	})
	reg.MustRegister(c)
	return c
}
