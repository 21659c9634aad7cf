#!/bin/bash
# Sourced by scripts/demo-guest.sh: the Kubernetes half of the getting-started guide. A real
# kube-apiserver + etcd run in this VM, the agent watches them, the guide's policies arrive with
# `kubectl apply -n default`, and a fake kubelet starts pod default/xwing: its cgroups laid out
# as the kubelet's systemd driver and containerd lay them out, its status patched as the kubelet
# patches it. `kubectl exec xwing -- CMD` becomes "run CMD inside xwing's container cgroup".
# Uses say, $AGENT, $LSMCTL and $Q from demo-guest.sh.

K8S_TOOLS=../shared/tools/k8s
K8S_RUN=/dev/shm/lsm-demo-k8s
K8S_NODE=lsm-vmtest-node
K8S_FIX=vm-tests/fixtures/k8s
export KUBECONFIG=$K8S_RUN/kubeconfig KUBECACHEDIR=$K8S_RUN/kube-cache
# kubectl's own validation needs the server's OpenAPI document, which kubectl cannot read from
# this API server build; the server still checks every object against the CRD's schema.
VALIDATE=--validate=false

# Starts etcd + kube-apiserver in the background (LEAN=1, everything on tmpfs); k8s_wait waits.
k8s_start() {
  mkdir -p "$K8S_RUN"
  RUN_DIR=$K8S_RUN LEAN=1 READY_TIMEOUT=300 "$K8S_TOOLS/start.sh" >"$K8S_RUN/start.log" 2>&1 &
  K8S_START_PID=$!
}

k8s_wait() {
  wait "$K8S_START_PID" || { echo "kube-apiserver did not start:"; cat "$K8S_RUN/start.log"; tail -20 "$K8S_RUN/kube-apiserver.log"; return 1; }
  sed 's/^/    /' "$K8S_RUN/start.log"
  kubectl apply --validate=false -f deploy/helm/lsm-agent/crds >/dev/null &&
    kubectl wait --for=condition=established --timeout=120s \
      crd/tracingpolicies.cilium.io crd/tracingpoliciesnamespaced.cilium.io >/dev/null &&
    kubectl apply --validate=false -f "$K8S_FIX/node.yaml" >/dev/null
}

k8s_stop() {
  RUN_DIR=$K8S_RUN "$K8S_TOOLS/stop.sh" --purge >/dev/null 2>&1
}

# The fake kubelet: Pod object, pod cgroup, container scope, status with the container ID.
XWING_CG=
start_xwing() {
  local uid hex pod_cg
  uid=$(sed -e "s/NAME/xwing/g" -e "s/NODE/$K8S_NODE/" "$K8S_FIX/pod.yaml" |
    kubectl create --validate=false -n default -f - -o 'jsonpath={.metadata.uid}') || return 1
  hex=${uid//-/}
  XWING_ID=${hex}cccccccccccccccccccccccccccccccc
  pod_cg=/sys/fs/cgroup/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${uid//-/_}.slice
  XWING_CG=$pod_cg/cri-containerd-$XWING_ID.scope
  mkdir -p "$pod_cg" && mkdir "$XWING_CG" || return 1
  kubectl patch pod xwing -n default --subresource=status --type=merge \
    -p "$(sed "s/CONTAINER_ID/$XWING_ID/" "$K8S_FIX/status-running.json")" >/dev/null
}

# `kubectl exec xwing -- CMD...`: a shell joins the container's cgroup, then execs CMD.
in_xwing() {
  sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$XWING_CG" "$@"
}

stop_xwing() {
  [ -n "$XWING_CG" ] || return 0
  echo 1 > "$XWING_CG/cgroup.kill" 2>/dev/null
  sleep 0.5
  rmdir "$XWING_CG" "$(dirname "$XWING_CG")" 2>/dev/null
  kubectl delete pod xwing -n default --grace-period=0 --force --wait=false >/dev/null 2>&1
}

# The story; the agent was started with --enable-k8s-api.
k8s_story() {
  say "kubectl get nodes,crds   (a real kube-apiserver v1.36 + etcd inside this VM)"
  kubectl get nodes,crds

  say "a fake kubelet starts pod default/xwing (no container runtime: its container is a cgroup)"
  start_xwing || { echo "could not start the pod"; return 1; }
  kubectl get pods -n default -o wide
  echo "    container cgroup: ${XWING_CG#/sys/fs/cgroup}"

  say "lsmctl getevents -o compact --pods xwing"
  "$LSMCTL" getevents -o compact --color always --pods xwing </dev/null &
  local stream=$!
  sleep 3

  say "PODCIDR=10.0.0.0/16 SERVICECIDR=10.96.0.0/12; envsubst < network_egress_cluster_enforce.yaml | kubectl apply -n default -f -"
  PODCIDR=10.0.0.0/16 SERVICECIDR=10.96.0.0/12 envsubst < "$Q/network_egress_cluster_enforce.yaml" |
    kubectl apply $VALIDATE -n default -f -
  say "kubectl apply -n default -f file_monitoring_enforce.yaml"
  kubectl apply $VALIDATE -n default -f "$Q/file_monitoring_enforce.yaml"
  # The agent picks the objects up from its watch.
  for _ in $(seq 1 120); do
    [ "$("$LSMCTL" tracingpolicy list | grep -cE ' (enforce-network-activity-outside-cluster-cidr-range|file-monitoring-filtered) ')" -ge 2 ] && break
    sleep 0.5
  done
  "$LSMCTL" tracingpolicy list

  say "kubectl exec -ti xwing -- bash -c 'curl -sS http://198.51.100.1/'   (outside the cluster)"
  in_xwing bash -c 'curl -sS http://198.51.100.1/'; echo "exit code: $?"
  sleep 3
  say "kubectl exec -ti xwing -- cat /etc/shadow"
  in_xwing cat /etc/shadow; echo "exit code: $?"
  sleep 3
  say "on the node, outside any pod: curl -sS http://198.51.100.1/; cat /etc/shadow >/dev/null   (untouched)"
  curl -sS http://198.51.100.1/; echo "exit code: $? (7: no route, the connect was allowed)"
  cat /etc/shadow >/dev/null; echo "exit code: $?"
  sleep 3

  kubectl delete -n default tracingpolicynamespaced \
    enforce-network-activity-outside-cluster-cidr-range file-monitoring-filtered --wait=false
  stop_xwing
  kill "$stream" 2>/dev/null
}
