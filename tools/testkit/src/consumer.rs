//! A consumer of a TurnCredential's Secret as applications use it: a busybox pod on the local
//! node that mounts the Secret as a volume and reads it once a second, and a record of the
//! versions toma wrote, to compare the pod's reads with.
//!
//! The pod prints one line per read: the read's time (whole Unix seconds, the resolution of
//! busybox's `date`), the `expiresAt` it read and an MD5 of `iceServers.json`, never the
//! credential itself.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::{eventually, kubectl, text};

/// Where the pod mounts the Secret.
pub const MOUNT_PATH: &str = "/ice";

/// One read of the mounted files by the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    /// When the pod read, in whole Unix seconds (the read happened within that second).
    pub at: i64,
    /// The `expiresAt` file, or None if it could not be read or parsed.
    pub expires_at: Option<Timestamp>,
    /// MD5 of `iceServers.json`.
    pub ice_servers_md5: String,
}

impl Read {
    /// Whether the credential read had expired when it was read. `expiresAt` is a whole second and
    /// the read happened within the second `at`, so this is exact.
    pub fn saw_expired(&self) -> bool {
        self.expires_at.is_none_or(|e| e.as_second() <= self.at)
    }
}

/// The pod `name` mounting Secret `secret` at [`MOUNT_PATH`] and reading it once a second.
pub fn consumer_pod(namespace: &str, name: &str, secret: &str) -> String {
    // busybox's date has no sub-second format; the files are read right after it.
    let script = format!(
        r#"while true; do t=$(date +%s); e=$(cat {MOUNT_PATH}/expiresAt); m=$(md5sum < {MOUNT_PATH}/iceServers.json); echo "read $t expires=$e md5=${{m%% *}}"; sleep 1; done"#
    );
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
    - name: reader
      image: localhost/busybox:latest
      imagePullPolicy: Never
      command: [sh, -c, '{script}']
      volumeMounts: [{{name: ice, mountPath: {MOUNT_PATH}, readOnly: true}}]
  volumes: [{{name: ice, secret: {{secretName: {secret}}}}}]
"#
    )
}

/// Starts [`consumer_pod`] and waits until it runs. A fresh namespace has no default
/// ServiceAccount for a moment, and the API server refuses pods until it has.
pub async fn start_consumer_pod(namespace: &str, name: &str, secret: &str) {
    let manifest = consumer_pod(namespace, name, secret);
    eventually(Duration::from_secs(30), || async {
        kubectl(&["apply", "-f", "-"], Some(&manifest)).is_ok()
    })
    .await;
    let pod = format!("pod/{name}");
    if let Err(error) = kubectl(
        &[
            "wait",
            "-n",
            namespace,
            "--for=condition=Ready",
            &pod,
            "--timeout=120s",
        ],
        None,
    ) {
        let describe = kubectl(&["describe", "-n", namespace, &pod], None).unwrap_or_default();
        panic!("the consumer pod never ran: {error}\n{describe}");
    }
}

/// Every read the pod `name` has logged so far, in order.
pub fn consumer_reads(namespace: &str, name: &str) -> Vec<Read> {
    let log = kubectl(&["logs", "-n", namespace, name], None)
        .unwrap_or_else(|e| panic!("kubectl logs {namespace}/{name}: {e}"));
    parse_reads(&log)
}

/// The reads in the pod's log: lines `read <unix seconds> expires=<RFC 3339> md5=<hex>`.
pub fn parse_reads(log: &str) -> Vec<Read> {
    log.lines()
        .filter_map(|line| line.strip_prefix("read "))
        .map(|line| {
            let mut fields = line.split(' ');
            let at = fields.next().and_then(|t| t.parse().ok());
            let expires = fields.next().and_then(|e| e.strip_prefix("expires="));
            let md5 = fields.next().and_then(|m| m.strip_prefix("md5="));
            let (Some(at), Some(expires), Some(md5)) = (at, expires, md5) else {
                panic!("not a read: {line}");
            };
            Read {
                at,
                expires_at: expires.parse().ok(),
                ice_servers_md5: md5.to_string(),
            }
        })
        .collect()
}

/// A version of the Secret as the test saw it through the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub expires_at: Timestamp,
    /// When the poll first saw it (polled every 100 ms).
    pub seen_at: Timestamp,
    /// When toma wrote it: the time of toma's entry in managedFields, in whole seconds.
    pub written_at: Option<Timestamp>,
}

/// The versions of a Secret, recorded by polling it every 100 ms until dropped.
pub struct SecretVersions {
    versions: Arc<Mutex<Vec<Version>>>,
    poller: tokio::task::JoinHandle<()>,
}

impl SecretVersions {
    pub fn record(secrets: Api<Secret>, name: &str) -> SecretVersions {
        let versions = Arc::new(Mutex::new(Vec::<Version>::new()));
        let name = name.to_string();
        let record = versions.clone();
        let poller = tokio::spawn(async move {
            loop {
                if let Ok(Some(secret)) = secrets.get_opt(&name).await {
                    let seen_at = Timestamp::now();
                    let expires_at = text(&secret, "expiresAt").parse::<Timestamp>().ok();
                    let mut versions = record.lock().unwrap();
                    if let Some(expires_at) = expires_at
                        && versions.last().is_none_or(|v| v.expires_at != expires_at)
                    {
                        versions.push(Version {
                            expires_at,
                            seen_at,
                            written_at: toma_write_time(&secret),
                        });
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        SecretVersions { versions, poller }
    }

    pub fn versions(&self) -> Vec<Version> {
        self.versions.lock().unwrap().clone()
    }
}

impl Drop for SecretVersions {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

/// The time of toma's server-side apply in the Secret's managedFields.
fn toma_write_time(secret: &Secret) -> Option<Timestamp> {
    secret
        .metadata
        .managed_fields
        .as_ref()?
        .iter()
        .find(|f| f.manager.as_deref() == Some("toma") && f.operation.as_deref() == Some("Apply"))?
        .time
        .as_ref()
        .map(|t| t.0)
}

/// When the pod first read each version, after it started: (version, first read's time). The
/// version the pod found when it started is left out, as it was no update.
pub fn first_reads(versions: &[Version], reads: &[Read]) -> Vec<(Version, i64)> {
    let Some(first) = reads.first() else {
        return Vec::new();
    };
    versions
        .iter()
        .filter(|v| Some(v.expires_at) != first.expires_at)
        .filter_map(|v| {
            let read = reads.iter().find(|r| r.expires_at == Some(v.expires_at))?;
            Some((v.clone(), read.at))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    #[test]
    fn reads_are_parsed_from_the_log_and_other_lines_ignored() {
        let log = "starting\nread 1000 expires=1970-01-01T00:20:00Z md5=abc\nread 1001 expires= md5=d41d\n";
        let reads = parse_reads(log);
        assert_eq!(
            reads,
            [
                Read {
                    at: 1000,
                    expires_at: Some(at(1200)),
                    ice_servers_md5: "abc".into()
                },
                Read {
                    at: 1001,
                    expires_at: None,
                    ice_servers_md5: "d41d".into()
                },
            ]
        );
        assert!(!reads[0].saw_expired());
        assert!(reads[1].saw_expired(), "a failed read counts against the pod");
    }

    #[test]
    fn a_read_in_the_second_of_expiry_saw_an_expired_credential() {
        let read = |t: i64| Read {
            at: t,
            expires_at: Some(at(1200)),
            ice_servers_md5: String::new(),
        };
        assert!(!read(1199).saw_expired());
        assert!(read(1200).saw_expired());
    }

    #[test]
    fn first_reads_leave_out_the_version_the_pod_started_with() {
        let version = |expires: i64, seen: i64| Version {
            expires_at: at(expires),
            seen_at: at(seen),
            written_at: None,
        };
        let versions = [version(200, 80), version(230, 110), version(260, 140)];
        let read = |t: i64, expires: i64| Read {
            at: t,
            expires_at: Some(at(expires)),
            ice_servers_md5: String::new(),
        };
        let reads = [read(100, 200), read(120, 200), read(121, 230), read(150, 230)];
        assert_eq!(first_reads(&versions, &reads), [(version(230, 110), 121)]);
    }
}
