// Package kernel holds railnet's kernel-tier tests (build tag kerneltest):
// they run inside a stock Debian kernel booted under QEMU by run.sh, where
// netdevsim, MACsec, ESP and RDMA (rxe) exist, against railnet's real
// packages.
package kernel
