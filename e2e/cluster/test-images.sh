#!/usr/bin/env bash
# test-images.sh OUTDIR: the images the e2e cluster needs and no registry
# serves here, as OCI archives: OUTDIR/pause.tar (the sandbox image, a static
# Go program) and OUTDIR/testpod.tar (busybox, static: a shell, ip, ping).
# Built with buildah as root, daemonless (vfs storage, chroot isolation).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$1
export PATH="/usr/local/go/bin:$PATH"
store=$(mktemp -d /tmp/railnet-e2e-buildah.XXXXXX); ctx=$(mktemp -d /tmp/railnet-e2e-ctx.XXXXXX)
b="buildah --root $store/root --runroot $store/run --storage-driver vfs"
trap '$b rm -a >/dev/null 2>&1; rm -rf "$store" "$ctx"' EXIT
CGO_ENABLED=0 go build -C "$here/../.." -trimpath -ldflags '-s -w' -o "$ctx/pause" ./e2e/cluster/pause
printf 'FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n' >"$ctx/Dockerfile.pause"
mkdir -p "$ctx/rootfs/bin"
cp /bin/busybox "$ctx/rootfs/bin/busybox"
for a in sh ls cat env ip ping sleep grep ps stat test wc head; do ln -s busybox "$ctx/rootfs/bin/$a"; done
printf 'FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\nCMD ["/bin/sleep","86400"]\n' >"$ctx/Dockerfile.testpod"
mkdir -p "$out"
for i in pause testpod; do
	$b build --isolation chroot --quiet -f "$ctx/Dockerfile.$i" -t "localhost/railnet-e2e/$i:1" "$ctx" >/dev/null
	rm -f "$out/$i.tar"
	$b push --quiet "localhost/railnet-e2e/$i:1" "oci-archive:$out/$i.tar:localhost/railnet-e2e/$i:1"
done
