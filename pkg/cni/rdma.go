package cni

import (
	"fmt"
	"log/slog"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/railnet/railnet/pkg/cni/config"
	"github.com/railnet/railnet/pkg/netdev"
	"github.com/railnet/railnet/pkg/state"
)

// moveRDMA gives the pod the function's RDMA device when the kernel's RDMA
// subsystem is in exclusive netns mode; in shared mode every namespace
// sees every RDMA device and nothing moves. rdma: off skips it.
func (p *Plugin) moveRDMA(log *slog.Logger, conf *config.NetConf, dev *Device, host, pod *netdev.Namespace, rec *state.Record, store *state.Store) error {
	if conf.RDMA == "off" || dev.RDMA == "" {
		return nil
	}
	mode, err := host.Handle.RdmaSystemGetNetnsMode()
	if err != nil {
		// No RDMA netlink (no ib_core): nothing to move, and RDMA cannot
		// work in the pod either. Say so once, do not fail the netdev.
		log.Warn("RDMA netns mode unknown; RDMA device not moved", "rdma", dev.RDMA, "err", err)
		return nil
	}
	if mode != "exclusive" {
		log.Debug("RDMA netns mode is shared: RDMA device stays", "rdma", dev.RDMA)
		return nil
	}
	link, err := host.Handle.RdmaLinkByName(dev.RDMA)
	if err != nil {
		return types.NewError(types.ErrInternal, fmt.Sprintf("RDMA device %s of %s is not in the host netns (exclusive mode)", dev.RDMA, dev.BDF), err.Error())
	}
	rec.RDMA, rec.RDMAMoved = dev.RDMA, true
	if err := store.Save(rec); err != nil {
		return types.NewError(types.ErrIOFailure, "write the attachment record", err.Error())
	}
	if err := host.Handle.RdmaLinkSetNsFd(link, uint32(pod.NS)); err != nil {
		rec.RDMAMoved = false
		return types.NewError(types.ErrInternal,
			fmt.Sprintf("RDMA device %s cannot move into the pod netns (exclusive mode); set \"rdma\": \"off\" to attach the netdev without RDMA", dev.RDMA), err.Error())
	}
	return nil
}

// rdmaBack returns a moved RDMA device to the host.
func rdmaBack(name string, pod, host *netdev.Namespace) error {
	h, err := pod.RDMA()
	if err != nil {
		return fmt.Errorf("RDMA netlink in the pod netns: %w", err)
	}
	link, err := h.RdmaLinkByName(name)
	if err != nil {
		return nil // already home (the kernel returns it when the netns dies)
	}
	if err := h.RdmaLinkSetNsFd(link, uint32(host.NS)); err != nil {
		return fmt.Errorf("return RDMA device %s to the host: %w", name, err)
	}
	return nil
}
