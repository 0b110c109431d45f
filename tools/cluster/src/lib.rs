//! The local Kubernetes cluster that toma's tests, benchmarks and demo run on: etcd,
//! kube-apiserver, kube-controller-manager and kube-scheduler on 127.0.0.1, and one real node
//! (containerd, runc and the kubelet in a private mount namespace, pods on an isolated bridge).
//! Nothing is downloaded here: the binaries come from `hack/build-control-plane.sh` and
//! `hack/build-node.sh`, which build them once from pinned upstream modules.
//!
//! [`Cluster`] is the API: [`Cluster::up`], [`Cluster::down`], [`Cluster::restart_apiserver`],
//! [`Cluster::restart_kubelet`], [`Cluster::import_image`]. `hack/cluster.sh` runs the
//! `toma-cluster` binary, which is a thin command line over it.

mod cluster;
pub mod config;
mod control_plane;
mod error;
mod kubeconfig;
pub mod layout;
mod node;
mod pki;
pub mod process;
pub mod relay;
mod report;
mod teardown;
mod wait;

pub use cluster::{Cluster, PORTS, Status};
pub use config::Settings;
pub use error::{Error, Result};
pub use layout::Layout;
