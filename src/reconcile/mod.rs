//! One idempotent reconcile of a TurnCredential: plan what its Secret needs, mint only if the
//! plan says so, write the Secret, report what happened, and come back when the credential is due.

mod cleanup;
mod report;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use tracing::{instrument, warn};

use crate::api::TurnCredential;
use crate::context::Context;
use crate::credential::{Credential, filter_urls};
use crate::error::{Error, Failure, Result};
use crate::plan::{MintReason, Plan, plan};
use crate::provider::Request;
use crate::secret::{self, Previous};

pub const FIELD_MANAGER: &str = "toma";
pub use cleanup::REVOKE_FINALIZER;

/// What a successful sync left in the Secret.
struct Synced {
    credential: Credential,
    /// Why a credential was minted in this reconcile, if one was.
    minted: Option<MintReason>,
    /// Credentials minted for this TurnCredential so far, this one included.
    rotations: i64,
}

#[instrument(skip_all, fields(namespace = tc.namespace(), turncredential = tc.name_any()))]
pub async fn reconcile(tc: Arc<TurnCredential>, ctx: Arc<Context>) -> Result<Action> {
    // Kubernetes keeps times to the second; so does toma, so what it wrote reads back equal.
    let now = Timestamp::from_second(Timestamp::now().as_second()).expect("now is a valid time");
    reconcile_at(&tc, &ctx, now).await
}

/// The reconcile, as of `now`.
pub async fn reconcile_at(tc: &TurnCredential, ctx: &Context, now: Timestamp) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    if tc.meta().deletion_timestamp.is_some() {
        return cleanup::on_deletion(tc, ctx, now).await;
    }
    cleanup::ensure_finalizer(tc, ctx).await?;
    let existing = get_secret(tc, ctx).await?;
    match sync(tc, ctx, existing.as_ref(), now).await {
        Ok(synced) => report::success(tc, ctx, synced, now).await,
        Err(failure) => {
            let current = existing
                .filter(|s| secret::is_owned_by(s, tc))
                .and_then(|s| secret::stored_credential(&s));
            report::failure(tc, ctx, failure, current, now).await
        }
    }
}

/// The controller's error policy. Only [`Error`]s reach it, Kubernetes API calls of the
/// reconcile's own bookkeeping; they are retried soon.
pub fn error_policy(tc: Arc<TurnCredential>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(namespace = tc.namespace(), name = tc.name_any(), reason = error.reason(), %error, "reconcile failed");
    ctx.metrics.count_error(error.reason());
    Action::requeue(Duration::from_secs(5))
}

/// Makes the Secret hold a valid credential for the current spec: plan, mint if planned, write.
async fn sync(
    tc: &TurnCredential,
    ctx: &Context,
    existing: Option<&Secret>,
    now: Timestamp,
) -> Result<Synced, Failure> {
    let (credential, minted, previous) = match plan(tc, existing, now)? {
        Plan::Keep(credential) => (credential, None, existing.and_then(secret::previous)),
        Plan::Mint(reason) => {
            // Only a credential toma can read back is known to be a real one to revoke later.
            let replaced = existing.and_then(secret::stored_credential);
            let previous = replaced.as_ref().and_then(Previous::of);
            (mint(tc, ctx, reason, now).await?, Some(reason), previous)
        }
    };
    let previous = previous.filter(|p| p.expires_at > now);
    // The larger of the two records: the Secret's survives a stale status, the status's
    // survives a deleted Secret.
    let recorded = existing
        .map_or(0, secret::rotations)
        .max(tc.status.as_ref().map_or(0, |s| s.rotations));
    let rotations = recorded + i64::from(minted.is_some());
    write(tc, ctx, existing, &credential, rotations, previous.as_ref()).await?;
    Ok(Synced {
        credential,
        minted,
        rotations,
    })
}

/// A new credential from the key `tc` names, with the URLs its filter keeps.
async fn mint(
    tc: &TurnCredential,
    ctx: &Context,
    reason: MintReason,
    now: Timestamp,
) -> Result<Credential, Failure> {
    let key = ctx.keys.resolve(&ctx.client, tc).await?;
    // The window starts when the request is sent, so toma's expiry is never later than the provider's.
    let expires_at = now + SignedDuration::from_secs(tc.spec.ttl_seconds);
    let request = Request {
        ttl_seconds: tc.spec.ttl_seconds,
        expires_at,
        custom_identifier: tc.spec.custom_identifier.as_deref(),
    };
    let ice_servers = ctx
        .providers
        .mint(&key, &request)
        .await
        .map_err(|source| Failure::Provider {
            key: key.name.clone(),
            source,
        })?;
    let credential = Credential {
        ice_servers: filter_urls(ice_servers, &tc.url_filter()),
        issued_at: now,
        expires_at,
    };
    if credential.turn_pair().is_none() {
        return Err(Failure::NoTurnUrlLeft {
            key: key.name.clone(),
        });
    }
    ctx.metrics.count_mint(key.provider.label(), reason);
    Ok(credential)
}

/// The resourceVersion toma's apply names when it creates the Secret. No stored object has it, so
/// the API server creates the Secret if it is still absent (a create ignores the precondition)
/// and answers 409 Conflict if it appeared since toma read it (someone else's, made while toma
/// was minting), instead of taking it over.
const ABSENT: &str = "1";

/// Writes the Secret with server-side apply, unless it already holds what toma would write. A
/// Secret that was absent is created only if it still is: one that appeared meanwhile is a
/// `SecretConflict`, and is left as it is.
async fn write(
    tc: &TurnCredential,
    ctx: &Context,
    existing: Option<&Secret>,
    credential: &Credential,
    rotations: i64,
    previous: Option<&Previous>,
) -> Result<(), Failure> {
    let mut desired = secret::desired_secret(tc, credential, rotations);
    if let Some(previous) = previous {
        secret::record_previous(&mut desired, previous);
    }
    if existing.is_some_and(|s| secret::owned_fields_match(s, &desired)) {
        return Ok(());
    }
    if existing.is_none() {
        desired.metadata.resource_version = Some(ABSENT.into());
    }
    let write = ctx.own_writes.writing(tc);
    let written = secrets(tc, ctx)
        .patch(
            &tc.secret_name(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await;
    let written = match written {
        Ok(written) => written,
        Err(kube::Error::Api(status)) if existing.is_none() && status.code == 409 => {
            return Err(Failure::SecretConflict {
                secret: secret_ref(tc),
            });
        }
        Err(source) => {
            return Err(Error::ApplySecret {
                secret: secret_ref(tc),
                source,
            }
            .into());
        }
    };
    write.done(&written);
    Ok(())
}

async fn get_secret(tc: &TurnCredential, ctx: &Context) -> Result<Option<Secret>> {
    secrets(tc, ctx)
        .get_opt(&tc.secret_name())
        .await
        .map_err(|source| Error::GetSecret {
            secret: secret_ref(tc),
            source,
        })
}

fn secrets(tc: &TurnCredential, ctx: &Context) -> Api<Secret> {
    Api::namespaced(ctx.client.clone(), &tc.namespace().unwrap_or_default())
}

fn secret_ref(tc: &TurnCredential) -> ObjectRef<Secret> {
    ObjectRef::new(&tc.secret_name()).within(&tc.namespace().unwrap_or_default())
}

fn turn_credentials(tc: &TurnCredential, ctx: &Context) -> Api<TurnCredential> {
    Api::namespaced(ctx.client.clone(), &tc.namespace().unwrap_or_default())
}
