#!/usr/bin/env bash
# The e2e suite, against a cluster that cluster.sh (or e2e/kind/) brought
# up, with railnet deployed from the image by kustomize. Each check prints
# PASS or FAIL; the suite exits non-zero on the first FAIL.
#
# Environment: KUBECTL (a kubectl), KUBECONFIG, NODE_NAME; NODE_ROOT (the
# mocked node's tree, as the host sees it); HOST_EXEC (how to run a command
# on the node: empty on the node itself, "docker exec NODE" for kind);
# RESTART_KUBELET (a command that restarts the kubelet).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
KUBECTL=${KUBECTL:-kubectl}
NODE_ROOT=${NODE_ROOT:-/var/lib/railnet-e2e/node}
HOST_EXEC=${HOST_EXEC:-}
RESTART_KUBELET=${RESTART_KUBELET:-"bash $here/cluster.sh restart-kubelet"}
NS=default
k() { $KUBECTL "$@"; }
host() { $HOST_EXEC "$@"; }
say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
pass() { say "PASS $*"; }
fail() { say "FAIL $*"; exit 1; }
# until_ok SECONDS COMMAND...: retry until it succeeds or time runs out.
until_ok() {
	local end=$((SECONDS + $1)); shift
	until "$@" >/dev/null 2>&1; do
		[ $SECONDS -lt $end ] || return 1
		sleep 0.5
	done
}
started=$SECONDS

allocatable() { k get node "$NODE_NAME" -o jsonpath="{.status.allocatable.railnet\.io/$1}"; }
is_allocatable() { [ "$(allocatable "$1")" = "$2" ]; }
ds_ready() {
	[ "$(k -n railnet-system get ds railnet-node -o jsonpath='{.status.numberReady}')" = 1 ] &&
		[ "$(k -n railnet-system get ds railnet-node -o jsonpath='{.status.updatedNumberScheduled}')" = 1 ]
}
agent_pod() { k -n railnet-system get pods -l app.kubernetes.io/name=railnet-node -o jsonpath='{.items[0].metadata.name}'; }
metrics() { host curl -sf http://127.0.0.1:9110/metrics; }
pools_registered() {
	local m
	m=$(metrics) || return 1
	echo "$m" | grep -q '^railnet_pool_registered{pool="e2e-vf"} 1' && echo "$m" | grep -q '^railnet_pool_registered{pool="e2e-hca"} 1'
}
registrations() { k -n railnet-system logs "$(agent_pod)" -c agent | grep -c '"msg":"registered with kubelet"' || true; }
node_ready() { k get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -qx True; }
new_agent() { local n; n=$(agent_pod) && [ -n "$n" ] && [ "$n" != "$1" ]; }
all_vfs_home() { [ "$(vfs_in_host)" = 4 ]; }
leases() { host sh -c 'ls /var/lib/cni/networks/e2e-vf 2>/dev/null' | grep -c '^10\.77\.0\.' || true; }
records() { host sh -c 'ls /var/lib/cni/railnet/records 2>/dev/null' | grep -c json || true; }

# pod NAME NETWORKS RESOURCES [CLAIMS]: the suite's test pod, attached to
# NETWORKS (NADs, or "") through Multus, its container's resources
# RESOURCES, the pod's resourceClaims CLAIMS (or none).
pod() {
	local ann="" claims=""
	[ -z "$2" ] || ann="annotations: {k8s.v1.cni.cncf.io/networks: $2}"
	[ -z "${4:-}" ] || claims="resourceClaims: $4"
	k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $1
  namespace: $NS
  labels: {railnet-e2e: "1"}
  $ann
spec:
  terminationGracePeriodSeconds: 1
  $claims
  containers:
  - name: c
    image: localhost/railnet-e2e/testpod:1
    imagePullPolicy: Never
    resources: $3
EOF
}
# test_pod NAME RESOURCE [NETWORKS]: a pod that asks one device of
# railnet.io/RESOURCE, attached to NETWORKS (NADs) through Multus.
test_pod() { pod "$1" "${3:-}" "{limits: {railnet.io/$2: 1}}"; }
vf_pod() { test_pod "$1" e2e-vf e2e-vf; }

can() { # can yes|no VERB RESOURCE NAMESPACE AS...
	local want=$1 verb=$2 res=$3 ns=$4; shift 4
	local got
	got=$(k auth can-i "$verb" "$res" -n "$ns" "$@" 2>/dev/null || true)
	[ "$got" = "$want" ] || fail "can-i $verb $res -n $ns $*: $got, want $want"
}

net1_ip() { k exec "$1" -- ip -4 -o addr show net1 | sed -n 's/.* inet \([0-9.]*\)\/.*/\1/p'; }
pod_env() { k exec "$1" -- env; }
ready() { k wait --for=condition=Ready "pod/$1" --timeout=60s >/dev/null; }

# Host links of the mocked NIC's VFs, as the fixture describes them.
vf_link_ok() { # vf_link_ok N: rne2evN is in the host with its name, MAC and MTU
	local out
	out=$(host ip -o link show "rne2ev$1" 2>/dev/null) || return 1
	echo "$out" | grep -q "link/ether 02:e2:e0:00:01:0$1" && echo "$out" | grep -q "mtu 1500"
}
vfs_in_host() { local n=0; for i in 0 1 2 3; do vf_link_ok "$i" && n=$((n + 1)); done; echo $n; }

# ---------------------------------------------------------------------------
say "deploy railnet: kubectl apply -k deployments/overlays/e2e"
k apply -k "$repo/deployments/overlays/e2e" >/dev/null
until_ok 120 ds_ready || fail "DaemonSet railnet-node did not become Ready"
pass "DaemonSet Ready ($(agent_pod))"
until_ok 60 is_allocatable e2e-vf 4 || fail "railnet.io/e2e-vf allocatable $(allocatable e2e-vf), want 4"
until_ok 60 is_allocatable e2e-hca 4 || fail "railnet.io/e2e-hca allocatable $(allocatable e2e-hca), want 4"
until_ok 60 is_allocatable e2e-roce 4 || fail "railnet.io/e2e-roce allocatable $(allocatable e2e-roce), want 4"
pass "Node allocatable: railnet.io/e2e-vf=4 railnet.io/e2e-hca=4 railnet.io/e2e-roce=4"
v=$(k -n railnet-system exec "$(agent_pod)" -c agent -- /usr/local/bin/railnet-deviceplugin --version)
[ "$v" = "railnet-deviceplugin ${RAILNET_VERSION:?}" ] || fail "image version: '$v', want railnet-deviceplugin $RAILNET_VERSION"
pass "the image's railnet-deviceplugin --version: $v"
host cat /etc/railnet/cni.json | grep -q "\"sysfsRoot\":\"$NODE_ROOT/sys\"" || fail "CNI node settings: $(host cat /etc/railnet/cni.json)"
[ -x /opt/cni/bin/railnet ] || host test -x /opt/cni/bin/railnet || fail "railnet CNI not installed"
pass "init container installed /opt/cni/bin/railnet and /etc/railnet/cni.json"

k apply -f "$here/manifests/nad-e2e.yaml" >/dev/null
vf_pod vf-a; vf_pod vf-b
ready vf-a || fail "pod vf-a not Ready: $(k describe pod vf-a | tail -5)"
ready vf-b || fail "pod vf-b not Ready: $(k describe pod vf-b | tail -5)"
a_ip=$(net1_ip vf-a); b_ip=$(net1_ip vf-b)
case "$a_ip$b_ip" in 10.77.0.*10.77.0.*) ;; *) fail "net1 addresses: vf-a '$a_ip' vf-b '$b_ip'" ;; esac
pass "vf-a net1 $a_ip, vf-b net1 $b_ip (host-local)"
declare -A vf_of
for p in vf-a vf-b; do
	env_out=$(pod_env $p)
	bdf=$(echo "$env_out" | sed -n 's/^PCIDEVICE_RAILNET_IO_E2E_VF=//p')
	echo "$bdf" | grep -Eq '^0000:04:00\.[2-5]$' || fail "$p PCIDEVICE_RAILNET_IO_E2E_VF='$bdf'"
	echo "$env_out" | grep -Eq '^NCCL_IB_HCA==mlx5_[2-5]$' || fail "$p NCCL_IB_HCA: $(echo "$env_out" | grep NCCL)"
	status=$(k get pod $p -o jsonpath='{.metadata.annotations.k8s\.v1\.cni\.cncf\.io/network-status}')
	echo "$status" | tr -d ' \n' | grep -q "\"interface\":\"net1\".*\"device-info\":{\"type\":\"pci\",\"version\":\"1.1.0\",\"pci\":{\"pci-address\":\"$bdf\"" ||
		fail "$p network-status has no device-info for $bdf: $status"
	vf_of[$p]=$bdf
done
[ "${vf_of[vf-a]}" != "${vf_of[vf-b]}" ] || fail "both pods got ${vf_of[vf-a]}"
pass "env PCIDEVICE_*/NCCL_IB_HCA and network-status device-info: vf-a ${vf_of[vf-a]}, vf-b ${vf_of[vf-b]}"
k exec vf-a -- ping -c 2 -W 2 -I net1 "$b_ip" >/dev/null || fail "vf-a cannot ping vf-b over net1"
k exec vf-b -- ping -c 2 -W 2 -I net1 "$a_ip" >/dev/null || fail "vf-b cannot ping vf-a over net1"
pass "vf-a and vf-b ping each other over net1"
[ "$(vfs_in_host)" = 2 ] || fail "$(vfs_in_host) VFs left in the host, want 2"

# A NAD is untrusted input: one naming a host path is refused (code 7,
# naming the key), and the pod never starts; nothing is attached.
k apply -f - >/dev/null <<EOF
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: e2e-evil
  namespace: $NS
  annotations: {k8s.v1.cni.cncf.io/resourceName: railnet.io/e2e-vf}
spec:
  config: '{"cniVersion":"1.0.0","name":"e2e-evil","type":"railnet","sysfsRoot":"/var/lib/kubelet/pods","capabilities":{"deviceID":true}}'
EOF
test_pod evil e2e-vf e2e-evil
refused() { k get events --field-selector involvedObject.name=evil -o jsonpath='{.items[*].message}' | grep -q 'sysfsRoot: is a host path'; }
until_ok 60 refused || fail "a NAD naming sysfsRoot was not refused: $(k get events --field-selector involvedObject.name=evil -o jsonpath='{.items[*].message}')"
[ "$(records)" = 2 ] || fail "records after the refused NAD: $(records)"
k delete pod evil --wait=true --timeout=60s >/dev/null
k delete net-attach-def e2e-evil >/dev/null
pass "a NAD that names a host path is refused (sysfsRoot: is a host path), the pod never starts"

# RDMA pool: a shared HCA slot, no network; the runtime creates the device
# nodes from railnet's device specs and CDI spec (host paths below the
# mocked devfs, real character devices).
test_pod hca-a e2e-hca
ready hca-a || fail "pod hca-a not Ready: $(k describe pod hca-a | tail -5)"
devs=$(k exec hca-a -- ls -l /dev/infiniband)
for d in uverbs1 umad1 issm1 rdma_cm; do
	echo "$devs" | grep -Eq "^c.* $d\$" || fail "hca-a has no character device /dev/infiniband/$d: $devs"
done
pod_env hca-a | grep -qx 'NCCL_IB_HCA==mlx5_1' || fail "hca-a NCCL_IB_HCA: $(pod_env hca-a | grep NCCL)"
pod_env hca-a | grep -qx 'NCCL_IB_GID_INDEX=0' || fail "hca-a (InfiniBand) NCCL_IB_GID_INDEX: $(pod_env hca-a | grep NCCL)"
pass "RDMA pool pod hca-a: /dev/infiniband/{uverbs1,umad1,issm1,rdma_cm} character devices, NCCL_IB_HCA==mlx5_1, NCCL_IB_GID_INDEX=0"

# Shared RoCE HCA: two pods on two slots of the RoCE NIC, each with the
# HCA's RDMA devices and its own macvlan child of rne2epf, which stays in
# the host unchanged; they reach each other through it.
pf_view() { host ip -o link show rne2epf | sed 's/^[0-9]*: //; s/ state [A-Z]*//'; }
pf_before=$(pf_view)
test_pod roce-a e2e-roce e2e-roce; test_pod roce-b e2e-roce e2e-roce
ready roce-a || fail "pod roce-a not Ready: $(k describe pod roce-a | tail -5)"
ready roce-b || fail "pod roce-b not Ready: $(k describe pod roce-b | tail -5)"
ra_ip=$(net1_ip roce-a); rb_ip=$(net1_ip roce-b)
case "$ra_ip$rb_ip" in 10.78.0.*10.78.0.*) ;; *) fail "net1 addresses: roce-a '$ra_ip' roce-b '$rb_ip'" ;; esac
for p in roce-a roce-b; do
	k exec $p -- ip link show net1 | grep -q "net1@if$(host cat /sys/class/net/rne2epf/ifindex):" || fail "$p net1 is not a child of rne2epf: $(k exec $p -- ip link show net1)"
	pod_env $p | grep -qx 'NCCL_IB_HCA==mlx5_0' || fail "$p NCCL_IB_HCA: $(pod_env $p | grep NCCL)"
	pod_env $p | grep -q '^NCCL_IB_GID_INDEX=' && fail "$p (RoCE) has NCCL_IB_GID_INDEX: the GID index is not known ahead"
	k exec $p -- ls -l /dev/infiniband | grep -Eq '^c.* uverbs0$' || fail "$p has no /dev/infiniband/uverbs0"
	status=$(k get pod $p -o jsonpath='{.metadata.annotations.k8s\.v1\.cni\.cncf\.io/network-status}')
	echo "$status" | tr -d ' \n' | grep -q '"pci":{"pci-address":"0000:04:00.0","rdma-device":"mlx5_0"' || fail "$p network-status device-info: $status"
done
slots=$(for p in roce-a roce-b; do pod_env $p | sed -n 's/^PCIDEVICE_RAILNET_IO_E2E_ROCE_INFO=//p'; done | grep -o '0000:04:00.0#[0-3]' | sort -u | wc -l)
[ "$slots" = 2 ] || fail "roce-a and roce-b did not get two slots ($slots)"
k exec roce-a -- ping -c 2 -W 2 -I net1 "$rb_ip" >/dev/null || fail "roce-a cannot ping roce-b over net1"
k exec roce-b -- ping -c 2 -W 2 -I net1 "$ra_ip" >/dev/null || fail "roce-b cannot ping roce-a over net1"
[ "$(pf_view)" = "$pf_before" ] || fail "rne2epf changed: $(pf_view), was $pf_before"
inv=$(k -n railnet-system exec "$(agent_pod)" -c agent -- /usr/local/bin/railnetctl inventory --sysfs-root "$NODE_ROOT/sys" --state-dir /host/var/lib/cni/railnet)
echo "$inv" | grep -q 'shared HCA 0000:04:00.0 (rne2epf): 2 slot(s) in use' || fail "railnetctl inventory does not show the slots: $inv"
[ "$(echo "$inv" | grep -c '0000:04:00.0#[0-3] *macvlan *default/roce-[ab]')" = 2 ] || fail "railnetctl inventory does not show the pods' macvlan slots: $inv"
pass "shared RoCE: roce-a $ra_ip and roce-b $rb_ip on two slots of 0000:04:00.0 with macvlan children, ping each other; rne2epf unchanged; railnetctl inventory shows 2 slots in use"
k delete pod roce-a roce-b --wait=true --timeout=60s >/dev/null
[ "$(records)" = 2 ] || fail "records after deleting the RoCE pods: $(records), want 2"
[ "$(pf_view)" = "$pf_before" ] || fail "rne2epf changed after DEL: $(pf_view)"

# ---------------------------------------------------------------------------
# The reconciler. What a sandbox removed without a CNI DEL leaves: a netns
# bind mount with a VF inside and the attachment record, and no pod. Made
# here the way the runtime would have: railnet's own ADD, with Multus's
# arguments, for a pod that does not exist, into a namespace nobody deletes.
free=""
for i in 0 1 2 3; do vf_link_ok $i && { free=$i; break; }; done
[ -n "$free" ] || fail "no free VF for the leftover"
free_bdf=$(printf '0000:04:00.%d' $((free + 2)))
host ip netns add rne2e-leftover
conf=$(k get net-attach-def e2e-vf -o jsonpath='{.spec.config}' | tr -d '\n')
conf=${conf%\}}",\"deviceID\":\"$free_bdf\"}"
host env CNI_COMMAND=ADD CNI_CONTAINERID=rne2e-leftover-0 CNI_NETNS=/var/run/netns/rne2e-leftover CNI_IFNAME=net1 \
	CNI_PATH=/opt/cni/bin CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=$NS;K8S_POD_NAME=ghost" \
	/opt/cni/bin/railnet <<<"$conf" >/dev/null || fail "leftover ADD"
host ip netns exec rne2e-leftover ip link show net1 >/dev/null || fail "leftover VF not in its netns"
[ "$(leases)" = 3 ] || fail "leases with the leftover: $(leases), want 3"
before=$SECONDS
until_ok 30 vf_link_ok "$free" || fail "the reconciler did not return rne2ev$free from the leftover netns within 30s"
pass "reconciler returned rne2ev$free (name, MAC, MTU) from a leftover netns in $((SECONDS - before))s (no running pod held it; its netns still existed)"
host test -e /var/run/netns/rne2e-leftover || fail "leftover netns vanished: the VF came back some other way"
[ "$(leases)" = 2 ] || fail "leftover's address not released: $(leases) leases, want 2"
host ip netns del rne2e-leftover
k -n railnet-system logs "$(agent_pod)" -c agent | grep -q '"msg":"reconciler released an orphaned attachment".*"reason":"no-running-pod"' ||
	fail "no log line for the release"
metrics | grep -Eq '^railnet_reconciler_released_total\{reason="no-running-pod"\} [1-9]' || fail "no release metric"
metrics | grep -Eq '^railnet_reconciler_pod_resources_up 1' || fail "the reconciler does not reach pod-resources"
for p in vf-a vf-b; do k exec $p -- ip link show net1 >/dev/null || fail "$p lost net1 to the reconciler"; done
[ "$(records)" = 2 ] || fail "records after the reconciler: $(records), want 2 (vf-a, vf-b)"
pass "log line and railnet_reconciler_released_total{reason=no-running-pod}; running pods' VFs untouched"

# ---------------------------------------------------------------------------
say "restart the kubelet"
regs=$(registrations)
more_registrations() { [ "$(registrations)" -ge $((regs + 2)) ]; }
$RESTART_KUBELET
until_ok 60 node_ready || fail "node not Ready after the kubelet restart"
until_ok 30 more_registrations || fail "pools not registered again after the kubelet restart ($(registrations) registrations, had $regs)"
until_ok 30 pools_registered || fail "railnet_pool_registered not 1 after the kubelet restart"
until_ok 30 is_allocatable e2e-vf 4 || fail "e2e-vf allocatable after kubelet restart: $(allocatable e2e-vf)"
for p in vf-a vf-b hca-a; do ready $p || fail "$p not running after the kubelet restart"; done
[ "$(records)" = 2 ] || fail "records after kubelet restart: $(records)"
pass "kubelet restart: both pools re-registered, allocations kept"
vf_pod vf-c
ready vf-c || fail "vf-c not Ready after the kubelet restart"
c_bdf=$(pod_env vf-c | sed -n 's/^PCIDEVICE_RAILNET_IO_E2E_VF=//p')
case "$c_bdf" in "${vf_of[vf-a]}" | "${vf_of[vf-b]}" | "") fail "vf-c got $c_bdf, already held" ;; esac
pass "vf-c got $c_bdf, not a device a running pod holds"

say "restart the DaemonSet pod"
# The encryption keys Secret, mounted from the next agent pod on: its
# entries <namespace>.<name> land on the host as /etc/railnet/keys/<ns>/<name>.
host sh -c 'rm -rf /etc/railnet/keys/e2e-ns'
k -n railnet-system create secret generic railnet-keys \
	--from-literal=e2e-ns.fabric="1 aes-gcm-128 00112233445566778899aabbccddeeff" >/dev/null
old=$(agent_pod)
k -n railnet-system delete pod "$old" --wait=true >/dev/null
until_ok 60 new_agent "$old" || fail "no new agent pod"
until_ok 90 ds_ready || fail "DaemonSet not Ready after its pod restarted"
until_ok 30 pools_registered || fail "pools not registered after the agent restarted"
until_ok 30 is_allocatable e2e-vf 4 || fail "e2e-vf allocatable after agent restart: $(allocatable e2e-vf)"
sleep 6 # a reconciler pass or more
for p in vf-a vf-b vf-c; do k exec $p -- ip link show net1 >/dev/null || fail "$p lost net1 after the agent restart"; done
[ "$(records)" = 3 ] || fail "records after agent restart: $(records), want 3"
pass "agent restart: pools re-registered ($(agent_pod)), running pods keep their VFs"
keys_mirrored() { [ "$(host stat -c '%a %u' /etc/railnet/keys/e2e-ns/fabric 2>/dev/null)" = "400 0" ]; }
until_ok 30 keys_mirrored || fail "the keys Secret is not on the host: $(host ls -la /etc/railnet/keys/e2e-ns 2>&1)"
[ "$(host stat -c '%a' /etc/railnet/keys/e2e-ns)" = 700 ] || fail "keys namespace directory mode $(host stat -c '%a' /etc/railnet/keys/e2e-ns)"
host grep -q '^1 aes-gcm-128 ' /etc/railnet/keys/e2e-ns/fabric || fail "mirrored key file content differs"
k -n railnet-system logs "$(agent_pod)" -c agent | grep -q '00112233445566778899aabbccddeeff' && fail "key material in the agent's log"
pass "keys Secret mirrored onto the host: /etc/railnet/keys/e2e-ns/fabric 0400 root in a 0700 directory; no key in the log"
host sh -c 'rm -rf /etc/railnet/keys/e2e-ns'
k -n railnet-system delete secret railnet-keys >/dev/null

# ---------------------------------------------------------------------------
say "PF link down"
pf_state() { # pf_state up|down: the link and what the mocked sysfs says
	local carrier=1; [ "$1" = up ] || carrier=0
	host sh -c "echo $1 > $NODE_ROOT/sys/class/net/rne2epf/operstate; echo $carrier > $NODE_ROOT/sys/class/net/rne2epf/carrier"
	host ip link set rne2epf "$1"
}
pf_state down
until_ok 30 is_allocatable e2e-vf 0 || fail "VFs still allocatable with the PF down: $(allocatable e2e-vf)"
metrics | grep -q '^railnet_pool_devices{health="Unhealthy",pool="e2e-vf",resource="railnet.io/e2e-vf"} 4' || fail "metrics do not show 4 Unhealthy VFs"
pass "PF down: railnet.io/e2e-vf allocatable 0, 4 Unhealthy"
pf_state up
until_ok 30 is_allocatable e2e-vf 4 || fail "VFs not back after the PF came up: $(allocatable e2e-vf)"
pass "PF up: railnet.io/e2e-vf allocatable 4 again"

# ---------------------------------------------------------------------------
say "delete the pods"
k delete pod vf-a vf-b vf-c hca-a --wait=true --timeout=60s >/dev/null
until_ok 30 all_vfs_home || fail "VFs back in the host: $(vfs_in_host)/4"
[ "$(records)" = 0 ] || fail "records left: $(records)"
[ "$(leases)" = 0 ] || fail "$(leases) addresses still leased"
pass "deleting the pods returned all 4 VFs (name, MAC, MTU) and freed every address"

# ---------------------------------------------------------------------------
say "DRA: the railnet.io driver's ResourceSlices"
# dra_devices: "name attr=value ..." per railnet.io device published for this node.
dra_devices() {
	k get resourceslices -o json | python3 -c '
import json, sys
node = sys.argv[1]
for s in json.load(sys.stdin)["items"]:
    sp = s["spec"]
    if sp["driver"] != "railnet.io" or sp.get("nodeName") != node:
        continue
    for d in sp.get("devices") or []:
        kv = []
        for k, v in sorted((d.get("attributes") or {}).items()):
            kv.append(("%s=%s" % (k, list(v.values())[0])).lower())
        print(d["name"], " ".join(kv))
' "$NODE_NAME"
}
dra_count() { [ "$(dra_devices | grep -c .)" = "$1" ]; }
dra_has() { dra_devices | grep -q "^$1 "; }
until_ok 60 dra_count 4 || fail "railnet.io ResourceSlices: want 4 devices for $NODE_NAME, have: $(dra_devices)"
devs=$(dra_devices)
for want in \
	"pci-0000-06-00-2 .*k8s.cni.cncf.io/deviceid=0000:06:00.2 k8s.cni.cncf.io/resourcename=railnet.io/e2e-dra railnet.io/gpulink=phb railnet.io/linktype=ether railnet.io/nearestgpu=0000:03:00.0 railnet.io/pfname=rne2edpa railnet.io/pfpciaddress=0000:06:00.0 railnet.io/pool=e2e-dra railnet.io/rail=rail[0-9] railnet.io/rdma=true railnet.io/rdmadevice=mlx5_7 railnet.io/vfindex=0 resource.kubernetes.io/numanode=0 resource.kubernetes.io/pcibusid=0000:06:00.2 resource.kubernetes.io/pcieroot=pci0000:00" \
	"pci-0000-06-00-3 .*railnet.io/vfindex=1 .*resource.kubernetes.io/pcieroot=pci0000:00" \
	"pci-0000-82-00-2 .*railnet.io/nearestgpu=0000:81:00.0 railnet.io/pfname=rne2edpb .*resource.kubernetes.io/pcieroot=pci0000:80" \
	"pci-0000-82-00-3 .*railnet.io/rdmadevice=mlx5_11 .*resource.kubernetes.io/pcibusid=0000:82:00.3 resource.kubernetes.io/pcieroot=pci0000:80"; do
	echo "$devs" | grep -q "^$want" || fail "no railnet.io device like '$want' in: $devs"
done
[ -z "$(allocatable e2e-dra)" ] || fail "the dra pool is also a device plugin resource: railnet.io/e2e-dra allocatable $(allocatable e2e-dra)"
pass "ResourceSlices: 4 VFs of pool e2e-dra with pciBusID/pcieRoot/numaNode, gpuLink/nearestGPU, pf*, vfIndex, rdma*, k8s.cni.cncf.io/*; not a device plugin resource"

# A VF leaves (its PCI function is gone from sysfs), then comes back.
host mv "$NODE_ROOT/sys/bus/pci/devices/0000:82:00.3" "$NODE_ROOT/hidden-0000:82:00.3"
vf_gone() { dra_count 3 && ! dra_has pci-0000-82-00-3; }
until_ok 30 vf_gone || fail "a removed VF is still published: $(dra_devices)"
host mv "$NODE_ROOT/hidden-0000:82:00.3" "$NODE_ROOT/sys/bus/pci/devices/0000:82:00.3"
until_ok 30 dra_count 4 || fail "the VF did not come back: $(dra_devices)"
pass "a VF that leaves sysfs leaves the slices, and comes back with it"
# The PF's link drops: its VFs are not offered; up again: they are.
set_link() { # set_link PF up|down
	local carrier=1; [ "$2" = up ] || carrier=0
	host sh -c "echo $2 > $NODE_ROOT/sys/class/net/$1/operstate; echo $carrier > $NODE_ROOT/sys/class/net/$1/carrier"
	host ip link set "$1" "$2"
}
set_link rne2edpb down
pf_gone() { dra_count 2 && ! dra_has pci-0000-82-00-2 && ! dra_has pci-0000-82-00-3; }
until_ok 30 pf_gone || fail "VFs of a PF whose link is down are still published: $(dra_devices)"
set_link rne2edpb up
until_ok 30 dra_count 4 || fail "VFs not published again after the PF came up: $(dra_devices)"
pass "PF rne2edpb down: its 2 VFs leave the slices; up: back"

# ---------------------------------------------------------------------------
say "DRA: a GPU and a NIC on one PCIe root complex (matchAttribute pcieRoot)"
# A fake GPU driver's slice: gpu-0 and gpu-1 on GPU0's and GPU1's root
# complexes (as the NVIDIA DRA driver would publish them), gpu-2 on a root
# complex with no railnet NIC.
k apply -f - >/dev/null <<EOF
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata: {name: gpu.example.com}
spec:
  selectors: [{cel: {expression: 'device.driver == "gpu.example.com"'}}]
---
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: e2e-fake-gpus}
spec:
  driver: gpu.example.com
  nodeName: $NODE_NAME
  pool: {name: e2e-fake-gpus, generation: 1, resourceSliceCount: 1}
  devices:
  - {name: gpu-0, attributes: {resource.kubernetes.io/pcieRoot: {string: "pci0000:00"}, resource.kubernetes.io/pciBusID: {string: "0000:03:00.0"}}}
  - {name: gpu-1, attributes: {resource.kubernetes.io/pcieRoot: {string: "pci0000:80"}, resource.kubernetes.io/pciBusID: {string: "0000:81:00.0"}}}
  - {name: gpu-2, attributes: {resource.kubernetes.io/pcieRoot: {string: "pci0000:c0"}, resource.kubernetes.io/pciBusID: {string: "0000:c1:00.0"}}}
EOF
# aligned GPU-BDF: a claim for that GPU and any railnet NIC on its root
# complex, and a pod that uses it (the scheduler allocates the claim when
# it places the pod; the pod never runs: no kubelet plugin serves the GPU).
aligned() {
	k apply -f - >/dev/null <<EOF
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {name: aligned-$1, namespace: $NS}
spec:
  devices:
    requests:
    - name: gpu
      exactly:
        deviceClassName: gpu.example.com
        selectors: [{cel: {expression: 'device.attributes["resource.kubernetes.io"].pciBusID == "$2"'}}]
    - name: nic
      exactly: {deviceClassName: e2e-dra.railnet.io}
    constraints:
    - {requests: [gpu, nic], matchAttribute: resource.kubernetes.io/pcieRoot}
EOF
	pod "aligned-$1" "" "{claims: [{name: pair}]}" "[{name: pair, resourceClaimName: aligned-$1}]"
}
allocated_nic() { k get resourceclaim "aligned-$1" -o jsonpath='{.status.allocation.devices.results[?(@.driver=="railnet.io")].device}'; }
has_allocation() { [ -n "$(allocated_nic "$1")" ]; }
root_of() { dra_devices | sed -n "s/^$1 .*resource.kubernetes.io\/pcieroot=\([^ ]*\).*/\1/p"; }
for g in "gpu-0 0000:03:00.0 pci0000:00" "gpu-1 0000:81:00.0 pci0000:80"; do
	read -r name bdf root <<<"$g"
	aligned "$name" "$bdf"
	until_ok 60 has_allocation "$name" || fail "claim aligned-$name not allocated: $(k get resourceclaim aligned-$name -o yaml | tail -20)"
	nic=$(allocated_nic "$name")
	[ "$(root_of "$nic")" = "$root" ] || fail "aligned-$name: NIC $nic is on $(root_of "$nic"), GPU $bdf on $root"
	k delete pod "aligned-$name" --grace-period=0 --force --wait=false >/dev/null 2>&1
	k delete resourceclaim "aligned-$name" --wait=false >/dev/null
	pass "claim for $name ($bdf, $root) + a railnet NIC with matchAttribute pcieRoot: allocated $nic, on $root"
done
aligned gpu-2 0000:c1:00.0
unschedulable() { k get pod aligned-gpu-2 -o jsonpath='{.status.conditions[?(@.type=="PodScheduled")].reason}' | grep -qx Unschedulable; }
until_ok 60 unschedulable || fail "a pod whose GPU has no railnet NIC on its root complex was not refused: $(k get pod aligned-gpu-2 -o yaml | tail -15)"
has_allocation gpu-2 && fail "aligned-gpu-2 was allocated $(allocated_nic gpu-2)"
pass "no railnet NIC shares gpu-2's root complex (pci0000:c0): the pod is Unschedulable, the claim unallocated"
k delete pod aligned-gpu-2 --grace-period=0 --force --wait=false >/dev/null 2>&1
k delete resourceclaim aligned-gpu-2 --wait=false >/dev/null
k delete resourceslice e2e-fake-gpus >/dev/null
k delete deviceclass gpu.example.com >/dev/null

# ---------------------------------------------------------------------------
say "DRA: a pod's NIC claim, attached by Multus and railnet"
k apply -f - >/dev/null <<EOF
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: e2e-nic, namespace: $NS}
spec:
  spec:
    devices:
      requests:
      - name: nic
        exactly: {deviceClassName: e2e-dra.railnet.io}
EOF
dra_pod() { pod "$1" e2e-dra "{claims: [{name: nic}]}" "[{name: nic, resourceClaimTemplateName: e2e-nic}]"; }
dra_checkpoints() { host sh -c 'ls /var/lib/cni/railnet/dra 2>/dev/null' | grep -c '\.json$' || true; }
dra_cdi_specs() { host sh -c 'ls /var/run/cdi 2>/dev/null' | grep -c '^dra\.railnet\.io-' || true; }
dra_pod dra-a
ready dra-a || fail "pod dra-a not Ready: $(k describe pod dra-a | tail -8)"
claim=$(k get pod dra-a -o jsonpath='{.status.resourceClaimStatuses[0].resourceClaimName}')
nic=$(k get resourceclaim "$claim" -o jsonpath='{.status.allocation.devices.results[0].device}')
bdf=$(echo "$nic" | sed 's/^pci-\([0-9a-f]*\)-\([0-9a-f]*\)-\([0-9a-f]*\)-\([0-9a-f]\)$/\1:\2:\3.\4/')
env_out=$(pod_env dra-a)
echo "$env_out" | grep -qx "PCIDEVICE_RAILNET_IO_E2E_DRA=$bdf" || fail "dra-a env: $(echo "$env_out" | grep -E 'PCIDEVICE|NCCL'), allocated $nic"
echo "$env_out" | grep -Eq '^NCCL_IB_HCA==mlx5_([78]|1[01])$' || fail "dra-a NCCL_IB_HCA: $(echo "$env_out" | grep NCCL)"
k exec dra-a -- ls -l /dev/infiniband | grep -Eq '^c.* uverbs(8|9|10|11)$' || fail "dra-a has no uverbs character device: $(k exec dra-a -- ls -l /dev/infiniband)"
k exec dra-a -- ls -l /dev/infiniband | grep -Eq '^c.* rdma_cm$' || fail "dra-a has no rdma_cm"
d_ip=$(net1_ip dra-a)
case "$d_ip" in 10.79.0.*) ;; *) fail "dra-a net1 address '$d_ip'" ;; esac
d_mac=$(k exec dra-a -- cat /sys/class/net/net1/address)
case "$bdf" in 0000:06:00.*) vfl=rne2eda$((${bdf##*.} - 2)) ;; *) vfl=rne2edb$((${bdf##*.} - 2)) ;; esac
host ip link show "$vfl" >/dev/null 2>&1 && fail "$vfl ($bdf) is still in the host"
pass "dra-a: claim $claim got $nic; env PCIDEVICE_RAILNET_IO_E2E_DRA=$bdf and NCCL_IB_HCA, RDMA character devices (CDI); net1 $d_ip is $vfl, moved by railnet from the claim (no deviceID from Multus)"
netdata() { k get resourceclaim "$claim" -o jsonpath='{range .status.devices[*]}{.driver} {.device} {.networkData.interfaceName} {.networkData.ips} {.networkData.hardwareAddress}{end}'; }
netdata_ok() { netdata | grep -q "^railnet.io $nic net1 .*\"$d_ip/24\".* $d_mac$"; }
until_ok 30 netdata_ok || fail "claim $claim status.devices: '$(netdata)', want railnet.io $nic net1 $d_ip/24 $d_mac"
pass "claim $claim status.devices[].networkData: $(netdata)"
[ "$(dra_checkpoints)" = 1 ] && [ "$(dra_cdi_specs)" = 1 ] || fail "checkpoints $(dra_checkpoints), CDI specs $(dra_cdi_specs); want 1 and 1"

claim_uid=$(k get resourceclaim "$claim" -o jsonpath='{.metadata.uid}')
say "restart the DaemonSet pod between Prepare and the pod's deletion"
# name=generation/resourceVersion of every railnet.io slice: a restarted
# agent whose scan finds the same devices writes nothing (its comparison
# matches what the apiserver stored).
slice_versions() { k get resourceslices --field-selector spec.driver=railnet.io -o jsonpath='{range .items[*]}{.metadata.name}={.spec.pool.generation}/{.metadata.resourceVersion} {end}'; }
before=$(slice_versions)
[ -n "$before" ] || fail "no railnet.io slices listed by spec.driver"
old=$(agent_pod)
k -n railnet-system delete pod "$old" --wait=true >/dev/null
until_ok 60 new_agent "$old" || fail "no new agent pod"
until_ok 90 ds_ready || fail "DaemonSet not Ready after its pod restarted"
until_ok 60 dra_count 4 || fail "slices after the restart: $(dra_devices)"
sleep 6 # a reconciler pass or more: the kubelet lists the claim's device for dra-a
k exec dra-a -- ip link show net1 >/dev/null || fail "dra-a lost net1 after the agent restart"
[ "$(slice_versions)" = "$before" ] || fail "the restarted agent rewrote unchanged slices: before '$before', after '$(slice_versions)'"
[ "$(dra_checkpoints)" = 1 ] && [ "$(dra_cdi_specs)" = 1 ] || fail "after the agent restart: checkpoints $(dra_checkpoints), CDI specs $(dra_cdi_specs); want 1 and 1 (a container restart needs its CDI devices)"
k -n railnet-system logs "$(agent_pod)" -c agent | grep '"msg":"reconciler released' | grep -q '"pod":"default/dra-a"' && fail "the reconciler released dra-a's VF"
k delete pod dra-a --wait=true --timeout=60s >/dev/null
vf_home() { host ip -o link show "$vfl" 2>/dev/null | grep -q "link/ether 02:e2:e0:00:0[23]:1[01] "; }
until_ok 30 vf_home || fail "$vfl did not come back to the host"
no_dra_state() { [ "$(dra_checkpoints)" = 0 ] && [ "$(dra_cdi_specs)" = 0 ]; }
until_ok 30 no_dra_state || fail "after the pod's deletion: checkpoints $(dra_checkpoints), CDI specs $(dra_cdi_specs)"
k -n railnet-system logs "$(agent_pod)" -c agent | grep -q "\"msg\":\"DRA: unprepared\".*\"uid\":\"$claim_uid\"" || fail "the restarted agent did not unprepare $claim ($claim_uid)"
claim_gone() { ! k get resourceclaim "$claim" >/dev/null 2>&1; }
until_ok 30 claim_gone || fail "claim $claim not deleted with its pod"
pass "the restarted agent left the unchanged slices as they were and unprepared $claim from its checkpoint: $vfl back in the host, checkpoint and CDI spec removed, claim gone"

say "DRA: resources.limits railnet.io/e2e-dra through the DeviceClass's extendedResourceName"
test_pod ext-a e2e-dra
ready ext-a || fail "pod ext-a not Ready: $(k describe pod ext-a | tail -8)"
pod_env ext-a | grep -Eq '^PCIDEVICE_RAILNET_IO_E2E_DRA=0000:(06|82):00\.[23]$' || fail "ext-a env: $(pod_env ext-a | grep -E 'PCIDEVICE|NCCL')"
ext_claim=$(k get pod ext-a -o jsonpath='{.status.extendedResourceClaimStatus.resourceClaimName}')
pass "ext-a (limits railnet.io/e2e-dra: 1) got $(pod_env ext-a | sed -n 's/^PCIDEVICE_RAILNET_IO_E2E_DRA=//p') through claim ${ext_claim:-?}"
k delete pod ext-a --wait=true --timeout=60s >/dev/null
until_ok 30 no_dra_state || fail "after ext-a: checkpoints $(dra_checkpoints), CDI specs $(dra_cdi_specs)"

# The agent's identity can write its own node's slices and this driver's
# claim status, nothing else.
sa=(--as=system:serviceaccount:railnet-system:railnet-node)
can yes create resourceslices.resource.k8s.io "" "${sa[@]}"
can no watch resourceslices.resource.k8s.io "" "${sa[@]}"
can yes update resourceclaims.resource.k8s.io default "${sa[@]}" --subresource=status
can no patch resourceclaims.resource.k8s.io default "${sa[@]}" --subresource=status
can yes get resourceclaims.resource.k8s.io default "${sa[@]}"
can no update resourceclaims.resource.k8s.io default "${sa[@]}"
can no get secrets railnet-system "${sa[@]}"
can no list pods default "${sa[@]}"
can no create deviceclasses.resource.k8s.io "" "${sa[@]}"
out=$(k create --dry-run=server "${sa[@]}" --as-user-extra=authentication.kubernetes.io/node-name=not-"$NODE_NAME" -f - 2>&1 <<EOF
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: e2e-foreign}
spec: {driver: railnet.io, nodeName: $NODE_NAME, pool: {name: x, generation: 1, resourceSliceCount: 1}}
EOF
) && fail "the agent of another node could write $NODE_NAME's slice: $out"
echo "$out" | grep -q "may only write its own node" || fail "a foreign slice refused for another reason: $out"
pass "RBAC: the agent may write ResourceSlices and read claims, not update them, read secrets or list pods; a slice of another node is refused (ValidatingAdmissionPolicy)"

# ---------------------------------------------------------------------------
say "every manifest in deployments/ against the real apiserver (--dry-run=server)"
# The secure namespaces are applied for real (their Roles live in them).
out=$(k apply -k "$repo/deployments/examples/secure-ai" 2>&1) || fail "deployments/examples/secure-ai rejected: $out"
for d in base overlays/e2e overlays/dgx-h100; do
	out=$(k kustomize "$repo/deployments/$d" | k apply --dry-run=server -f - 2>&1) || fail "deployments/$d rejected: $out"
done
for f in "$repo"/deployments/examples/*.yaml; do
	out=$(k apply --dry-run=server -f "$f" 2>&1) || fail "$f rejected: $out"
done
pass "deployments/{base,overlays/*,examples/*} accepted by the apiserver"
for ns in ai-inference ai-training; do
	out=$(k -n $ns run privileged --image=localhost/railnet-e2e/testpod:1 --image-pull-policy=Never --restart=Never \
		--overrides='{"spec":{"containers":[{"name":"privileged","image":"localhost/railnet-e2e/testpod:1","imagePullPolicy":"Never","securityContext":{"privileged":true}}]}}' 2>&1) &&
		fail "$ns accepted a privileged pod"
	echo "$out" | grep -q 'violates PodSecurity' || fail "$ns refused a privileged pod for another reason: $out"
done
pass "ai-inference (restricted) and ai-training (baseline) refuse a privileged pod"

ds=(--as=dana --as-group=ai:data-scientists)
ml=(--as=max --as-group=ai:ml-engineers)
sa=(--as=system:serviceaccount:ai-training:training-job)
can yes create jobs.batch ai-training "${ds[@]}"
can yes get pods/log ai-training "${ds[@]}"
can yes list network-attachment-definitions.k8s.cni.cncf.io ai-training "${ds[@]}"
can no create network-attachment-definitions.k8s.cni.cncf.io ai-training "${ds[@]}"
can no create pods/exec ai-training "${ds[@]}"
can no get secrets ai-training "${ds[@]}"
can yes list deployments.apps ai-inference "${ds[@]}"
can no create deployments.apps ai-inference "${ds[@]}"
can no create rolebindings.rbac.authorization.k8s.io ai-training "${ds[@]}"
can yes create deployments.apps ai-inference "${ml[@]}"
can yes create network-attachment-definitions.k8s.cni.cncf.io ai-training "${ml[@]}"
can yes delete jobs.batch ai-training "${ml[@]}"
can no get secrets ai-inference "${ml[@]}"
can no create rolebindings.rbac.authorization.k8s.io ai-inference "${ml[@]}"
can no patch namespaces ai-inference "${ml[@]}"
can no create pods/exec ai-inference "${ml[@]}"
can yes list pods ai-training "${sa[@]}"
can yes list endpoints ai-training "${sa[@]}"
can no create pods ai-training "${sa[@]}"
can no get secrets ai-training "${sa[@]}"
can no list pods ai-inference "${sa[@]}"
for who in "${ds[*]}" "${ml[*]}" "${sa[*]}"; do
	# shellcheck disable=SC2086
	can no '*' '*' ai-training $who
done
pass "kubectl auth can-i: data scientist, ML engineer and training-job SA can what their Roles say, and no more"
k delete -k "$repo/deployments/examples/secure-ai" --wait=false >/dev/null 2>&1 || true

say "suite passed in $((SECONDS - started))s"
