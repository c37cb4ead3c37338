#!/usr/bin/env bash
# The kernel test tier: boots Debian's stock kernel under QEMU (software
# emulation, no KVM) with an initramfs holding railnet's kernel-tier Go
# tests, and exits with their status. Each test's PASS/FAIL line is shown.
#
#   e2e/kernel/run.sh            build (cached) and boot once per RDMA netns mode
#
# While working on one thing (CI sets none of these):
#   RAILNET_KERNEL_MODES=shared  boot only these modes
#   RAILNET_KERNEL_RUN=REGEX     the tests to run (-test.run; '^$' for none)
#   RAILNET_KERNEL_BENCH=REGEX   the benchmarks of the shared-mode boot
#
# Cache: $RAILNET_KERNEL_CACHE (default .cache/kernel in the repository).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
cache=${RAILNET_KERNEL_CACHE:-$repo/.cache/kernel}
mkdir -p "$cache"
export DEBIAN_FRONTEND=noninteractive

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx insmod || need+=(busybox-static)
command -v kmod >/dev/null || need+=(kmod)
command -v cpio >/dev/null || need+=(cpio)
command -v rdma >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The current kernel ABI, resolved every run: the archive keeps only one.
[ -n "$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2}')" ] || apt-get update -qq
pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
[ -n "$pkg" ] || { echo "kernel tier: cannot resolve linux-image-amd64" >&2; exit 1; }
kdir=$cache/$pkg
if [ ! -f "$kdir/.done" ]; then
  rm -rf "$kdir" && mkdir -p "$kdir"
  (cd "$kdir" && apt-get download "$pkg" >/dev/null 2>&1 && dpkg-deb -x ./*.deb root && rm -f ./*.deb)
  touch "$kdir/.done"
fi
kver=$(ls "$kdir/root/lib/modules")
depmod -b "$kdir/root" "$kver"

# Debian's kernel has no netdevsim: build it out of tree from the matching
# source and headers, once per kernel version.
nsim=$cache/netdevsim-$kver.ko
if [ ! -f "$nsim" ]; then
  series=$(echo "$kver" | cut -d. -f1-2)
  pkgs=()
  [ -d "/usr/src/linux-headers-$kver" ] || pkgs+=("linux-headers-$kver")
  [ -f "/usr/src/linux-source-$series.tar.xz" ] || pkgs+=("linux-source-$series")
  command -v make >/dev/null || pkgs+=(make)
  command -v gcc >/dev/null || pkgs+=(gcc)
  if [ ${#pkgs[@]} -gt 0 ]; then apt-get install -y -qq "${pkgs[@]}" >/dev/null; fi
  src=$(mktemp -d "${TMPDIR:-/tmp}/netdevsim.XXXXXX")
  tar -xJf "/usr/src/linux-source-$series.tar.xz" -C "$src" --wildcards "linux-source-$series/drivers/net/netdevsim/*"
  make -s -C "/usr/src/linux-headers-$kver" M="$src/linux-source-$series/drivers/net/netdevsim" CONFIG_NETDEVSIM=m modules >/dev/null 2>&1 ||
    make -C "/usr/src/linux-headers-$kver" M="$src/linux-source-$series/drivers/net/netdevsim" CONFIG_NETDEVSIM=m modules
  cp "$src/linux-source-$series/drivers/net/netdevsim/netdevsim.ko" "$nsim"
  rm -rf "$src"
fi

# Static CNI binaries for the guest: railnet and the reference host-local.
cnibin=$cache/cni-bin
if [ ! -x "$cnibin/host-local" ]; then
  mkdir -p "$cnibin"
  (cd /tmp && CGO_ENABLED=0 GOBIN="$cnibin" GOFLAGS=-mod=mod go install github.com/containernetworking/plugins/plugins/ipam/host-local@v1.10.0)
fi

# The initramfs: busybox, kmod as modprobe, ip/rdma/devlink with their
# libraries, the module closure, and the static test binary.
work=$(mktemp -d "${TMPDIR:-/tmp}/railnet-kernel.XXXXXX")
trap 'rm -rf "$work"' EXIT
ir=$work/initramfs
mkdir -p "$ir"/{bin,sbin,proc,sys,dev,tmp,run,etc,lib/modules,var/run/netns,usr/bin}
cp /bin/busybox "$ir/bin/busybox"
for app in sh mount mkdir cat echo poweroff sleep ls ln grep; do ln -sf busybox "$ir/bin/$app"; done
copy_bin() { # binary and its shared libraries, at their own paths
  local b=$1 dst=$2
  install -D "$b" "$ir$dst"
  ldd "$b" 2>/dev/null | awk '/=> \//{print $3} /^[ \t]*\/lib/{print $1}' | while read -r lib; do
    install -D "$lib" "$ir$lib"
  done
}
copy_bin "$(command -v kmod)" /sbin/kmod
ln -sf kmod "$ir/sbin/modprobe"
ln -sf kmod "$ir/sbin/insmod"
copy_bin "$(command -v ip)" /sbin/ip
copy_bin "$(command -v rdma)" /sbin/rdma
copy_bin "$(command -v devlink)" /sbin/devlink
modules=(veth dummy macvlan ipvlan nlmon macsec esp4 esp4_offload xfrm_user ib_core ib_uverbs rdma_ucm rdma_rxe nfnetlink psample)
mroot=$kdir/root/lib/modules/$kver
for m in "${modules[@]}"; do
  modprobe -d "$kdir/root" -S "$kver" --show-depends "$m" | awk '/^insmod/{print $2}'
done | sort -u | while read -r ko; do
  rel=${ko#"$kdir/root"}
  install -D "$ko" "$ir$rel"
done
mkdir -p "$ir/lib/modules/$kver/kernel"
cp -r "$mroot/kernel/crypto" "$mroot/kernel/arch" "$ir/lib/modules/$kver/kernel/" 2>/dev/null || true
cp "$mroot"/modules.* "$ir/lib/modules/$kver/"

install -D "$nsim" "$ir/lib/modules/$kver/extra/netdevsim.ko"
mkdir -p "$ir/opt/cni/bin"
cp "$cnibin/host-local" "$ir/opt/cni/bin/"
CGO_ENABLED=0 go build -o "$ir/opt/cni/bin/railnet" ./cmd/railnet

# railnet's kernel-tier tests, static.
CGO_ENABLED=0 go test -c -tags kerneltest -o "$ir/railnet-kernel.test" ./e2e/kernel/
traffic="CNI_PATH=/opt/cni/bin /railnet-kernel.test -test.run '^\$' -test.bench PodTraffic -test.benchtime 1s -test.timeout 120s || rc=1"
[ -z "${RAILNET_KERNEL_BENCH:-}" ] || traffic=""
cat > "$ir/init" <<EOF
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /var/run
mkdir -p /var/run/netns
for m in ${modules[*]}; do /sbin/modprobe \$m || echo "modprobe \$m failed"; done
/sbin/insmod /lib/modules/$kver/extra/netdevsim.ko || echo "modprobe netdevsim failed"
/sbin/ip link set lo up
echo "RAILNET-KERNEL-BOOT rdma-netns-mode=\$(/sbin/rdma system show 2>&1 | tr '\n' ' ')"
cd /tmp
CNI_PATH=/opt/cni/bin RAILNET_KERNEL_MODE=\$(cat /proc/cmdline | grep -o 'railnet.mode=[a-z]*' | cut -d= -f2) /railnet-kernel.test -test.v -test.timeout 120s -test.run '${RAILNET_KERNEL_RUN:-.}'
rc=\$?
# Benchmarks that need this kernel (ESP): once, in the shared-mode boot.
if grep -q railnet.mode=shared /proc/cmdline; then
  CNI_PATH=/opt/cni/bin /railnet-kernel.test -test.run '^\$' -test.bench '${RAILNET_KERNEL_BENCH:-EncryptedAdd|IPsecSync}' -test.benchtime 5x -test.timeout 120s || rc=1
  $traffic
fi
echo "RAILNET-KERNEL-RESULT rc=\$rc"
poweroff -f
EOF
chmod +x "$ir/init"
(cd "$ir" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initramfs.gz"

status=0
for mode in ${RAILNET_KERNEL_MODES:-shared exclusive}; do
  append="console=ttyS0 panic=-1 quiet railnet.mode=$mode"
  [ "$mode" = exclusive ] && append="$append ib_core.netns_mode=0"
  echo "== kernel tier: $kver, RDMA netns mode $mode"
  log=$work/console-$mode.log
  timeout 300 qemu-system-x86_64 -machine pc -accel tcg -cpu max -smp 1 -m 512 -nographic -no-reboot -nic none \
    -kernel "$kdir/root/boot/vmlinuz-$kver" -initrd "$work/initramfs.gz" -append "$append" </dev/null >"$log" 2>&1 || true
  tr -d '\r' <"$log" | grep -E '^(=== RUN|--- (PASS|FAIL|SKIP)|PASS|FAIL|ok|Benchmark|RAILNET-KERNEL|modprobe .* failed|panic:)|^[[:space:]]+[^[:space:]]+\.go:[0-9]+:' || true
  rc=$(tr -d '\r' <"$log" | sed -n 's/^RAILNET-KERNEL-RESULT rc=\([0-9]*\).*/\1/p' | tail -1)
  if [ -z "$rc" ]; then
    echo "kernel tier: the guest never reported a result ($mode); console tail:" >&2
    tail -40 "$log" >&2
    status=1
  elif [ "$rc" != 0 ]; then
    echo "kernel tier: tests failed ($mode); console tail:" >&2
    tr -d '\r' <"$log" | grep -v '^\[' | tail -30 >&2
    status=1
  fi
done
exit $status
