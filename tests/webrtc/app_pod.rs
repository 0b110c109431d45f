//! A web app in a pod on the local node, as a user would deploy one: busybox `httpd` on the host
//! network serves the test page (from a ConfigMap volume) and, beside it, the `iceServers.json`
//! of the TurnCredential's Secret, mounted as a volume so that the kubelet updates the file after
//! each rotation (a subPath mount never would).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, ServiceAccount};
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;
use toma_testkit::{Env, free_port};

use crate::browser::PAGE;

/// Debian's busybox-static, imported on the node by `hack/cluster.sh up`; it has `httpd`.
const IMAGE: &str = "localhost/busybox:latest";
const NAME: &str = "app";
/// Starting a busybox pod takes about a second; this only bounds a broken node.
const READY_LIMIT: Duration = Duration::from_secs(90);

pub struct AppPod {
    pods: Api<Pod>,
    port: u16,
    /// The pod's UID once it was Ready.
    pub uid: String,
    /// From the pod's creation to Ready.
    pub ready_after: Duration,
}

impl AppPod {
    /// Creates the ConfigMap `app-page` with the page, and the pod `app` serving it and the
    /// `iceServers.json` of the Secret `secret_name` on 127.0.0.1 at a free port; returns once
    /// the pod is Ready (its probe fetched iceServers.json).
    pub async fn start(env: &Env, secret_name: &str) -> AppPod {
        let nodes: Api<Node> = Api::all(env.client.clone());
        let listed = nodes.list(&ListParams::default()).await.unwrap();
        assert!(
            !listed.items.is_empty(),
            "the cluster has no node: `hack/cluster.sh up` starts one unless TOMA_NODE=0"
        );
        let namespace = &env.namespace;
        // The ServiceAccount admission refuses pods until the namespace's default account exists.
        let accounts: Api<ServiceAccount> = Api::namespaced(env.client.clone(), namespace);
        toma_testkit::eventually(Duration::from_secs(30), || async {
            accounts.get_opt("default").await.unwrap().is_some()
        })
        .await;

        let config_maps: Api<ConfigMap> = Api::namespaced(env.client.clone(), namespace);
        let page: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "app-page"},
            "data": {"index.html": PAGE},
        }))
        .unwrap();
        config_maps.create(&PostParams::default(), &page).await.unwrap();

        let port = free_port();
        let pods: Api<Pod> = Api::namespaced(env.client.clone(), namespace);
        let created = Instant::now();
        pods.create(&PostParams::default(), &pod(port, secret_name))
            .await
            .unwrap();
        let deadline = created + READY_LIMIT;
        let pod = loop {
            let pod = pods.get(NAME).await.unwrap();
            if is_ready(&pod) {
                break pod;
            }
            assert!(
                Instant::now() < deadline,
                "pod {namespace}/{NAME} not Ready within {READY_LIMIT:?}: {:?}",
                pod.status
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        AppPod {
            pods,
            port,
            uid: pod.metadata.uid.expect("a created pod has a UID"),
            ready_after: created.elapsed(),
        }
    }

    /// The page as the pod serves it.
    pub fn page_url(&self) -> String {
        format!("http://127.0.0.1:{}/index.html", self.port)
    }

    /// The bytes of iceServers.json as the pod serves them now, or None if it does not answer
    /// with 200.
    pub async fn served_ice(&self) -> Option<Vec<u8>> {
        let url = format!("http://127.0.0.1:{}/iceServers.json", self.port);
        let response = reqwest::get(&url).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        Some(response.bytes().await.ok()?.to_vec())
    }

    /// The pod's UID now and how often its container was restarted.
    pub async fn uid_and_restarts(&self) -> (String, i32) {
        let pod = self.pods.get(NAME).await.unwrap();
        let restarts = pod
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|statuses| statuses.first().map(|c| c.restart_count))
            .expect("a running pod reports its container");
        (pod.metadata.uid.unwrap(), restarts)
    }
}

/// The app pod:
/// - `hostNetwork`: pod-network pods cannot reach the machine's loopback, where Chromium and
///   coturn are; httpd listens on 127.0.0.1 only;
/// - the ConfigMap at /page and the Secret at /turn, both whole volumes, linked into the
///   document root /www: a link opens the kubelet's current `..data` on every request;
/// - `httpd -f`: busybox's web server in the foreground, as the container's process;
/// - no ServiceAccount token: the app never talks to the API server.
fn pod(port: u16, secret_name: &str) -> Pod {
    let script = format!(
        "mkdir -p /www && ln -sf /page/index.html /www/index.html \
         && ln -sf /turn/iceServers.json /www/iceServers.json \
         && exec httpd -f -p 127.0.0.1:{port} -h /www"
    );
    serde_json::from_value(json!({
        "metadata": {"name": NAME},
        "spec": {
            "hostNetwork": true,
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "httpd",
                "image": IMAGE,
                // A `latest` tag would default to Always, and the node pulls nothing.
                "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", script],
                "readinessProbe": {
                    "httpGet": {"host": "127.0.0.1", "port": port, "path": "/iceServers.json"},
                    "periodSeconds": 1,
                },
                "volumeMounts": [
                    {"name": "page", "mountPath": "/page", "readOnly": true},
                    {"name": "turn", "mountPath": "/turn", "readOnly": true},
                ],
            }],
            "volumes": [
                {"name": "page", "configMap": {"name": "app-page"}},
                {"name": "turn", "secret": {"secretName": secret_name}},
            ],
        },
    }))
    .unwrap()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}
