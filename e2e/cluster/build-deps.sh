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

# module_build OUT MODULE@VERSION SETUP GO-BUILD-ARGS...: builds packages of
# MODULE in a throwaway module that requires it (after SETUP, a function run
# in that module's directory, or ""), static, into OUT, renamed into place.
module_build() {
	local out=$1 modver=$2 setup=$3
	shift 3
	local mod tmp
	mod=$(mktemp -d "$CACHE/.mod.XXXXXX"); tmp=$(mktemp -d "$CACHE/.out.XXXXXX")
	(
		cd "$mod"
		printf 'module railnet.invalid/e2e-deps\n\ngo 1.26\n' >go.mod
		go mod edit -require="$modver"
		[ -z "$setup" ] || "$setup"
		GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -o "$tmp/" "$@"
	)
	rm -rf "$mod" "$out"
	mv "$tmp" "$out"
}

# k8s.io/kubernetes replaces its staging modules with local paths, which only
# work inside its own tree; the published staging modules carry the same
# code at v0.<minor>.<patch>.
k8s_staging() {
	local gomod m
	go mod download -json "k8s.io/kubernetes@$K8S_VERSION" >/dev/null
	gomod=$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.mod
	for m in $(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod"); do
		go mod edit -replace="$m=$m@v0.${K8S_VERSION#v1.}"
	done
}

build_kubernetes() {
	local out=$CACHE/kubernetes-$K8S_VERSION
	[ -x "$out/kubelet" ] && return 0
	echo "building Kubernetes $K8S_VERSION (about 10-20 min cold on 2 cores)"
	local major minor ld p
	major=${K8S_VERSION#v}; minor=${major#*.}; major=${major%%.*}; minor=${minor%%.*}
	ld="-s -w"
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
	done
	module_build "$out" "k8s.io/kubernetes@$K8S_VERSION" k8s_staging -ldflags "$ld" \
		k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-apiserver \
		k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
		k8s.io/kubernetes/cmd/kubectl
}

build_containerd() {
	local out=$CACHE/containerd-$CONTAINERD_VERSION p=github.com/containerd/containerd/v2
	[ -x "$out/containerd" ] && return 0
	echo "building containerd $CONTAINERD_VERSION"
	module_build "$out" "$p@$CONTAINERD_VERSION" "" -tags no_btrfs \
		-ldflags "-s -w -X $p/version.Version=$CONTAINERD_VERSION" \
		$p/cmd/containerd $p/cmd/containerd-shim-runc-v2 $p/cmd/ctr
}

build_multus() {
	local out=$CACHE/multus-$MULTUS_VERSION p=gopkg.in/k8snetworkplumbingwg/multus-cni.v4
	[ -x "$out/multus" ] && return 0
	echo "building Multus $MULTUS_VERSION (thin plugin)"
	module_build "$out" "$p@$MULTUS_VERSION" "" -ldflags "-s -w" $p/cmd/multus
}

case "${1:-all}" in
all) build_containerd; build_multus; build_kubernetes ;;
kubernetes) build_kubernetes ;;
containerd) build_containerd ;;
multus) build_multus ;;
*) echo "usage: $0 [all|kubernetes|containerd|multus]" >&2; exit 2 ;;
esac
