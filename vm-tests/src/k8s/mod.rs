//! Kubernetes inside the guest for the `kubernetes` suite: the real API server
//! ([`cluster`]), and a fake kubelet + containerd ([`kubelet`]) that binds pods to this node,
//! lays out their cgroups ([`cgroup`]) and runs commands in their containers; [`fleet`]
//! makes many pods at once for the benchmarks; [`rootfs`] gives a container a root of its own.

pub mod cgroup;
pub mod cluster;
pub mod fleet;
pub mod kubelet;
pub mod rootfs;

pub use cluster::{Applied, Cluster, NODE, cluster, k8s_fixture, wait_until};
pub use fleet::{Fleet, FleetPod};
pub use kubelet::FakePod;
pub use rootfs::ContainerRoot;
