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
use tracing::{debug, instrument, warn};

use crate::api::TurnCredential;
use crate::context::Context;
use crate::credential::{Credential, filter_urls};
use crate::error::{Error, Failure, Result};
use crate::plan::{MintReason, Plan, plan};
use crate::provider::Request;
use crate::secret::{self, Previous};
use crate::{schedule, status};

pub const FIELD_MANAGER: &str = "toma";
pub use cleanup::REVOKE_FINALIZER;

/// What a successful sync left in the Secret.
struct Synced {
    credential: Credential,
    /// Why a credential was minted in this reconcile, if one was.
    minted: Option<MintReason>,
    /// Credentials minted for this TurnCredential so far, this one included.
    rotations: i64,
    /// When the credential is re-minted because its key changed, if that comes before renewal.
    remint_at: Option<Timestamp>,
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
    let unread = skips_reading_the_secret(tc, ctx);
    let mut existing = if unread { None } else { get_secret(tc, ctx).await? };
    let mut synced = sync(tc, ctx, existing.as_ref(), now).await;
    if unread && matches!(synced, Err(Failure::SecretConflict { .. })) {
        // The Secret exists after all: read it, and decide again with it.
        existing = get_secret(tc, ctx).await?;
        synced = sync(tc, ctx, existing.as_ref(), now).await;
    }
    match synced {
        Ok(synced) => report::success(tc, ctx, synced, now).await,
        Err(failure) => {
            let current = existing
                .filter(|s| secret::is_owned_by(s, tc))
                .and_then(|s| secret::stored_credential(&s));
            report::failure(tc, ctx, failure, current, now).await
        }
    }
}

/// Whether to write `tc`'s Secret without reading it first: toma's Secret watch has it absent,
/// and the last attempt did not find someone else's Secret there (which the watch cannot see, and
/// which would otherwise cost a mint on every retry).
fn skips_reading_the_secret(tc: &TurnCredential, ctx: &Context) -> bool {
    let conflicted =
        status::ready_state(tc.status.as_ref()).is_some_and(|(_, reason)| reason == Failure::SECRET_CONFLICT);
    !conflicted
        && ctx
            .known_secrets
            .is_absent(&tc.namespace().unwrap_or_default(), &tc.secret_name())
}

/// The controller's error policy. Only [`Error`]s reach it, Kubernetes API calls of the
/// reconcile's own bookkeeping; they are retried soon.
pub fn error_policy(tc: Arc<TurnCredential>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(namespace = tc.namespace(), name = tc.name_any(), reason = error.reason(), %error, "reconcile failed");
    ctx.metrics.count_error(error.reason());
    Action::requeue(Duration::from_secs(5))
}

/// Makes the Secret hold a valid credential for the current spec and key: plan, mint if
/// planned, write.
async fn sync(
    tc: &TurnCredential,
    ctx: &Context,
    existing: Option<&Secret>,
    now: Timestamp,
) -> Result<Synced, Failure> {
    let planned = match plan(tc, existing, now)? {
        Plan::Keep(credential) => check_key(tc, ctx, existing, credential, now).await?,
        Plan::Mint(reason) => Planned::Mint(reason),
    };
    let (credential, minted, previous, key_fingerprint, remint_at) = match planned {
        Planned::Keep {
            credential,
            remint_at,
        } => {
            let minted_with = existing.and_then(secret::key_fingerprint).map(str::to_owned);
            (
                credential,
                None,
                existing.and_then(secret::previous),
                minted_with,
                remint_at,
            )
        }
        Planned::Mint(reason) => {
            // Only a credential toma can read back is known to be a real one to revoke later.
            let replaced = existing.and_then(secret::stored_credential);
            let previous = replaced.as_ref().and_then(Previous::of);
            let (credential, key_fingerprint) = mint(tc, ctx, reason, now).await?;
            (credential, Some(reason), previous, Some(key_fingerprint), None)
        }
    };
    let previous = previous.filter(|p| p.expires_at > now);
    // The larger of the two records: the Secret's survives a stale status, the status's
    // survives a deleted Secret.
    let recorded = existing
        .map_or(0, secret::rotations)
        .max(tc.status.as_ref().map_or(0, |s| s.rotations));
    let rotations = recorded + i64::from(minted.is_some());
    let record = Record {
        rotations,
        previous: previous.as_ref(),
        key_fingerprint: key_fingerprint.as_deref(),
    };
    write(tc, ctx, existing, &credential, record).await?;
    Ok(Synced {
        credential,
        minted,
        rotations,
        remint_at,
    })
}

/// What to do with a credential that the spec and the time let stand.
enum Planned {
    Keep {
        credential: Credential,
        /// When it is re-minted because its key changed.
        remint_at: Option<Timestamp>,
    },
    Mint(MintReason),
}

/// How long after a key change its credentials are all re-minted: each waits a part of this,
/// derived from its UID, so that one key edit does not send every mint at once.
const KEY_CHANGE_SPREAD: i64 = 30;

/// Whether the key still lets `credential` stand. A key that now mints differently (see
/// [`crate::key_resolver::fingerprint`]) re-mints it, spread over [`KEY_CHANGE_SPREAD`] seconds from when
/// toma saw the change; a key that no longer allows the namespace is a failure, and the Secret
/// stays as it is until the credential expires. Any other trouble with the key waits for the
/// renewal: the credential in the Secret is still good.
async fn check_key(
    tc: &TurnCredential,
    ctx: &Context,
    existing: Option<&Secret>,
    credential: Credential,
    now: Timestamp,
) -> Result<Planned, Failure> {
    let keep = |remint_at| Planned::Keep {
        credential: credential.clone(),
        remint_at,
    };
    let resolved = match ctx.keys.resolve(&ctx.client, tc, now).await {
        Ok(resolved) => resolved,
        Err(failure @ Failure::KeyNotAllowed { .. }) => return Err(failure),
        Err(failure) => {
            debug!(reason = failure.reason(), error = %failure, "the key cannot be read; the credential stands until it is due");
            return Ok(keep(None));
        }
    };
    // A Secret written before keys were fingerprinted records none: it stands.
    let Some(minted_with) = existing.and_then(secret::key_fingerprint) else {
        return Ok(keep(None));
    };
    if minted_with == resolved.fingerprint {
        return Ok(keep(None));
    }
    let seed = format!("{}/{}", tc.uid().unwrap_or_default(), resolved.fingerprint);
    let delay = schedule::spread(&seed, KEY_CHANGE_SPREAD);
    let remint_at = resolved.seen_at + SignedDuration::from_secs(delay);
    if now >= remint_at {
        Ok(Planned::Mint(MintReason::KeyChanged))
    } else {
        Ok(keep(Some(remint_at)))
    }
}

/// A new credential from the key `tc` names, with the URLs its filter keeps, and the key's
/// fingerprint.
async fn mint(
    tc: &TurnCredential,
    ctx: &Context,
    reason: MintReason,
    now: Timestamp,
) -> Result<(Credential, String), Failure> {
    let resolved = ctx.keys.resolve(&ctx.client, tc, now).await?;
    let key = &resolved.key;
    // The window starts when the request is sent, so toma's expiry is never later than the provider's.
    let expires_at = now + SignedDuration::from_secs(tc.spec.ttl_seconds);
    let request = Request {
        ttl_seconds: tc.spec.ttl_seconds,
        expires_at,
        custom_identifier: tc.spec.custom_identifier.as_deref(),
    };
    let ice_servers = ctx
        .providers
        .mint(key, &request)
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
    Ok((credential, resolved.fingerprint.clone()))
}

/// What the Secret records beside the credential.
struct Record<'a> {
    rotations: i64,
    previous: Option<&'a Previous>,
    key_fingerprint: Option<&'a str>,
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
    record: Record<'_>,
) -> Result<(), Failure> {
    let mut desired = secret::desired_secret(tc, credential, record.rotations);
    if let Some(previous) = record.previous {
        secret::record_previous(&mut desired, previous);
    }
    if let Some(fingerprint) = record.key_fingerprint {
        secret::record_key_fingerprint(&mut desired, fingerprint);
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
    ctx.known_secrets
        .written(&tc.namespace().unwrap_or_default(), &tc.secret_name());
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
