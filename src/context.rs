//! What every reconcile shares.

use std::sync::Arc;

use kube::Client;
use kube::runtime::events::Recorder;

use crate::cloudflare::CloudflareClient;
use crate::keys::KeyCache;
use crate::metrics::Metrics;

pub struct Context {
    pub client: Client,
    pub cloudflare: CloudflareClient,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub keys: KeyCache,
}
