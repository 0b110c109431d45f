//! One idempotent reconcile of a TurnCredential: make its Secret hold a valid credential, mint
//! only when needed, report what happened, and come back when the credential is due.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};

use crate::api::{Provider, TurnCredential};
use crate::context::Context;
use crate::credential::Credential;
use crate::error::{Error, Result};
use crate::metrics::{CredentialLabels, ReasonLabels};
use crate::secret::{self, FINGERPRINT_ANNOTATION};
use crate::{keys, provider, rollout, schedule, status};

pub const FIELD_MANAGER: &str = "toma";
pub const REVOKE_FINALIZER: &str = "toma.dev/revoke";
/// Even with nothing due, look again this often, in case a watch event was missed.
const RESYNC: Duration = Duration::from_secs(3600);

/// What a successful sync did.
struct Synced {
    credential: Credential,
    renewal: Timestamp,
    /// A credential was minted in this reconcile.
    minted: bool,
    /// The minted credential replaced one that was in the Secret.
    replaced: bool,
    /// Credentials minted for this TurnCredential so far, this one included.
    rotations: i64,
}

#[instrument(skip_all, fields(namespace = tc.namespace(), turncredential = tc.name_any()))]
pub async fn reconcile(tc: Arc<TurnCredential>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    if tc.meta().deletion_timestamp.is_some() {
        return cleanup(&tc, &ctx).await;
    }
    ensure_finalizer(&tc, &ctx).await?;
    apply(&tc, &ctx).await
}

/// The controller's error policy: only Kubernetes API errors reach it (provider and spec
/// failures are reported in status by `apply`), and those are retried soon.
pub fn error_policy(tc: Arc<TurnCredential>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(namespace = tc.namespace(), name = tc.name_any(), reason = error.reason(), %error, "reconcile failed");
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ReasonLabels {
            reason: error.reason().into(),
        })
        .inc();
    Action::requeue(Duration::from_secs(5))
}

async fn apply(tc: &TurnCredential, ctx: &Context) -> Result<Action> {
    // Kubernetes keeps times to the second; so does toma, so what it wrote reads back equal.
    let now = Timestamp::from_second(Timestamp::now().as_second()).expect("now is a valid time");
    let namespace = tc.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let secret_name = tc.secret_name();
    let existing = secrets
        .get_opt(&secret_name)
        .await
        .map_err(Error::kube(format!("get Secret {namespace}/{secret_name}")))?;

    match sync_secret(tc, ctx, &secrets, existing.as_ref(), now).await {
        Ok(synced) => report_success(tc, ctx, synced, now).await,
        Err(error) => {
            let current = existing
                .filter(|s| secret::is_owned_by(s, tc))
                .and_then(|s| secret::stored_credential(&s));
            report_failure(tc, ctx, error, current, now).await
        }
    }
}

async fn report_success(
    tc: &TurnCredential,
    ctx: &Context,
    synced: Synced,
    now: Timestamp,
) -> Result<Action> {
    let new_status = status::issued(tc, &synced.credential, synced.renewal, synced.rotations, now);
    patch_status(tc, ctx, new_status).await?;
    if synced.minted {
        let (reason, verb) = if synced.replaced {
            ("Rotated", "rotated")
        } else {
            ("Issued", "issued")
        };
        info!(expires_at = %synced.credential.expires_at, "credential {verb}");
        let note = format!(
            "Secret {}: credential {verb}, valid until {}",
            tc.secret_name(),
            synced.credential.expires_at
        );
        ctx.events.publish(tc, EventType::Normal, reason, note).await;
        if synced.replaced {
            rollout::restart_targets(tc, ctx, now).await;
        }
    }
    let labels = credential_labels(tc);
    ctx.metrics
        .expiration
        .get_or_create(&labels)
        .set(synced.credential.expires_at.as_second());
    ctx.metrics
        .renewal
        .get_or_create(&labels)
        .set(synced.renewal.as_second());
    ctx.metrics.ready.get_or_create(&labels).set(1);
    Ok(Action::requeue(schedule::until(now, synced.renewal).min(RESYNC)))
}

/// Reports a failure in status (an Event on each transition) and schedules the retry. What
/// the Secret still holds stays there.
async fn report_failure(
    tc: &TurnCredential,
    ctx: &Context,
    error: Error,
    current: Option<Credential>,
    now: Timestamp,
) -> Result<Action> {
    warn!(reason = error.reason(), %error, "could not keep the credential fresh");
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ReasonLabels {
            reason: error.reason().into(),
        })
        .inc();
    ctx.metrics.ready.get_or_create(&credential_labels(tc)).set(0);
    let was = status::ready_state(tc.status.as_ref());
    let new_status = status::failed(tc, &error, current.as_ref(), now);
    let transition = status::ready_state(Some(&new_status)) != was;
    let failures = u32::try_from(new_status.failures).unwrap_or(u32::MAX);
    patch_status(tc, ctx, new_status).await?;
    if transition {
        ctx.events
            .publish(tc, EventType::Warning, error.reason(), error.to_string())
            .await;
    }
    let expires_at = current.as_ref().map(|c| c.expires_at);
    Ok(Action::requeue(schedule::retry_delay(
        failures,
        error.retry_after(),
        now,
        expires_at,
    )))
}

/// Makes the Secret hold a valid credential for the current spec, minting only when the stored
/// one is missing, tampered with, minted for other spec fields, or due for renewal.
async fn sync_secret(
    tc: &TurnCredential,
    ctx: &Context,
    secrets: &Api<Secret>,
    existing: Option<&Secret>,
    now: Timestamp,
) -> Result<Synced> {
    if let Some(existing) = existing
        && !secret::is_owned_by(existing, tc)
    {
        return Err(Error::SecretConflict {
            namespace: tc.namespace().unwrap_or_default(),
            name: tc.secret_name(),
        });
    }
    let fingerprint = secret::fingerprint(tc);
    let uid = tc.uid().unwrap_or_default();
    let renewal_of =
        |c: &Credential| schedule::renewal_time(c.issued_at, c.expires_at, tc.renew_before_seconds(), &uid);
    let fresh = existing
        .filter(|s| s.annotations().get(FINGERPRINT_ANNOTATION) == Some(&fingerprint))
        .and_then(secret::stored_credential)
        .filter(|c| c.is_valid_at(now) && now < renewal_of(c));

    let (credential, minted) = match fresh {
        Some(credential) => (credential, false),
        None => {
            let key = ctx.keys.resolve(&ctx.client, tc).await?;
            (
                provider::mint(tc, &key, &ctx.cloudflare, &ctx.metrics, now).await?,
                true,
            )
        }
    };
    // The larger of the two records: the Secret's survives a stale status, the status's
    // survives a deleted Secret.
    let recorded = existing
        .map_or(0, secret::rotations)
        .max(tc.status.as_ref().map_or(0, |s| s.rotations));
    let rotations = recorded + i64::from(minted);
    let desired = secret::desired_secret(tc, &credential, rotations);
    if existing.is_none_or(|s| !secret::owned_fields_match(s, &desired)) {
        let write = ctx.echoes.writing(tc);
        let written = secrets
            .patch(
                &tc.secret_name(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&desired),
            )
            .await
            .map_err(Error::kube(format!("apply Secret {}", tc.secret_name())))?;
        write.done(&written);
    }
    let renewal = renewal_of(&credential);
    Ok(Synced {
        credential,
        renewal,
        minted,
        replaced: minted && existing.is_some(),
        rotations,
    })
}

async fn patch_status(
    tc: &TurnCredential,
    ctx: &Context,
    new_status: crate::api::TurnCredentialStatus,
) -> Result<()> {
    if tc.status.as_ref() == Some(&new_status) {
        return Ok(());
    }
    let api: Api<TurnCredential> = Api::namespaced(ctx.client.clone(), &tc.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": TurnCredential::api_version(&()),
        "kind": TurnCredential::kind(&()),
        "status": new_status,
    });
    api.patch_status(
        &tc.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::kube(format!(
        "patch status of TurnCredential {}",
        tc.name_any()
    )))?;
    Ok(())
}

/// Adds the revoke finalizer when revokeOnDelete asks for it, and removes it when it no longer does.
async fn ensure_finalizer(tc: &TurnCredential, ctx: &Context) -> Result<()> {
    let has = tc.finalizers().iter().any(|f| f == REVOKE_FINALIZER);
    if has == tc.spec.revoke_on_delete {
        return Ok(());
    }
    let mut finalizers: Vec<String> = tc
        .finalizers()
        .iter()
        .filter(|f| *f != REVOKE_FINALIZER)
        .cloned()
        .collect();
    if tc.spec.revoke_on_delete {
        finalizers.push(REVOKE_FINALIZER.into());
    }
    set_finalizers(tc, ctx, finalizers).await
}

async fn set_finalizers(tc: &TurnCredential, ctx: &Context, finalizers: Vec<String>) -> Result<()> {
    let api: Api<TurnCredential> = Api::namespaced(ctx.client.clone(), &tc.namespace().unwrap_or_default());
    // The resourceVersion makes this a compare-and-swap, so a concurrent edit is not lost.
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": tc.resource_version()}});
    api.patch(&tc.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::kube(format!(
            "update finalizers of TurnCredential {}",
            tc.name_any()
        )))?;
    Ok(())
}

/// On deletion: revoke the live credential if asked to, then let the TurnCredential go. The
/// Secret itself is garbage collected through its owner reference.
async fn cleanup(tc: &TurnCredential, ctx: &Context) -> Result<Action> {
    ctx.metrics.forget_credential(&credential_labels(tc));
    if !tc.finalizers().iter().any(|f| f == REVOKE_FINALIZER) {
        return Ok(Action::await_change());
    }
    if let Err(error) = revoke(tc, ctx).await {
        if error.is_transient() {
            warn!(%error, "revoking the credential failed; will retry");
            ctx.events
                .publish(tc, EventType::Warning, "RevokeFailed", error.to_string())
                .await;
            return Ok(Action::requeue(
                error.retry_after().unwrap_or(Duration::from_secs(10)),
            ));
        }
        warn!(%error, "cannot revoke the credential; deleting without revoking");
        ctx.events
            .publish(
                tc,
                EventType::Warning,
                "RevokeSkipped",
                format!("not revoked: {error}"),
            )
            .await;
    }
    let finalizers = tc
        .finalizers()
        .iter()
        .filter(|f| *f != REVOKE_FINALIZER)
        .cloned()
        .collect();
    set_finalizers(tc, ctx, finalizers).await?;
    Ok(Action::await_change())
}

async fn revoke(tc: &TurnCredential, ctx: &Context) -> Result<()> {
    let namespace = tc.namespace().unwrap_or_default();
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&tc.secret_name())
        .await
        .map_err(Error::kube(format!(
            "get Secret {namespace}/{}",
            tc.secret_name()
        )))?;
    let Some(credential) = secret
        .filter(|s| secret::is_owned_by(s, tc))
        .and_then(|s| secret::stored_credential(&s))
    else {
        return Ok(());
    };
    let Some((username, _)) = credential.turn_pair() else {
        return Ok(());
    };
    let key = keys::resolve(&ctx.client, tc).await?;
    // Shared-secret credentials are computed, not issued: there is nothing to revoke.
    if let Provider::Cloudflare(cf) = &key.provider {
        let base_url = cf
            .base_url
            .as_deref()
            .unwrap_or(crate::cloudflare::DEFAULT_BASE_URL);
        ctx.cloudflare
            .revoke(base_url, &cf.key_id, &key.secret, username)
            .await
            .map_err(|source| Error::Provider {
                key: key.display.clone(),
                source,
            })?;
        ctx.events
            .publish(
                tc,
                EventType::Normal,
                "Revoked",
                "revoked the credential at Cloudflare".into(),
            )
            .await;
    }
    Ok(())
}

fn credential_labels(tc: &TurnCredential) -> CredentialLabels {
    CredentialLabels {
        namespace: tc.namespace().unwrap_or_default(),
        name: tc.name_any(),
    }
}
