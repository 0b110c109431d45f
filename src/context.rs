//! What every reconcile shares.

use std::sync::Arc;

use kube::Client;

use crate::events::Events;
use crate::key_resolver::KeyResolver;
use crate::metrics::Metrics;
use crate::own_writes::OwnWrites;
use crate::provider::Providers;
use crate::rollout::Restarts;

pub struct Context {
    pub client: Client,
    pub providers: Providers,
    pub events: Events,
    pub metrics: Arc<Metrics>,
    pub keys: KeyResolver,
    /// toma's own Secret writes, so that their watch events do not wake it again.
    pub own_writes: Arc<OwnWrites>,
    /// Workload restarts waiting to be sent together.
    pub restarts: Restarts,
}
