#!/usr/bin/env bash
# A real single-node Kubernetes, what a kind node holds, from packages and
# cached builds: etcd (Debian), kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet (v1.37, built by build-deps.sh), containerd 2.x +
# runc, Multus (thin) with a bridge cluster network, on a mocked sysfs node
# whose VF netdevs are veth links. No registry: images are OCI archives
# imported into containerd.
#
#   cluster.sh up      start everything, import the images, build the node
#   cluster.sh down    stop everything and remove what up created
#   cluster.sh logs    print every component's log
#   cluster.sh restart-kubelet
#
# Everything lives below $E2E_DIR (default /var/lib/railnet-e2e) and
# /run/railnet-e2e, plus the places a node's components own: /var/lib/kubelet,
# /etc/cni/net.d, /opt/cni/bin/{multus,railnet,...}, /etc/railnet/cni.json,
# /var/lib/cni, /var/run/cdi/railnet.io-*, /var/run/k8s.cni.cncf.io.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export PATH="/usr/local/go/bin:$PATH"
CACHE=${RAILNET_E2E_CACHE:-/var/cache/railnet-e2e}
K8S_VERSION=${K8S_VERSION:-v1.37.2}
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
MULTUS_VERSION=${MULTUS_VERSION:-v4.2.2}
E2E_DIR=${E2E_DIR:-/var/lib/railnet-e2e}
RUN_DIR=/run/railnet-e2e
K8S_BIN=$CACHE/kubernetes-$K8S_VERSION
CTRD_BIN=$CACHE/containerd-$CONTAINERD_VERSION
SOCK=$RUN_DIR/containerd.sock
PKI=$E2E_DIR/pki
LOGS=$E2E_DIR/logs
NODE_ROOT=$E2E_DIR/node
export KUBECONFIG=$E2E_DIR/admin.kubeconfig
NODE_NAME=${NODE_NAME:-$(hostname | tr '[:upper:]' '[:lower:]')}
PODS_CIDR=10.88.0.0/16

node_ip() { ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -1; }
kubectl() { "$K8S_BIN/kubectl" "$@"; }
ctr() { "$CTRD_BIN/ctr" --address "$SOCK" -n k8s.io "$@"; }
say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# wait_for SECONDS DESCRIPTION COMMAND...: retry until it succeeds.
wait_for() {
	local limit=$1 what=$2; shift 2
	local end=$((SECONDS + limit))
	until "$@" >/dev/null 2>&1; do
		if [ $SECONDS -ge $end ]; then
			say "timed out after ${limit}s waiting for $what"
			return 1
		fi
		sleep 0.5
	done
}

start() { # start NAME COMMAND...: a background component with its log and pid file
	local name=$1; shift
	"$@" >"$LOGS/$name.log" 2>&1 &
	echo $! >"$RUN_DIR/$name.pid"
}

stop() {
	local name=$1 pid
	[ -f "$RUN_DIR/$name.pid" ] || return 0
	pid=$(cat "$RUN_DIR/$name.pid")
	kill "$pid" 2>/dev/null || true
	for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -9 "$pid" 2>/dev/null || true
	rm -f "$RUN_DIR/$name.pid"
}

packages() {
	local need=""
	for p in runc:runc etcd:etcd-server iptables:iptables conntrack:conntrack openssl:openssl buildah:buildah curl:curl; do
		command -v "${p%%:*}" >/dev/null 2>&1 || need="$need ${p#*:}"
	done
	[ -d /usr/lib/cni ] || need="$need containernetworking-plugins"
	case "$(ldd /bin/busybox 2>&1)" in *"not a dynamic"*) ;; *) need="$need busybox-static" ;; esac
	if [ -n "$need" ]; then
		say "installing:$need"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
	fi
}

# pki: a CA and one certificate per identity (RBAC names come from CN/O).
pki() {
	mkdir -p "$PKI"; cd "$PKI"
	openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=railnet-e2e-ca 2>/dev/null
	openssl genrsa -out sa.key 2048 2>/dev/null
	openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
	cert() { # cert NAME SUBJECT [SANs]
		openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
		if [ -n "${3:-}" ]; then printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$3" >"$1.ext"
		else printf 'extendedKeyUsage=clientAuth\n' >"$1.ext"; fi
		openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 2 -extfile "$1.ext" 2>/dev/null
	}
	cert apiserver /CN=kube-apiserver "IP:127.0.0.1,IP:$NODE_IP,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:localhost"
	cert admin "/O=system:masters/CN=railnet-e2e-admin"
	cert apiserver-kubelet "/O=system:masters/CN=kube-apiserver-kubelet-client"
	cert controller-manager /CN=system:kube-controller-manager
	cert scheduler /CN=system:kube-scheduler
	cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
	cert kubelet-serving "/O=system:nodes/CN=system:node:$NODE_NAME" "IP:$NODE_IP,IP:127.0.0.1,DNS:$NODE_NAME"
	cert multus /CN=multus
	cd - >/dev/null
}

kubeconfig() { # kubeconfig FILE CERTNAME
	cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- cluster: {certificate-authority: $PKI/ca.crt, server: "https://127.0.0.1:6443"}
  name: e2e
users:
- user: {client-certificate: $PKI/$2.crt, client-key: $PKI/$2.key}
  name: $2
contexts:
- context: {cluster: e2e, user: $2}
  name: e2e
current-context: e2e
EOF
}

# images: railnet's (make image), and the two the cluster needs: pause (the
# sandbox) and a test image with a shell and ip/ping (busybox, static).
images() {
	bash "$here/test-images.sh" "$E2E_DIR"
	for i in pause testpod; do ctr images import "$E2E_DIR/$i.tar" >/dev/null; done
	ctr images import "$repo/bin/railnet-image.tar" >/dev/null
	local name
	name=$(ctr images ls -q | grep '^localhost/railnet/railnet:' | grep -v ':e2e$' | head -1)
	ctr images tag --force "$name" localhost/railnet/railnet:e2e >/dev/null
	say "images: $(ctr images ls -q | grep -c .) in containerd ($name as localhost/railnet/railnet:e2e)"
}

# mocked_node builds the sysfs/devfs tree and the links it names
# (node-links.sh: a PF is a bridge, the NIC's embedded switch; a VF a veth
# whose peer is a port of it).
mocked_node() {
	rm -rf "$NODE_ROOT"
	"$repo/bin/railnetctl" fakesys build --device-nodes "$here/node.json" "$NODE_ROOT" >/dev/null
	sh "$here/node-links.sh"
}

containerd_up() {
	mkdir -p "$E2E_DIR/containerd" "$RUN_DIR/containerd" /etc/cni/net.d /opt/cni/bin /var/run/cdi
	cat >"$E2E_DIR/containerd.toml" <<EOF
version = 4
root = "$E2E_DIR/containerd"
state = "$RUN_DIR/containerd"
[grpc]
  address = "$SOCK"
[plugins.'io.containerd.cri.v1.runtime']
  enable_cdi = true
  cdi_spec_dirs = ["/etc/cdi", "/var/run/cdi"]
  # This VM lacks CAP_SYS_RESOURCE: without it runc fails with "can't get
  # final child's PID" when the kubelet asks for a negative oom_score_adj.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/opt/cni/bin"]
    conf_dir = "/etc/cni/net.d"
[plugins.'io.containerd.cri.v1.images']
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "localhost/railnet-e2e/pause:1"
EOF
	# The shim is found on PATH.
	start containerd env PATH="$CTRD_BIN:$PATH" "$CTRD_BIN/containerd" --config "$E2E_DIR/containerd.toml" --address "$SOCK"
	wait_for 30 containerd ctr version
}

cni_config() {
	for p in bridge host-local loopback portmap static; do
		[ -x "/opt/cni/bin/$p" ] || cp "/usr/lib/cni/$p" /opt/cni/bin/
	done
	cp "$CACHE/multus-$MULTUS_VERSION/multus" /opt/cni/bin/multus.tmp && mv /opt/cni/bin/multus.tmp /opt/cni/bin/multus
	mkdir -p /etc/cni/net.d/multus.d
	kubeconfig /etc/cni/net.d/multus.d/multus.kubeconfig multus
	# Multus thin: the cluster network (a bridge) is its first delegate;
	# secondary networks come from the pod's networks annotation.
	cat >/etc/cni/net.d/00-multus.conf <<EOF
{
  "cniVersion": "1.0.0",
  "name": "multus-cni-network",
  "type": "multus",
  "kubeconfig": "/etc/cni/net.d/multus.d/multus.kubeconfig",
  "binDir": "/opt/cni/bin",
  "logFile": "$LOGS/multus.log",
  "logLevel": "verbose",
  "delegates": [{
    "cniVersion": "1.0.0",
    "name": "e2e-pods",
    "plugins": [
      {"type": "bridge", "bridge": "rne2ecni0", "isGateway": true, "ipMasq": false,
       "ipam": {"type": "host-local", "ranges": [[{"subnet": "$PODS_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}}
    ]
  }]
}
EOF
}

control_plane_up() {
	mkdir -p "$E2E_DIR/etcd"
	start etcd etcd --name e2e --data-dir "$E2E_DIR/etcd" \
		--listen-client-urls http://127.0.0.1:23790 --advertise-client-urls http://127.0.0.1:23790 \
		--listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
		--initial-cluster e2e=http://127.0.0.1:23800
	wait_for 30 etcd curl -sf http://127.0.0.1:23790/health
	start kube-apiserver "$K8S_BIN/kube-apiserver" --etcd-servers=http://127.0.0.1:23790 \
		--bind-address=127.0.0.1 --advertise-address="$NODE_IP" --secure-port=6443 \
		--tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
		--client-ca-file="$PKI/ca.crt" \
		--service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
		--service-account-issuer=https://kubernetes.default.svc \
		--service-cluster-ip-range=10.96.0.0/16 \
		--authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
		--allow-privileged=true \
		--kubelet-client-certificate="$PKI/apiserver-kubelet.crt" --kubelet-client-key="$PKI/apiserver-kubelet.key" \
		--kubelet-preferred-address-types=InternalIP
	kubeconfig "$KUBECONFIG" admin
	wait_for 90 kube-apiserver kubectl get --raw /readyz
	kubeconfig "$E2E_DIR/controller-manager.kubeconfig" controller-manager
	kubeconfig "$E2E_DIR/scheduler.kubeconfig" scheduler
	start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
		--kubeconfig="$E2E_DIR/controller-manager.kubeconfig" --leader-elect=false --bind-address=127.0.0.1 \
		--service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
		--use-service-account-credentials=true --cluster-signing-cert-file="$PKI/ca.crt" \
		--cluster-signing-key-file="$PKI/ca.key" --allocate-node-cidrs=false
	start kube-scheduler "$K8S_BIN/kube-scheduler" --kubeconfig="$E2E_DIR/scheduler.kubeconfig" \
		--leader-elect=false --bind-address=127.0.0.1
	# Multus reads pods and NADs and writes the network-status annotation.
	kubectl apply -f "$here/manifests/nad-crd.yaml" -f "$here/manifests/multus-rbac.yaml" >/dev/null
	wait_for 30 "NAD CRD" kubectl get network-attachment-definitions -A
}

kubelet_config() {
	kubeconfig "$E2E_DIR/kubelet.kubeconfig" kubelet
	cat >"$E2E_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
containerRuntimeEndpoint: unix://$SOCK
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
# No CAP_SYS_RESOURCE here: the kubelet may not lower its own OOM score.
oomScoreAdj: 0
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
syncFrequency: 5s
fileCheckFrequency: 5s
nodeStatusUpdateFrequency: 2s
EOF
}

kubelet_up() {
	start kubelet "$K8S_BIN/kubelet" --config="$E2E_DIR/kubelet.yaml" --kubeconfig="$E2E_DIR/kubelet.kubeconfig" \
		--node-ip="$NODE_IP" --hostname-override="$NODE_NAME" --v=2
	wait_for 90 "node Ready" sh -c "$K8S_BIN/kubectl get node $NODE_NAME -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
}

up() {
	if pgrep -x kubelet >/dev/null || pgrep -x kube-apiserver >/dev/null; then
		echo "a kubelet or apiserver already runs on this machine; refusing to start another" >&2
		exit 1
	fi
	packages
	bash "$here/build-deps.sh" all
	[ -f "$repo/bin/railnet-image.tar" ] || make -C "$repo" image
	down >/dev/null 2>&1 || true
	mkdir -p "$E2E_DIR" "$LOGS" "$RUN_DIR"
	NODE_IP=$(node_ip)
	[ -n "$NODE_IP" ] || { echo "no node address (ip route get)" >&2; exit 1; }
	say "node $NODE_NAME at $NODE_IP"
	# Bidirectional mount propagation (the agent's host root) needs a shared
	# /: systemd makes it so at boot, kind's node entrypoint too; this VM's
	# init does not. down puts it back.
	if ! grep -q ' / / .* shared:' /proc/self/mountinfo; then
		mount --make-rshared /
		touch "$RUN_DIR/made-root-shared"
	fi
	pki
	mocked_node
	containerd_up
	images
	cni_config
	control_plane_up
	say "control plane up"
	kubelet_config
	kubelet_up
	kubectl label node "$NODE_NAME" railnet.io/enabled=true --overwrite >/dev/null
	wait_for 60 "default ServiceAccount" kubectl -n default get serviceaccount default
	say "node $NODE_NAME Ready"
}

logs() {
	for f in "$LOGS"/*.log; do
		[ -f "$f" ] || continue
		echo "===== $(basename "$f") (last 80 lines) ====="
		tail -n 80 "$f"
	done
	if [ -x "$K8S_BIN/kubectl" ] && [ -f "$KUBECONFIG" ]; then
		echo "===== kubectl get pods -A -o wide ====="
		kubectl get pods -A -o wide 2>&1 || true
		echo "===== railnet-node logs ====="
		kubectl -n railnet-system logs -l app.kubernetes.io/name=railnet-node --tail=100 --all-containers 2>&1 || true
		echo "===== events ====="
		kubectl get events -A --sort-by=.lastTimestamp 2>&1 | tail -40 || true
	fi
}

down() {
	if [ -f "$RUN_DIR/kube-apiserver.pid" ] && [ -f "$KUBECONFIG" ]; then
		timeout 20 "$K8S_BIN/kubectl" delete pods --all -n default --grace-period=1 --wait=false >/dev/null 2>&1 || true
	fi
	stop kubelet
	# Pods' processes: every shim's children, then the shims.
	if [ -S "$SOCK" ]; then
		for t in $(ctr tasks ls -q 2>/dev/null); do ctr tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true; done
		sleep 1
	fi
	pkill -9 -f "containerd-shim-runc-v2 -namespace k8s.io" 2>/dev/null || true
	for c in kube-scheduler kube-controller-manager kube-apiserver etcd containerd; do stop "$c"; done
	# Mounts: pods' volumes, sandboxes' netns and shm, containerd's rootfs.
	for m in $(awk '{print $5}' /proc/self/mountinfo | grep -E "^(/var/lib/kubelet|/var/lib/cni/railnet|$E2E_DIR|$RUN_DIR|/run/netns/cni-|/var/run/netns/cni-)" | sort -r); do
		umount -l "$m" 2>/dev/null || true
	done
	for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^(cni-|rne2e)'); do ip netns del "$n" 2>/dev/null || true; done
	for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^(rne2e|net1$)'); do ip link del "$l" 2>/dev/null || true; done
	ip link del rne2ecni0 2>/dev/null || true
	if [ -f "$RUN_DIR/made-root-shared" ]; then mount --make-rprivate /; fi
	rm -rf /var/lib/kubelet "$E2E_DIR" "$RUN_DIR" /etc/cni/net.d/00-multus.conf /etc/cni/net.d/multus.d \
		/opt/cni/bin/multus /opt/cni/bin/railnet /etc/railnet/cni.json /var/lib/cni/railnet /var/lib/cni/networks \
		/var/lib/cni/multus /var/lib/cni/results /var/run/k8s.cni.cncf.io /var/run/cdi/railnet.io-* /var/run/cdi/dra.railnet.io-*
}

restart_kubelet() {
	NODE_IP=$(node_ip)
	stop kubelet
	kubelet_up
}

case "${1:-}" in
up) up ;;
down) down ;;
logs) logs ;;
restart-kubelet) restart_kubelet ;;
*) echo "usage: $0 up|down|logs|restart-kubelet" >&2; exit 2 ;;
esac
