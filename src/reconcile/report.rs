//! Telling what a reconcile did: the status, an Event, the metrics, rollout restarts, and when
//! to come back.

use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::{FIELD_MANAGER, Synced, turn_credentials};
use crate::api::{TurnCredential, TurnCredentialStatus};
use crate::context::Context;
use crate::credential::Credential;
use crate::error::{Error, Failure, Result};
use crate::metrics::CredentialLabels;
use crate::plan::MintReason;
use crate::{rollout, schedule, secret, status};

/// Even with nothing due, look again this often, in case a watch event was missed.
const RESYNC: Duration = Duration::from_secs(3600);
/// How soon to try again when a rollout target could not be read or restarted.
const RESTART_RETRY: Duration = Duration::from_secs(60);

/// The Secret holds a valid credential: say so, and come back at its renewal time.
pub(super) async fn success(
    tc: &TurnCredential,
    ctx: &Context,
    synced: Synced,
    now: Timestamp,
) -> Result<Action> {
    let renewal = schedule::renewal_of(tc, &synced.credential);
    let renewal = synced.remint_at.map_or(renewal, |at| at.min(renewal));
    let new_status = status::issued(tc, &synced.credential, renewal, synced.rotations, now);
    let mount_warning = mount_warning(tc, &new_status);
    patch_status(tc, ctx, new_status).await?;
    if let Some(reason) = synced.minted {
        announce_mint(tc, ctx, reason, &synced.credential).await;
    }
    announce_mount_warning(tc, ctx, mount_warning).await;
    ctx.metrics
        .credential_ready(&CredentialLabels::of(tc), synced.credential.expires_at, renewal);
    let mut next = schedule::until(now, renewal).min(RESYNC);
    // On every success, not only after a mint: a restart lost to a crash or a failed patch is
    // made up here. Waits up to the restart window, so the requeue may come that much later
    // than the renewal time, well inside the credential's renewal margin.
    if !tc.spec.rollout_restart_targets.is_empty() {
        let checksum = secret::content_checksum(&synced.credential);
        if !rollout::restart_stale_targets(tc, ctx, &checksum, now).await {
            next = next.min(RESTART_RETRY);
        }
    }
    Ok(Action::requeue(next))
}

/// A Normal Event saying why a credential was minted.
async fn announce_mint(tc: &TurnCredential, ctx: &Context, reason: MintReason, credential: &Credential) {
    let what = reason.describe();
    info!(expires_at = %credential.expires_at, reason = reason.label(), "{what}");
    let note = format!(
        "Secret {}: {what}, valid until {}",
        tc.secret_name(),
        credential.expires_at
    );
    ctx.events
        .publish(tc, EventType::Normal, reason.event_reason(), note)
        .await;
}

/// Reports a failure in status (an Event on each transition) and schedules the retry. What
/// the Secret still holds stays there.
pub(super) async fn failure(
    tc: &TurnCredential,
    ctx: &Context,
    failure: Failure,
    current: Option<Credential>,
    now: Timestamp,
) -> Result<Action> {
    warn!(reason = failure.reason(), error = %failure, "could not keep the credential fresh");
    ctx.metrics.count_error(failure.reason());
    ctx.metrics.credential_not_ready(&CredentialLabels::of(tc));
    let was = status::ready_state(tc.status.as_ref());
    let new_status = status::failed(tc, &failure, current.as_ref(), now);
    let transition = status::ready_state(Some(&new_status)) != was;
    let failures = u32::try_from(new_status.failures).unwrap_or(u32::MAX);
    let mount_warning = mount_warning(tc, &new_status);
    patch_status(tc, ctx, new_status).await?;
    if transition {
        ctx.events
            .publish(tc, EventType::Warning, failure.reason(), failure.to_string())
            .await;
    }
    announce_mount_warning(tc, ctx, mount_warning).await;
    let expires_at = current.as_ref().map(|c| c.expires_at);
    Ok(Action::requeue(schedule::retry_delay(
        failures,
        failure.retry_after(),
        now,
        expires_at,
    )))
}

/// The message of MountSafe if `new_status` has just made it False.
fn mount_warning(tc: &TurnCredential, new_status: &TurnCredentialStatus) -> Option<String> {
    status::mount_safety_lost(tc.status.as_ref(), new_status).map(|c| c.message.clone())
}

/// A Warning Event when the spec renews too late for pods that mount the Secret, once per change.
async fn announce_mount_warning(tc: &TurnCredential, ctx: &Context, message: Option<String>) {
    if let Some(message) = message {
        ctx.events
            .publish(tc, EventType::Warning, status::RENEW_BEFORE_TOO_SHORT, message)
            .await;
    }
}

/// Writes the status with server-side apply, only when it differs from what is there.
async fn patch_status(tc: &TurnCredential, ctx: &Context, new_status: TurnCredentialStatus) -> Result<()> {
    if tc.status.as_ref() == Some(&new_status) {
        return Ok(());
    }
    let patch = json!({
        "apiVersion": TurnCredential::api_version(&()),
        "kind": TurnCredential::kind(&()),
        "status": new_status,
    });
    turn_credentials(tc, ctx)
        .patch_status(
            &tc.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|source| Error::PatchStatus {
            turn_credential: ObjectRef::from_obj(tc),
            source,
        })?;
    Ok(())
}
