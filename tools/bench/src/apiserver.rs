//! Counting what reaches the API server: `apiserver_request_total` from its `/metrics`, read
//! before and after a phase. The counter is cluster-wide, so phases run one at a time and the
//! previous phase's namespace is gone (its deletion finished) before the next one starts.

use std::collections::BTreeMap;

use std::time::{Duration, Instant};

use kube::Client;
use serde::Serialize;

use crate::{Result, prom};

/// What a request is counted by. `group`/`version` are left out: the resources below are unique
/// by name across the groups they live in (`events` counts core and events.k8s.io together).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    verb: String,
    resource: String,
    subresource: String,
    code: String,
}

/// A reading of `apiserver_request_total`.
#[derive(Debug, Clone, Default)]
pub struct Requests(BTreeMap<Key, f64>);

pub async fn scrape(client: &Client) -> Result<Requests> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    let mut counts = BTreeMap::new();
    for sample in prom::samples(&text, &["apiserver_request_total"]) {
        let label = |k: &str| sample.labels.get(k).cloned().unwrap_or_default();
        let key = Key {
            verb: label("verb"),
            resource: label("resource"),
            subresource: label("subresource"),
            code: label("code"),
        };
        *counts.entry(key).or_insert(0.0) += sample.value;
    }
    Ok(Requests(counts))
}

/// Waits until nothing touches Secrets, TurnCredentials, keys or Events for two readings one
/// second apart: the garbage collector and the namespace controller finish a deletion a little
/// after the namespace is gone, and their requests must not count in the next phase. Gives up
/// after `limit` with a warning on stderr (the next phase's counts may then be a little high).
pub async fn quiesce(client: &Client, limit: Duration) -> Result<()> {
    let started = Instant::now();
    let mut before = scrape(client).await?;
    let mut quiet = 0;
    while quiet < 2 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = scrape(client).await?;
        let counts = now.since(&before, 0);
        if started.elapsed() > limit {
            eprintln!(
                "warning: the API server is still busy {limit:?} after a deletion, going on: {counts:?}"
            );
            return Ok(());
        }
        quiet = if counts.any() { 0 } else { quiet + 1 };
        before = now;
    }
    Ok(())
}

/// Requests that change nothing.
const READ_VERBS: [&str; 4] = ["GET", "LIST", "WATCH", "WATCHLIST"];

/// Writes and reads on the resources toma touches, over one phase.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Counts {
    /// Writes (any verb but GET/LIST/WATCH) to Secrets.
    pub secret_writes: u64,
    /// Writes to TurnCredentials themselves (creates, finalizer patches), after subtracting
    /// the bench client's own creates.
    pub turncredential_writes: u64,
    /// Writes to the status subresource of TurnCredentials.
    pub status_writes: u64,
    /// Writes to Events (core and events.k8s.io).
    pub event_writes: u64,
    /// Writes among the above that the API server refused (code not 2xx): conflicts, say.
    pub failed_writes: u64,
    /// GETs of Secrets (toma reads its Secret, and the key's token Secret, per reconcile).
    pub secret_gets: u64,
    /// GETs of TurnKeys and ClusterTurnKeys.
    pub key_gets: u64,
    /// GETs of TurnCredentials. toma never makes these; the garbage collector does, to check
    /// that the owner of a new Secret exists.
    pub turncredential_gets: u64,
    /// LISTs of Secrets, TurnCredentials, TurnKeys and ClusterTurnKeys.
    pub lists: u64,
}

impl Counts {
    pub fn writes(&self) -> u64 {
        self.secret_writes + self.turncredential_writes + self.status_writes + self.event_writes
    }

    /// The GETs toma makes: Secrets and keys.
    pub fn operator_gets(&self) -> u64 {
        self.secret_gets + self.key_gets
    }

    /// Any request at all on these resources, reads included.
    pub fn any(&self) -> bool {
        self.writes() + self.failed_writes + self.secret_gets + self.key_gets + self.turncredential_gets > 0
    }
}

impl Requests {
    /// What happened between `before` and `self`, with `own_creates` TurnCredential creates (the
    /// bench client's) taken out.
    pub fn since(&self, before: &Requests, own_creates: u64) -> Counts {
        let mut counts = Counts::default();
        for (key, after) in &self.0 {
            let delta = (after - before.0.get(key).copied().unwrap_or(0.0)).max(0.0) as u64;
            if delta == 0 {
                continue;
            }
            let watched = matches!(
                key.resource.as_str(),
                "secrets" | "turncredentials" | "turnkeys" | "clusterturnkeys" | "events"
            );
            if !watched {
                continue;
            }
            if READ_VERBS.contains(&key.verb.as_str()) {
                match (key.verb.as_str(), key.resource.as_str()) {
                    ("GET", "secrets") => counts.secret_gets += delta,
                    ("GET", "turnkeys" | "clusterturnkeys") => counts.key_gets += delta,
                    ("GET", "turncredentials") => counts.turncredential_gets += delta,
                    ("LIST", r) if r != "events" => counts.lists += delta,
                    _ => {}
                }
                continue;
            }
            if !key.code.starts_with('2') {
                counts.failed_writes += delta;
            }
            match (key.resource.as_str(), key.subresource.as_str()) {
                ("secrets", _) => counts.secret_writes += delta,
                ("turncredentials", "status") => counts.status_writes += delta,
                ("turncredentials", _) => counts.turncredential_writes += delta,
                ("events", _) => counts.event_writes += delta,
                _ => {}
            }
        }
        counts.turncredential_writes = counts.turncredential_writes.saturating_sub(own_creates);
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests(entries: &[(&str, &str, &str, &str, f64)]) -> Requests {
        Requests(
            entries
                .iter()
                .map(|(verb, resource, subresource, code, n)| {
                    (
                        Key {
                            verb: verb.to_string(),
                            resource: resource.to_string(),
                            subresource: subresource.to_string(),
                            code: code.to_string(),
                        },
                        *n,
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn counts_writes_by_kind_and_takes_out_the_bench_creates() {
        let before = requests(&[("APPLY", "secrets", "", "200", 5.0)]);
        let after = requests(&[
            ("APPLY", "secrets", "", "200", 15.0),
            ("POST", "turncredentials", "", "201", 10.0),
            ("APPLY", "turncredentials", "status", "200", 10.0),
            ("PATCH", "turncredentials", "status", "409", 1.0),
            ("POST", "events", "", "201", 10.0),
            ("GET", "secrets", "", "200", 30.0),
            ("GET", "clusterturnkeys", "", "200", 10.0),
            ("WATCH", "secrets", "", "200", 2.0),
            ("POST", "configmaps", "", "201", 4.0),
        ]);
        let counts = after.since(&before, 10);
        assert_eq!(
            counts,
            Counts {
                secret_writes: 10,
                turncredential_writes: 0,
                status_writes: 11,
                event_writes: 10,
                failed_writes: 1,
                secret_gets: 30,
                key_gets: 10,
                turncredential_gets: 0,
                lists: 0,
            }
        );
        assert_eq!(counts.writes(), 31);
        assert_eq!(counts.operator_gets(), 40);
    }
}
