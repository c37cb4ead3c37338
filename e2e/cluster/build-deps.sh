#!/usr/bin/env bash
# Builds what a kind node holds and Debian lacks (or ships too old) from the Go
# module proxy, once per version, into a cache outside the clone:
#   $CACHE/kubernetes-$K8S_VERSION/{kubelet,kube-apiserver,kube-controller-manager,kube-scheduler,kubectl}
#   $CACHE/containerd-$CONTAINERD_VERSION/{containerd,containerd-shim-runc-v2,ctr}
#   $CACHE/multus-$MULTUS_VERSION/multus            (the thin plugin)
# A finished directory is renamed into place, so an interrupted build is
# rebuilt next time instead of being half used.
set -euo pipefail
export PATH="/usr/local/go/bin:$PATH"
CACHE=${RAILNET_E2E_CACHE:-/var/cache/railnet-e2e}
K8S_VERSION=${K8S_VERSION:-v1.37.2}
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
MULTUS_VERSION=${MULTUS_VERSION:-v4.2.2}
mkdir -p "$CACHE"

# wrapper MODULE REQUIRE... writes a throwaway module requiring the given
# modules and prints its directory.
wrapper() {
	local dir
	dir=$(mktemp -d "$CACHE/.mod.XXXXXX")
	printf 'module railnet.invalid/e2e-deps\n\ngo 1.26\n' >"$dir/go.mod"
	echo "$dir"
}

build_kubernetes() {
	local out=$CACHE/kubernetes-$K8S_VERSION
	[ -x "$out/kubelet" ] && return 0
	echo "building Kubernetes $K8S_VERSION (about 20 min cold on 2 cores)"
	local mod tmp stg
	mod=$(wrapper); tmp=$(mktemp -d "$CACHE/.out.XXXXXX")
	# k8s.io/kubernetes replaces its staging modules with local paths, which
	# only work inside its own tree; the published staging modules carry the
	# same code at v0.<minor>.<patch>.
	stg=v0.${K8S_VERSION#v1.}
	(
		cd "$mod"
		go mod edit -require="k8s.io/kubernetes@$K8S_VERSION"
		go mod download -json "k8s.io/kubernetes@$K8S_VERSION" >/dev/null
		gomod=$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.mod
		for m in $(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod"); do
			go mod edit -replace="$m=$m@$stg"
		done
		major=${K8S_VERSION#v}; minor=${major#*.}; major=${major%%.*}; minor=${minor%%.*}
		ld="-s -w"
		for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
			ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
		done
		GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o "$tmp/" \
			k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-apiserver \
			k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
			k8s.io/kubernetes/cmd/kubectl
	)
	rm -rf "$mod"; rm -rf "$out"; mv "$tmp" "$out"
}

build_containerd() {
	local out=$CACHE/containerd-$CONTAINERD_VERSION
	[ -x "$out/containerd" ] && return 0
	echo "building containerd $CONTAINERD_VERSION"
	local mod tmp
	mod=$(wrapper); tmp=$(mktemp -d "$CACHE/.out.XXXXXX")
	(
		cd "$mod"
		go mod edit -require="github.com/containerd/containerd/v2@$CONTAINERD_VERSION"
		p=github.com/containerd/containerd/v2
		GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -tags no_btrfs \
			-ldflags "-s -w -X $p/version.Version=$CONTAINERD_VERSION" -o "$tmp/" \
			$p/cmd/containerd $p/cmd/containerd-shim-runc-v2 $p/cmd/ctr
	)
	rm -rf "$mod"; rm -rf "$out"; mv "$tmp" "$out"
}

build_multus() {
	local out=$CACHE/multus-$MULTUS_VERSION
	[ -x "$out/multus" ] && return 0
	echo "building Multus $MULTUS_VERSION (thin plugin)"
	local mod tmp
	mod=$(wrapper); tmp=$(mktemp -d "$CACHE/.out.XXXXXX")
	(
		cd "$mod"
		p=gopkg.in/k8snetworkplumbingwg/multus-cni.v4
		go mod edit -require="$p@$MULTUS_VERSION"
		GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/" $p/cmd/multus
	)
	rm -rf "$mod"; rm -rf "$out"; mv "$tmp" "$out"
}

case "${1:-all}" in
all) build_containerd; build_multus; build_kubernetes ;;
kubernetes) build_kubernetes ;;
containerd) build_containerd ;;
multus) build_multus ;;
*) echo "usage: $0 [all|kubernetes|containerd|multus]" >&2; exit 2 ;;
esac
