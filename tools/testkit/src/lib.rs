//! What toma's end-to-end, WebRTC, soak and propagation tests share: a namespace of their own on the local
//! cluster (`hack/cluster.sh up`), the fake Cloudflare in-process, the real `toma` binary
//! watching that namespace, kubectl and helm with the cluster's kubeconfig, and a consumer pod
//! on the local node that reads the Secret from a mounted volume.
//!
//! Tests run on a multi-threaded runtime: kubectl calls block a thread while the in-process
//! fake Cloudflare must keep answering.

mod command;
mod consumer;
mod env;
mod objects;
mod tls;
mod wait;

pub use command::{apply, kubeconfig, kubectl, run, stdout_or_stderr};
pub use consumer::{
    MOUNT_PATH, Read, SecretVersions, Version, consumer_pod, consumer_reads, first_reads, parse_reads,
    start_consumer_pod,
};
pub use env::{Env, SHORT_LIVED, Toma, free_port, log_path, metric, target_dir, toma_binary};
pub use objects::{
    apply_cloudflare_key, apply_cloudflare_turn_key, apply_credential, client, delete_namespace,
    force_rotation, start_fake_cloudflare,
};
pub use tls::TestCa;
pub use wait::{eventually, ready, text, wait_for_reason, wait_until};

/// The Cloudflare key ID the fake knows, with [`TOKEN`].
pub const KEY_ID: &str = "0123456789abcdef0123456789abcdef";
/// The API token of [`KEY_ID`].
pub const TOKEN: &str = "e2e-api-token-0123456789";
