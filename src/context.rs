//! What every reconcile shares.

use std::sync::Arc;

use kube::Client;

use crate::cloudflare::CloudflareClient;
use crate::echoes::Echoes;
use crate::events::Events;
use crate::keys::KeyCache;
use crate::metrics::Metrics;

pub struct Context {
    pub client: Client,
    pub cloudflare: CloudflareClient,
    pub events: Events,
    pub metrics: Arc<Metrics>,
    pub keys: KeyCache,
    /// Versions of Secrets toma wrote, so that their watch events do not wake it again.
    pub echoes: Arc<Echoes>,
}
