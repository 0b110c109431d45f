//! What every reconcile shares.

use std::sync::Arc;

use kube::Client;

use crate::events::Events;
use crate::key_resolver::KeyResolver;
use crate::known_secrets::KnownSecrets;
use crate::metrics::Metrics;
use crate::own_writes::OwnWrites;
use crate::provider::Providers;
use crate::rollout::Restarts;

pub struct Context {
    pub client: Client,
    pub providers: Providers,
    pub events: Events,
    pub metrics: Arc<Metrics>,
    /// Keys read recently; the key watch drops those that change.
    pub keys: Arc<KeyResolver>,
    /// Which of toma's Secrets exist, so that a new TurnCredential's is not read first.
    pub known_secrets: Arc<KnownSecrets>,
    /// toma's own Secret writes, so that their watch events do not wake it again.
    pub own_writes: Arc<OwnWrites>,
    /// Workload restarts waiting to be sent together.
    pub restarts: Restarts,
}
