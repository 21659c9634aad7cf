//! Kubernetes tests against a real kube-apiserver (v1.36) and etcd, started once for this test
//! binary from `../shared/tools/k8s` (see its README) and stopped when the binary exits, even
//! after a failure. No root, no kernel, no kubelet: the tests stand in for the kubelet by
//! patching pod status.
//!
//! The API server runs with RBAC, and the watchers under test use the ServiceAccount token of
//! the agent's own manifest (deploy/kubernetes/lsm-agent.yaml), so the ClusterRole is proven
//! to be enough.
//!
//! etcd (Debian's `etcd-server`), `kubectl`, `zstd`, `curl` and `openssl` must be installed
//! (`scripts/setup.sh`); if the cluster cannot start, every test fails.

mod cluster;
mod helm;
mod pods;
mod policies;
mod rbac;
