//! `toma status`: a TurnCredential in a few lines — Ready and why, its Secret, expiry and
//! renewal, the key, its last Events, and what toma will do next and when.

use std::fmt::Write;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::core::PartialObjectMeta;
use kube::{Api, Client, ResourceExt};

use super::{Outcome, Target, describe, not_found_or};
use crate::api::{KeyName, TurnCredential};
use crate::{schedule, status};

/// Events shown, the newest last.
const EVENTS_SHOWN: usize = 5;

#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: Target,
}

/// What the cluster says about a TurnCredential.
pub struct Observed {
    pub tc: TurnCredential,
    pub secret: SecretState,
    pub events: Vec<EventLine>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretState {
    Missing,
    Written,
    /// A Secret of that name that the TurnCredential does not own.
    Foreign,
}

pub struct EventLine {
    pub at: Timestamp,
    pub type_: String,
    pub reason: String,
    pub note: String,
}

pub async fn status(client: Client, args: StatusArgs) -> Outcome {
    let target = args.target;
    let namespace = target.namespace(&client);
    let tc = target
        .api(&client)
        .get(&target.name)
        .await
        .map_err(|error| not_found_or(&target, &client, error))?;
    let secret = Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), &namespace)
        .get_metadata_opt(&tc.secret_name())
        .await
        .map_err(describe)?;
    let owner = tc.uid();
    let secret = match secret {
        None => SecretState::Missing,
        Some(s)
            if s.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == owner.as_ref()) =>
        {
            SecretState::Written
        }
        Some(_) => SecretState::Foreign,
    };
    let events = Api::<Event>::namespaced(client, &namespace)
        .list(&ListParams::default())
        .await
        .map_err(describe)?;
    let mut events: Vec<EventLine> = events
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.uid.as_ref()) == owner.as_ref())
        .map(event_line)
        .collect();
    events.sort_by_key(|e| e.at);
    let observed = Observed { tc, secret, events };
    print!("{}", render(&observed, Timestamp::now()));
    Ok(())
}

fn event_line(event: Event) -> EventLine {
    let at = event
        .series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or(event.event_time.as_ref().map(|t| t.0))
        .or(event.deprecated_last_timestamp.as_ref().map(|t| t.0))
        .or(event.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(Timestamp::UNIX_EPOCH);
    EventLine {
        at,
        type_: event.type_.unwrap_or_default(),
        reason: event.reason.unwrap_or_default(),
        note: event.note.unwrap_or_default(),
    }
}

/// The report, as of `now`.
pub fn render(observed: &Observed, now: Timestamp) -> String {
    let tc = &observed.tc;
    let mut out = String::new();
    let line = |out: &mut String, label: &str, text: String| {
        let _ = writeln!(out, "  {label:<10} {text}");
    };
    let _ = writeln!(
        out,
        "TurnCredential {}/{}",
        tc.namespace().unwrap_or_default(),
        tc.name_any()
    );
    let state = tc
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == status::READY));
    line(
        &mut out,
        "Ready:",
        match state {
            Some(c) => format!("{} ({}): {}", c.status, c.reason, c.message),
            None => "unknown: toma has not reported on it yet".into(),
        },
    );
    // Only a problem is worth a line: pods mounting the Secret can read an expired credential.
    let mount_safe = tc.status.as_ref().and_then(status::mount_safe_of);
    if let Some(c) = mount_safe.filter(|c| c.status == "False") {
        line(
            &mut out,
            "MountSafe:",
            format!("{} ({}): {}", c.status, c.reason, c.message),
        );
    }
    let secret = match observed.secret {
        SecretState::Written => "written by toma",
        SecretState::Missing => "missing",
        SecretState::Foreign => "exists but is not this TurnCredential's: toma leaves it alone",
    };
    line(&mut out, "Secret:", format!("{} ({secret})", tc.secret_name()));
    let status = tc.status.clone().unwrap_or_default();
    if let Some(expires_at) = &status.expires_at {
        line(&mut out, "Expires:", when(expires_at.0, now));
    }
    if let Some(renewal) = &status.renewal_time {
        line(&mut out, "Renewal:", when(renewal.0, now));
    }
    line(&mut out, "Key:", KeyName::of(tc).to_string());
    line(
        &mut out,
        "Minted:",
        format!(
            "{} credentials so far; {} failed attempts in a row",
            status.rotations, status.failures
        ),
    );
    line(&mut out, "Next:", next_step(tc, now));
    if observed.events.is_empty() {
        line(&mut out, "Events:", "none (Events expire after an hour)".into());
    } else {
        line(&mut out, "Events:", "newest last".into());
        let skip = observed.events.len().saturating_sub(EVENTS_SHOWN);
        for event in &observed.events[skip..] {
            let age = ago(event.at, now);
            let _ = writeln!(
                out,
                "    {age:<10} {:<8} {:<20} {}",
                event.type_, event.reason, event.note
            );
        }
    }
    out
}

/// What toma will do next, from the status alone.
fn next_step(tc: &TurnCredential, now: Timestamp) -> String {
    if tc.metadata.deletion_timestamp.is_some() {
        return "being deleted: toma revokes if asked to, then lets it go".into();
    }
    let Some(status) = &tc.status else {
        return "toma has not reconciled it yet; is toma running?".into();
    };
    if status.failures > 0 {
        let failed_at = status.last_failure_time.as_ref().map_or(now, |t| t.0);
        let failures = u32::try_from(status.failures).unwrap_or(u32::MAX);
        let expires_at = status.expires_at.as_ref().map(|t| t.0);
        let delay = schedule::retry_delay(failures, None, failed_at, expires_at);
        let retry = failed_at + SignedDuration::try_from(delay).unwrap_or(SignedDuration::ZERO);
        return format!(
            "try again {} (later if the provider asked to wait)",
            when(retry.max(now), now)
        );
    }
    match &status.renewal_time {
        Some(renewal) if renewal.0 > now => format!("mint the next credential {}", when(renewal.0, now)),
        Some(_) => "mint the next credential now: its renewal time has come".into(),
        None => "mint a credential".into(),
    }
}

/// `2026-12-03T02:00:00Z (in 15h 59m)`.
fn when(at: Timestamp, now: Timestamp) -> String {
    let seconds = at.as_second() - now.as_second();
    if seconds >= 0 {
        format!("{at} (in {})", span(seconds))
    } else {
        format!("{at} ({} ago)", span(-seconds))
    }
}

fn ago(at: Timestamp, now: Timestamp) -> String {
    format!("{} ago", span((now.as_second() - at.as_second()).max(0)))
}

/// `3d 4h`, `15h 59m`, `4m 10s`, `9s`: the two largest units.
fn span(seconds: i64) -> String {
    let units = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let Some(first) = units.iter().position(|(size, _)| seconds >= *size) else {
        return "0s".into();
    };
    units[first..]
        .iter()
        .take(2)
        .scan(seconds, |left, (size, unit)| {
            let count = *left / size;
            *left %= size;
            Some((count, unit))
        })
        .filter(|(count, _)| *count > 0)
        .map(|(count, unit)| format!("{count}{unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{credential_at, turn_credential};

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    fn issued() -> TurnCredential {
        let mut tc = turn_credential("web");
        let credential = credential_at(1_700_000_000, 86_400);
        tc.status = Some(status::issued(&tc, &credential, at(57_600), 1, at(0)));
        tc
    }

    #[test]
    fn a_ready_credential_shows_its_secret_times_key_events_and_next_renewal() {
        let observed = Observed {
            tc: issued(),
            secret: SecretState::Written,
            events: vec![EventLine {
                at: at(0),
                type_: "Normal".into(),
                reason: "Issued".into(),
                note: "Secret web: credential issued".into(),
            }],
        };

        let text = render(&observed, at(600));

        let expected = [
            "TurnCredential app/web",
            "  Ready:     True (Issued): Secret web holds a credential valid until 2023-11-15T22:13:20Z; the next is minted at 2023-11-15T14:13:20Z",
            "  Secret:    web (written by toma)",
            "  Expires:   2023-11-15T22:13:20Z (in 23h 50m)",
            "  Renewal:   2023-11-15T14:13:20Z (in 15h 50m)",
            "  Key:       ClusterTurnKey cloudflare",
            "  Minted:    1 credentials so far; 0 failed attempts in a row",
            "  Next:      mint the next credential 2023-11-15T14:13:20Z (in 15h 50m)",
            "  Events:    newest last",
            "    10m ago    Normal   Issued               Secret web: credential issued",
        ];
        assert_eq!(text.lines().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn a_failing_credential_says_when_toma_tries_again() {
        let mut tc = issued();
        let failure = crate::error::Failure::KeyNotFound {
            key: KeyName::of(&tc),
        };
        tc.status = Some(status::failed(&tc, &failure, None, at(100)));
        let observed = Observed {
            tc,
            secret: SecretState::Missing,
            events: vec![],
        };

        let text = render(&observed, at(101));

        assert!(
            text.contains("Ready:     False (KeyNotFound): ClusterTurnKey cloudflare not found"),
            "{text}"
        );
        assert!(text.contains("Secret:    web (missing)"), "{text}");
        assert!(
            text.contains(
                "Next:      try again 2023-11-14T22:15:05Z (in 4s) (later if the provider asked to wait)"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_credential_renewed_too_late_for_mounted_files_says_so_under_ready() {
        let mut tc = issued();
        tc.spec.renew_before_seconds = Some(60);
        tc.status = Some(status::issued(
            &tc,
            &credential_at(1_700_000_000, 86_400),
            at(86_340),
            1,
            at(0),
        ));
        let observed = Observed {
            tc,
            secret: SecretState::Written,
            events: vec![],
        };

        let text = render(&observed, at(600));

        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("  Ready:     True (Issued)"), "{text}");
        assert!(
            lines[2]
                .starts_with("  MountSafe: False (RenewBeforeTooShort): credentials are renewed 60 s before"),
            "{text}"
        );
        assert!(lines[3].starts_with("  Secret:"), "{text}");
    }

    #[test]
    fn spans_show_the_two_largest_units() {
        assert_eq!(span(0), "0s");
        assert_eq!(span(9), "9s");
        assert_eq!(span(250), "4m 10s");
        assert_eq!(span(3_600), "1h");
        assert_eq!(span(90_061), "1d 1h");
    }
}
