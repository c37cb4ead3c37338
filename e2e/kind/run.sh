#!/usr/bin/env bash
# The e2e suite on kind, for machines with a Docker engine:
#   make image && bash e2e/kind/run.sh
# It creates the kind cluster (kind-config.yaml), installs Multus (thin,
# kindnet as the cluster network), builds the mocked node inside the kind
# node (its sysfs tree and the veth links standing for VFs), loads the
# images, runs e2e/cluster/suite.sh, and deletes the cluster on any exit
# (KEEP=1 keeps it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
CLUSTER=railnet-e2e
NODE=$CLUSTER-control-plane
MULTUS_VERSION=${MULTUS_VERSION:-v4.2.2}
CACHE=${RAILNET_E2E_CACHE:-/var/cache/railnet-e2e}
for c in kind docker kubectl buildah go; do command -v $c >/dev/null || { echo "needs $c" >&2; exit 1; }; done
[ -f "$repo/bin/railnet-image.tar" ] || make -C "$repo" image
finish() {
	rc=$?
	[ $rc -eq 0 ] || { kubectl get pods -A -o wide || true; kubectl -n railnet-system logs -l app.kubernetes.io/name=railnet-node --all-containers --tail=100 || true; }
	[ "${KEEP:-}" = 1 ] || kind delete cluster --name "$CLUSTER"
	exit $rc
}
trap finish EXIT
kind create cluster --config "$here/kind-config.yaml" --wait 120s
export KUBECONFIG=${KUBECONFIG:-$HOME/.kube/config}
node() { docker exec -i "$NODE" "$@"; }

# Multus thin, delegating the cluster network to kindnet.
bash "$repo/e2e/cluster/build-deps.sh" multus
docker cp "$CACHE/multus-$MULTUS_VERSION/multus" "$NODE:/opt/cni/bin/multus"
node mkdir -p /etc/cni/net.d/multus.d
node cp /etc/kubernetes/admin.conf /etc/cni/net.d/multus.d/multus.kubeconfig
node sh -c 'cat > /etc/cni/net.d/00-multus.conf' <<'JSON'
{"cniVersion": "1.0.0", "name": "multus-cni-network", "type": "multus",
 "kubeconfig": "/etc/cni/net.d/multus.d/multus.kubeconfig", "binDir": "/opt/cni/bin",
 "clusterNetwork": "/etc/cni/net.d/10-kindnet.conflist"}
JSON
kubectl apply -f "$repo/e2e/cluster/manifests/nad-crd.yaml"

# The mocked node, inside the kind node.
docker cp "$repo/bin/railnetctl" "$NODE:/usr/local/bin/railnetctl"
docker cp "$repo/e2e/cluster/node.json" "$NODE:/tmp/node.json"
node railnetctl fakesys build --device-nodes /tmp/node.json /var/lib/railnet-e2e/node
node sh -s <"$repo/e2e/cluster/node-links.sh"

# Images: railnet's, retagged as the e2e overlay names it, and the test pod's.
kind load image-archive "$repo/bin/railnet-image.tar" --name "$CLUSTER"
name=$(node ctr -n k8s.io images ls -q | grep '^localhost/railnet/railnet:' | grep -v ':e2e$' | head -1)
node ctr -n k8s.io images tag --force "$name" localhost/railnet/railnet:e2e
imgs=$(mktemp -d)
bash "$repo/e2e/cluster/test-images.sh" "$imgs"
kind load image-archive "$imgs/testpod.tar" --name "$CLUSTER"
rm -rf "$imgs"

kubectl label node "$NODE" railnet.io/enabled=true --overwrite
export KUBECTL=kubectl NODE_NAME=$NODE NODE_ROOT=/var/lib/railnet-e2e/node HOST_EXEC="docker exec -i $NODE"
export RESTART_KUBELET="docker exec $NODE systemctl restart kubelet"
export RAILNET_VERSION=${RAILNET_VERSION:-$(git -C "$repo" describe --always --dirty 2>/dev/null || echo dev)}
bash "$repo/e2e/cluster/suite.sh"
