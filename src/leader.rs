//! Leader election on a Lease, so that of several replicas only one writes at a time.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::secret::short_hash;

/// How long a lease lasts without renewal: the longest a dead leader blocks a successor.
const LEASE_SECONDS: u64 = 15;
/// Renewal happens this long before the lease would lapse.
const GRACE_SECONDS: u64 = 5;

pub struct Leadership {
    leading: watch::Receiver<bool>,
    task: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
    loss_watch: Option<JoinHandle<()>>,
}

/// How often a standby reads the Lease to see whether it is free. controller-runtime's standbys
/// retry every 2 s; one GET a second per standby is cheap, and a released lease changes hands
/// within about a second instead of when its last renewal would have lapsed.
const RETRY_PERIOD: Duration = Duration::from_secs(1);

/// Waits until this instance leads `lease_name` in `namespace` as `identity`.
///
/// A standby only reads the Lease until it is free (released, lapsed or absent), then competes
/// for it. Several may find it free at once (a standby and the pod replacing the leader, or three
/// or more replicas): the API server lets only one take it (see [`field_manager`]), and the
/// others wait as the lease manager does, until the winner's lease would lapse.
pub async fn lead(
    client: Client,
    lease_name: &str,
    namespace: &str,
    identity: &str,
) -> Result<Leadership, LeaseManagerError> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    wait_until_free(&leases, lease_name).await?;
    let manager = LeaseManagerBuilder::new(client, lease_name)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(LEASE_SECONDS)
        .with_grace(GRACE_SECONDS)
        .with_field_manager(field_manager(identity))
        .build()
        .await?;
    let (mut leading, task) = manager.watch().await;
    if leading.wait_for(|leading| *leading).await.is_err() {
        // The manager stopped before it could lead: its task holds the reason.
        return Err(match task.await {
            Ok(Err(error)) => error,
            Ok(Ok(_)) => LeaseManagerError::InconsistentState("leader election stopped".into()),
            Err(join) => LeaseManagerError::InconsistentState(format!("leader election failed: {join}")),
        });
    }
    info!("leading");
    Ok(Leadership {
        leading,
        task,
        loss_watch: None,
    })
}

/// Longest field manager name the API server accepts.
const MAX_FIELD_MANAGER: usize = 128;

/// The field manager this instance takes the Lease with: one of its own. The lease manager takes
/// a free Lease with a server-side apply of `holderIdentity`, and only a field owned by another
/// manager makes a second apply conflict; with one manager for every replica, two that found
/// the Lease free together would both take it and both lead.
fn field_manager(identity: &str) -> String {
    let own = format!("toma-{identity}");
    if own.len() <= MAX_FIELD_MANAGER {
        own
    } else {
        format!("toma-{}", short_hash(identity.as_bytes()))
    }
}

/// Returns once the Lease is free. Read errors are retried, except a refusal: without the right
/// to read its Lease this instance could never lead, which is worth failing for.
async fn wait_until_free(leases: &Api<Lease>, lease_name: &str) -> Result<(), LeaseManagerError> {
    loop {
        match leases.get_opt(lease_name).await {
            Ok(lease) if is_free(lease.as_ref(), Timestamp::now()) => return Ok(()),
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_forbidden() => {
                return Err(kube::Error::Api(status).into());
            }
            Err(error) => warn!(%error, "cannot read the Lease; trying again"),
        }
        tokio::time::sleep(RETRY_PERIOD).await;
    }
}

/// Whether nobody holds `lease` at `now`: it is absent, has no holder, or its last renewal has
/// lapsed.
fn is_free(lease: Option<&Lease>, now: Timestamp) -> bool {
    let Some(spec) = lease.and_then(|lease| lease.spec.as_ref()) else {
        return true;
    };
    if spec.holder_identity.as_deref().unwrap_or_default().is_empty() {
        return true;
    }
    let duration = SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(0).into());
    match spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) {
        Some(renewed) => renewed.0 + duration < now,
        None => true,
    }
}

impl Leadership {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: i64, seconds: i32) -> Lease {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "toma"},
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": seconds,
                "renewTime": Timestamp::from_second(renewed).unwrap().to_string(),
            },
        }))
        .unwrap()
    }

    #[test]
    fn a_lease_is_free_when_absent_released_or_lapsed() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let at = now.as_second();
        assert!(is_free(None, now), "no Lease yet");
        assert!(is_free(Some(&lease("", at, 15)), now), "released");
        assert!(is_free(Some(&lease("toma-0", at - 16, 15)), now), "lapsed");
        assert!(!is_free(Some(&lease("toma-0", at - 14, 15)), now), "held");
        assert!(!is_free(Some(&lease("toma-0", at, 15)), now), "just renewed");
    }

    #[test]
    fn each_instance_takes_the_lease_as_a_field_manager_of_its_own() {
        assert_eq!(field_manager("toma-7d9f-x2"), "toma-toma-7d9f-x2");
        let long = |last: char| format!("{}{last}", "a".repeat(200));
        let (one, other) = (field_manager(&long('1')), field_manager(&long('2')));
        assert!(one.len() <= MAX_FIELD_MANAGER && other.len() <= MAX_FIELD_MANAGER);
        assert_ne!(one, other, "long identities that differ only at the end");
    }
}
