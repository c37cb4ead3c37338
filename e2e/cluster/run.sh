#!/usr/bin/env bash
# make e2e: bring the cluster up, run the suite, tear everything down on any
# exit; on failure, print every component's log first.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CACHE=${RAILNET_E2E_CACHE:-/var/cache/railnet-e2e}
K8S_VERSION=${K8S_VERSION:-v1.37.2}
started=$SECONDS
finish() {
	rc=$?
	if [ $rc -ne 0 ]; then
		echo "e2e FAILED (exit $rc): component logs follow"
		bash "$here/cluster.sh" logs || true
	fi
	bash "$here/cluster.sh" down || true
	echo "e2e: $((SECONDS - started))s in all"
	exit $rc
}
trap finish EXIT
trap 'exit 130' INT TERM
bash "$here/cluster.sh" up
echo "e2e: cluster up after $((SECONDS - started))s"
export KUBECTL=$CACHE/kubernetes-$K8S_VERSION/kubectl
export KUBECONFIG=${E2E_DIR:-/var/lib/railnet-e2e}/admin.kubeconfig
export NODE_NAME=${NODE_NAME:-$(hostname | tr '[:upper:]' '[:lower:]')}
export NODE_ROOT=${E2E_DIR:-/var/lib/railnet-e2e}/node
export RAILNET_VERSION=${RAILNET_VERSION:-$(git -C "$here/../.." describe --always --dirty 2>/dev/null || echo dev)}
bash "$here/suite.sh"
