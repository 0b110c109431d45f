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

/// Waits until nothing touches Secrets, the operators' objects, keys or Events for two readings
/// one second apart: the garbage collector and the namespace controller finish a deletion a
/// little after the namespace is gone, an operator that just started may still be looking
/// around, and their requests must not count in the next phase. Gives up after `limit` with a
/// warning on stderr (the next phase's counts may then be a little high).
pub async fn quiesce(client: &Client, limit: Duration) -> Result<()> {
    let started = Instant::now();
    let mut before = scrape(client).await?;
    let mut quiet = 0;
    while quiet < 2 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = scrape(client).await?;
        let busy: Vec<Counts> = [&TOMA, &ESO]
            .into_iter()
            .map(|resources| now.since(&before, resources, 0))
            .filter(Counts::any)
            .collect();
        if started.elapsed() > limit {
            eprintln!("warning: the API server is still busy after {limit:?}, going on: {busy:?}");
            return Ok(());
        }
        quiet = if busy.is_empty() { quiet + 1 } else { 0 };
        before = now;
    }
    Ok(())
}

/// Requests that change nothing.
const READ_VERBS: [&str; 4] = ["GET", "LIST", "WATCH", "WATCHLIST"];

/// The resources an operator works with, by their plural names.
#[derive(Debug)]
pub struct Resources {
    /// What the user creates, one per credential, and its status subresource.
    pub objects: &'static str,
    /// Where the operator learns how to mint.
    pub keys: &'static [&'static str],
}

pub const TOMA: Resources = Resources {
    objects: "turncredentials",
    keys: &["turnkeys", "clusterturnkeys"],
};

/// external-secrets: ExternalSecrets, and the Webhook generator with the state objects ESO
/// keeps for generators.
pub const ESO: Resources = Resources {
    objects: "externalsecrets",
    keys: &["webhooks", "generatorstates"],
};

/// Writes and reads on the resources an operator touches, over one phase.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Counts {
    /// Writes (any verb but GET/LIST/WATCH) to Secrets.
    pub secret_writes: u64,
    /// Writes to the objects themselves (TurnCredentials or ExternalSecrets: creates, finalizer
    /// patches), after subtracting the bench client's own creates.
    pub object_writes: u64,
    /// Writes to the status subresource of the objects.
    pub status_writes: u64,
    /// Writes to Events (core and events.k8s.io).
    pub event_writes: u64,
    /// Writes to keys or generator objects (toma never writes its keys; ESO may keep generator
    /// state).
    pub key_writes: u64,
    /// Writes among the above that the API server refused (code not 2xx): conflicts, say.
    pub failed_writes: u64,
    /// GETs of Secrets (an operator reads its Secret, and the key's token Secret).
    pub secret_gets: u64,
    /// GETs of keys or generators.
    pub key_gets: u64,
    /// GETs of the objects. toma never makes these; the garbage collector does, to check that
    /// the owner of a new Secret exists.
    pub object_gets: u64,
    /// LISTs of Secrets, the objects and the keys.
    pub lists: u64,
    /// Every request on these resources by `VERB resource[/subresource]`, whatever its code, the
    /// bench client's own creates taken out.
    pub by_verb: BTreeMap<String, u64>,
}

impl Counts {
    pub fn writes(&self) -> u64 {
        self.secret_writes + self.object_writes + self.status_writes + self.event_writes + self.key_writes
    }

    /// The GETs an operator makes: Secrets and keys.
    pub fn operator_gets(&self) -> u64 {
        self.secret_gets + self.key_gets
    }

    /// Any request at all on these resources, reads but LISTs included.
    pub fn any(&self) -> bool {
        self.writes() + self.failed_writes + self.operator_gets() + self.object_gets > 0
    }
}

impl Requests {
    /// What happened to `resources` between `before` and `self`, with `own_creates` creates of
    /// the objects (the bench client's) taken out.
    pub fn since(&self, before: &Requests, resources: &Resources, own_creates: u64) -> Counts {
        let mut counts = Counts::default();
        for (key, after) in &self.0 {
            let delta = (after - before.0.get(key).copied().unwrap_or(0.0)).max(0.0) as u64;
            if delta == 0 {
                continue;
            }
            let resource = key.resource.as_str();
            let what = if resource == "secrets" {
                Kind::Secret
            } else if resource == resources.objects {
                Kind::Object
            } else if resources.keys.contains(&resource) {
                Kind::Key
            } else if resource == "events" {
                Kind::Event
            } else {
                continue;
            };
            let subresource = match key.subresource.as_str() {
                "" => String::new(),
                sub => format!("/{sub}"),
            };
            *counts
                .by_verb
                .entry(format!("{} {resource}{subresource}", key.verb))
                .or_default() += delta;
            if READ_VERBS.contains(&key.verb.as_str()) {
                let slot = match (key.verb.as_str(), what) {
                    ("GET", Kind::Secret) => &mut counts.secret_gets,
                    ("GET", Kind::Key) => &mut counts.key_gets,
                    ("GET", Kind::Object) => &mut counts.object_gets,
                    ("LIST", Kind::Secret | Kind::Object | Kind::Key) => &mut counts.lists,
                    _ => continue,
                };
                *slot += delta;
                continue;
            }
            if !key.code.starts_with('2') {
                counts.failed_writes += delta;
            }
            let slot = match (what, key.subresource.as_str()) {
                (Kind::Secret, _) => &mut counts.secret_writes,
                (Kind::Object, "status") => &mut counts.status_writes,
                (Kind::Object, _) => &mut counts.object_writes,
                (Kind::Key, _) => &mut counts.key_writes,
                (Kind::Event, _) => &mut counts.event_writes,
            };
            *slot += delta;
        }
        counts.object_writes = counts.object_writes.saturating_sub(own_creates);
        let creates = format!("POST {}", resources.objects);
        if let Some(count) = counts.by_verb.get_mut(&creates) {
            *count = count.saturating_sub(own_creates);
        }
        counts.by_verb.retain(|_, count| *count > 0);
        counts
    }
}

/// What a request touched.
#[derive(Clone, Copy)]
enum Kind {
    Secret,
    Object,
    Key,
    Event,
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
    fn counts_each_operators_requests_by_kind_and_takes_out_the_bench_creates() {
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
            ("LIST", "turncredentials", "", "200", 3.0),
            ("LIST", "events", "", "200", 3.0),
            ("POST", "configmaps", "", "201", 4.0),
            ("POST", "externalsecrets", "", "201", 10.0),
            ("UPDATE", "externalsecrets", "", "200", 5.0),
            ("UPDATE", "externalsecrets", "status", "409", 2.0),
            ("POST", "generatorstates", "", "201", 3.0),
            ("GET", "webhooks", "", "200", 7.0),
            ("GET", "externalsecrets", "", "200", 4.0),
        ]);
        let toma = after.since(&before, &TOMA, 10);
        assert_eq!(
            toma,
            Counts {
                secret_writes: 10,
                object_writes: 0,
                status_writes: 11,
                event_writes: 10,
                key_writes: 0,
                failed_writes: 1,
                secret_gets: 30,
                key_gets: 10,
                object_gets: 0,
                lists: 3,
                by_verb: [
                    ("APPLY secrets", 10),
                    ("APPLY turncredentials/status", 10),
                    ("PATCH turncredentials/status", 1),
                    ("POST events", 10),
                    ("GET secrets", 30),
                    ("GET clusterturnkeys", 10),
                    ("WATCH secrets", 2),
                    ("LIST turncredentials", 3),
                    ("LIST events", 3),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            }
        );
        assert_eq!((toma.writes(), toma.operator_gets()), (31, 40));

        // The same reading for external-secrets: its objects and generators, not toma's.
        let eso = after.since(&before, &ESO, 10);
        let objects = (eso.object_writes, eso.status_writes, eso.object_gets);
        assert_eq!(objects, (5, 2, 4));
        assert_eq!((eso.key_writes, eso.key_gets, eso.lists), (3, 7, 0));
        assert_eq!(
            (eso.failed_writes, eso.writes(), eso.operator_gets()),
            (2, 30, 37)
        );
        assert!(!Counts::default().any() && eso.any());
    }
}
