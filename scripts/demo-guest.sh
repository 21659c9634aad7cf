#!/bin/bash
# Runs inside the demo VM: starts the agent with the quickstart policy, streams the compact
# events, and replays the getting-started file and network stories on the node; then the
# guide's Kubernetes story (scripts/demo-k8s.sh) with a kube-apiserver started meanwhile in
# the background: `kubectl apply -n default`, pod default/xwing.
set -u
cd "$(dirname "$0")/.."
# Error messages (curl's, kubectl's) belong in the story too, also when it is logged.
exec 2>&1
# shellcheck source=scripts/demo-k8s.sh
. scripts/demo-k8s.sh
trap k8s_stop EXIT
AGENT=target/release/lsm-agent
LSMCTL=target/release/lsmctl
Q=../shared/testdata/tetragon-quickstart
B=$'\e[1m'; N=$'\e[0m'
say() { printf '\n%s==> %s%s\n' "$B" "$*" "$N"; }

case ",$(cat /sys/kernel/security/lsm)," in
  *,bpf,*) ;;
  *) echo "BPF LSM is not active in the demo VM"; exit 1;;
esac
say "kernel $(uname -r), active LSMs: $(cat /sys/kernel/security/lsm)"
echo "original" > /etc/demo.conf

# Starts while the agent verifies its programs.
k8s_start

say "lsm-agent --tracing-policy $Q/file_monitoring_enforce.yaml"
"$AGENT" --tracing-policy "$Q/file_monitoring_enforce.yaml" > >(sed 's/^/    [agent] /') 2>&1 &
AGENT_PID=$!
for _ in $(seq 1 600); do "$LSMCTL" status >/dev/null 2>&1 && break; sleep 0.5; done
"$LSMCTL" status || { echo "agent did not become ready"; exit 1; }
"$LSMCTL" tracingpolicy list
# Before the event stream starts: start.sh's readiness polls (curl, cat) would show in it.
say "etcd + kube-apiserver (started meanwhile, for the Kubernetes part below)"
k8s_wait || exit 1

say "lsmctl getevents -o compact   (events are printed as they arrive)"
"$LSMCTL" getevents -o compact --color always --process 'cat|bash|curl' </dev/null &
NODE_STREAM=$!
sleep 5

say "\$ cat /etc/shadow"
cat /etc/shadow; echo "exit code: $?"
sleep 3

say "\$ bash -c 'echo foo >> bar; cat bar'     (in a scratch directory: allowed)"
mkdir -p /tmp/demo && cd /tmp/demo && bash -c 'echo foo >> bar; cat bar'; echo "exit code: $?"
cd - >/dev/null
sleep 3

say "\$ bash -c 'echo evil >> /etc/demo.conf'   (write under /etc)"
bash -c 'echo evil >> /etc/demo.conf'; echo "exit code: $?; /etc/demo.conf still reads: $(cat /etc/demo.conf)"
sleep 4

say "PODCIDR=10.0.0.0/16 SERVICECIDR=10.96.0.0/12 lsmctl tracingpolicy add $Q/network_egress_cluster_enforce.yaml"
PODCIDR=10.0.0.0/16 SERVICECIDR=10.96.0.0/12 "$LSMCTL" tracingpolicy add "$Q/network_egress_cluster_enforce.yaml"
"$LSMCTL" tracingpolicy list
ip addr add 10.0.0.5/32 dev lo 2>/dev/null
sleep 2

say "\$ curl -sS --max-time 3 https://198.51.100.1/   (outside the cluster: killed before any packet leaves)"
curl -sS --max-time 3 https://198.51.100.1/; echo "exit code: $?"
sleep 3

say "\$ curl -sS --max-time 3 http://10.0.0.5:9/   (inside the pod CIDR: allowed; nothing listens, so refused)"
curl -sS --max-time 3 http://10.0.0.5:9/; echo "exit code: $?"
sleep 4
kill "$NODE_STREAM" 2>/dev/null

say "Kubernetes: the agent restarts as a node of the cluster running in this VM"
kill -TERM "$AGENT_PID"
for _ in $(seq 1 100); do kill -0 "$AGENT_PID" 2>/dev/null || break; sleep 0.2; done
# A stopped agent's programs stay pinned and keep enforcing (docs/modes.md): the node-wide
# policies above would hold until the next agent takes over. This part starts afresh.
say "lsm-agent --unload   (a stopped agent keeps enforcing; lift its node-wide policies)"
"$AGENT" --unload
say "lsm-agent --enable-k8s-api --k8s-kubeconfig-path \$KUBECONFIG --node-name $K8S_NODE"
"$AGENT" --enable-k8s-api --k8s-kubeconfig-path "$KUBECONFIG" --node-name "$K8S_NODE" 2>&1 |
  sed 's/^/    [agent] /' &
for _ in $(seq 1 600); do "$LSMCTL" status >/dev/null 2>&1 && break; sleep 0.5; done
"$LSMCTL" status || { echo "agent did not become ready"; exit 1; }
k8s_story
say "done"
