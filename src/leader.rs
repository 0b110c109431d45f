//! Leader election on a Lease, so that of several replicas only one writes at a time.

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// How long a lease lasts without renewal: the longest a dead leader blocks a successor.
const LEASE_SECONDS: u64 = 15;
/// Renewal happens this long before the lease would lapse.
const GRACE_SECONDS: u64 = 5;

pub struct Leadership {
    leading: watch::Receiver<bool>,
    task: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
    loss_watch: Option<JoinHandle<()>>,
}

/// Starts campaigning for `lease_name` in `namespace` as `identity`.
pub async fn campaign(
    client: Client,
    lease_name: &str,
    namespace: &str,
    identity: &str,
) -> Result<Leadership, LeaseManagerError> {
    let manager = LeaseManagerBuilder::new(client, lease_name)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(LEASE_SECONDS)
        .with_grace(GRACE_SECONDS)
        .with_field_manager("toma")
        .build()
        .await?;
    let (leading, task) = manager.watch().await;
    Ok(Leadership {
        leading,
        task,
        loss_watch: None,
    })
}

impl Leadership {
    /// Waits until this instance leads. False if campaigning stopped.
    pub async fn acquired(&mut self) -> bool {
        let acquired = self.leading.wait_for(|leading| *leading).await.is_ok();
        if acquired {
            info!("leading");
        }
        acquired
    }

    /// Calls `on_loss` once if this instance stops leading (or campaigning fails).
    pub fn on_loss(&mut self, on_loss: impl FnOnce() + Send + 'static) {
        let mut leading = self.leading.clone();
        self.loss_watch = Some(tokio::spawn(async move {
            let _ = leading.wait_for(|leading| !*leading).await;
            on_loss();
        }));
    }

    pub fn is_leading(&self) -> bool {
        *self.leading.borrow()
    }

    /// Stops campaigning and hands the lease over at once rather than letting it lapse.
    pub async fn release(self) {
        // The lease is handed over once every receiver is gone, the loss watch's included.
        if let Some(loss_watch) = self.loss_watch {
            loss_watch.abort();
            let _ = loss_watch.await;
        }
        drop(self.leading);
        match self.task.await {
            Ok(Ok(_)) => info!("lease released"),
            Ok(Err(error)) => warn!(%error, "could not release the lease"),
            Err(error) => warn!(%error, "lease task failed"),
        }
    }
}
