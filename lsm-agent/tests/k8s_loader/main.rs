//! The agent's TracingPolicy loader and its workloads (pods joined with cgroups, which scope
//! the policies) against a real kube-apiserver and etcd, with the harness of `tests/k8s`
//! (`cluster.rs`: one API server for this test binary, stopped when it exits).
//!
//! A binary of its own: its objects would otherwise show up in the watcher tests of
//! `tests/k8s`, which check the exact sequence of events their own objects cause.

// Shared with `tests/k8s`; this binary uses only part of it.
#[allow(dead_code)]
#[path = "../k8s/cluster.rs"]
mod cluster;
mod loader;
mod workloads;
