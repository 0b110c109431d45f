//! Deletion: revoke the live credential when `revokeOnDelete` asks for it (a finalizer holds the
//! TurnCredential until then). The Secret itself is garbage collected through its owner reference.

use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use tracing::warn;

use super::turn_credentials;
use crate::api::{KeyName, TurnCredential};
use crate::context::Context;
use crate::error::{Error, Failure, Result};
use crate::metrics::CredentialLabels;
use crate::provider::Revoked;
use crate::{key_resolver, secret};

pub const REVOKE_FINALIZER: &str = "toma.dev/revoke";

/// Adds the revoke finalizer when revokeOnDelete asks for it, and removes it when it no longer does.
pub(super) async fn ensure_finalizer(tc: &TurnCredential, ctx: &Context) -> Result<()> {
    let has = tc.finalizers().iter().any(|f| f == REVOKE_FINALIZER);
    if has == tc.spec.revoke_on_delete {
        return Ok(());
    }
    let mut finalizers = others_finalizers(tc);
    if tc.spec.revoke_on_delete {
        finalizers.push(REVOKE_FINALIZER.into());
    }
    set_finalizers(tc, ctx, finalizers).await
}

/// On deletion: revoke if asked to, then let the TurnCredential go.
pub(super) async fn on_deletion(tc: &TurnCredential, ctx: &Context, now: Timestamp) -> Result<Action> {
    ctx.metrics.forget_credential(&CredentialLabels::of(tc));
    if !tc.finalizers().iter().any(|f| f == REVOKE_FINALIZER) {
        return Ok(Action::await_change());
    }
    if let Err(failure) = revoke(tc, ctx, now).await {
        if failure.is_transient() {
            warn!(error = %failure, "revoking the credential failed; will retry");
            ctx.events
                .publish(tc, EventType::Warning, "RevokeFailed", failure.to_string())
                .await;
            return Ok(Action::requeue(
                failure.retry_after().unwrap_or(Duration::from_secs(10)),
            ));
        }
        warn!(error = %failure, "cannot revoke the credential; deleting without revoking");
        ctx.events
            .publish(
                tc,
                EventType::Warning,
                "RevokeSkipped",
                format!("not revoked: {failure}"),
            )
            .await;
    }
    set_finalizers(tc, ctx, others_finalizers(tc)).await?;
    Ok(Action::await_change())
}

/// Revokes the credential in the Secret, and the one it replaced while that is still valid.
async fn revoke(tc: &TurnCredential, ctx: &Context, now: Timestamp) -> Result<(), Failure> {
    let secret = super::get_secret(tc, ctx)
        .await?
        .filter(|s| secret::is_owned_by(s, tc));
    let current = secret.as_ref().and_then(secret::stored_credential);
    let Some((username, _)) = current.as_ref().and_then(|c| c.turn_pair()) else {
        let note = format!(
            "Secret {} is gone or holds no credential toma wrote: nothing was revoked",
            tc.secret_name()
        );
        ctx.events
            .publish(tc, EventType::Normal, "NotRevoked", note)
            .await;
        return Ok(());
    };
    let mut usernames = vec![username.to_string()];
    let previous = secret.as_ref().and_then(secret::previous);
    usernames.extend(previous.filter(|p| p.expires_at > now).map(|p| p.username));
    let key = key_resolver::resolve(&ctx.client, &KeyName::of(tc)).await?;
    for username in &usernames {
        let revoked = ctx
            .providers
            .revoke(&key, username)
            .await
            .map_err(|source| Failure::Provider {
                key: key.name.clone(),
                source,
            })?;
        if revoked == Revoked::NotRevocable {
            return Ok(()); // shared-secret credentials expire; there is nothing to revoke
        }
    }
    let note = match usernames.len() {
        1 => "revoked the credential at Cloudflare".to_string(),
        _ => "revoked the credential, and the one it replaced, at Cloudflare".to_string(),
    };
    ctx.events.publish(tc, EventType::Normal, "Revoked", note).await;
    Ok(())
}

/// The finalizers of `tc` other than toma's.
fn others_finalizers(tc: &TurnCredential) -> Vec<String> {
    tc.finalizers()
        .iter()
        .filter(|f| *f != REVOKE_FINALIZER)
        .cloned()
        .collect()
}

async fn set_finalizers(tc: &TurnCredential, ctx: &Context, finalizers: Vec<String>) -> Result<()> {
    // The resourceVersion makes this a compare-and-swap, so a concurrent edit is not lost.
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": tc.resource_version()}});
    turn_credentials(tc, ctx)
        .patch(&tc.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::SetFinalizers {
            turn_credential: ObjectRef::from_obj(tc),
            source,
        })?;
    Ok(())
}
