//! WebRTC tests: the Secret toma writes, used by real clients against a real TURN server.
//!
//! Each test runs the real `toma` binary against the real control plane (as tests/e2e does),
//! starts coturn on 127.0.0.1 with a random TURN REST shared secret, and hands the Secret's
//! `iceServers.json` byte for byte to headless Chromium, whose `RTCPeerConnection` (with
//! `iceTransportPolicy: "relay"`) must or must not gather a relay candidate from that coturn.
//! One test takes the whole way a user's app does: a pod on the local node serves the page and
//! the mounted Secret's `iceServers.json`, before and after a rotation.
//! Needs `hack/webrtc-prerequisites.sh` (coturn, chromium) and the control plane and node of
//! `make test`; the tests are `#[ignore]`d so that a bare `cargo test` needs neither:
//!
//!   cargo test --test webrtc -- --ignored

mod app_pod;
mod browser;
mod coturn;
mod scratch;
mod uclient;

use std::time::{Duration, Instant};

use app_pod::AppPod;
use browser::Gathered;
use coturn::Coturn;
use fake_cloudflare::UrlSet;
use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;
use toma_testkit::{Env, TOKEN, apply, free_port, start_fake_cloudflare, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn shared_secret_credential_gathers_a_relay_candidate_from_coturn_in_chromium() {
    let (coturn, _env, ice) = issued_by_coturns_key("webrtc-shared-secret", WITH_STUN, "").await;
    let gathered = browser::gather(ice.clone()).await;

    assert_relayed_by(&gathered, &coturn);
    let (username, _) = turn_pair(&ice);
    coturn.assert_allocated_for(&username);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane and the node of `make test`"]
async fn app_pod_serves_chromium_the_mounted_credential_and_the_rotated_one_without_a_restart() {
    let (coturn, env, ice) = issued_by_coturns_key("webrtc-app-pod", WITHOUT_STUN, "").await;
    let app = AppPod::start(&env, "web").await;
    // Compared, never shown: the bytes hold the credential.
    assert!(
        app.served_ice().await.is_some_and(|served| served == ice),
        "the pod does not serve the Secret's iceServers.json as the API stores it"
    );
    let (before, _) = turn_pair(&ice);

    let gathered = browser::gather_from(&app.page_url()).await;
    assert_relayed_by(&gathered, &coturn);
    coturn.assert_allocated_for(&before);

    let rotated = Instant::now();
    env.force_rotation("web", "1");
    let written = wait_for_secret_username_other_than(&env, "web", &before).await;
    let (served_at, served) = wait_for_served_username_other_than(&app, &before).await;
    let (rewritten, changed) = (written - rotated, served_at - written);
    let ice = issued_ice_json(&env, "web").await;
    assert!(
        served == ice,
        "after the rotation the pod serves something other than the Secret's iceServers.json"
    );
    let (after, _) = turn_pair(&ice);
    println!(
        "app pod: Ready {:.1} s after its creation; Secret rewritten {:.2} s after the rotate \
         annotation; served iceServers.json changed {:.1} s after the Secret write",
        app.ready_after.as_secs_f64(),
        rewritten.as_secs_f64(),
        changed.as_secs_f64(),
    );

    assert!(!coturn.allocated_for(&after), "no one had the new credential yet");
    let gathered = browser::gather_from(&app.page_url()).await;
    assert_relayed_by(&gathered, &coturn);
    coturn.assert_allocated_for(&after);
    assert_eq!(
        app.uid_and_restarts().await,
        (app.uid.clone(), 0),
        "the app pod was replaced or restarted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn cloudflare_credential_minted_through_the_fake_gathers_a_relay_candidate_from_coturn() {
    let coturn = Coturn::start();
    let mut env = Env::start("webrtc-cloudflare").await;
    // The fake Cloudflare in TURN REST mode: it answers generate-ice-servers with coturn's URLs
    // and a credential signed with coturn's secret, as Cloudflare's TURN service would for its
    // own servers. Everything but Cloudflare itself is real.
    env.fake = start_fake_cloudflare(fake_cloudflare::Config {
        turn_secret: Some(coturn.secret.clone()),
        urls: UrlSet::Custom(vec![coturn.turn_udp(), coturn.turn_tcp()]),
        ..Default::default()
    })
    .await;
    env.apply_cloudflare_key(TOKEN);
    env.apply_credential("web", "  ttlSeconds: 3600");

    let ice = issued_ice_json(&env, "web").await;
    let mints = env.fake.mints();
    assert_eq!(mints.len(), 1, "one credential minted");
    let (username, credential) = turn_pair(&ice);
    assert_eq!(
        (username.as_str(), credential.as_str()),
        (mints[0].username.as_str(), mints[0].credential.as_str()),
        "the Secret holds the credential the provider minted"
    );
    let gathered = browser::gather(ice).await;

    assert_relayed_by(&gathered, &coturn);
    coturn.assert_allocated_for(&username);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn tampered_credential_gathers_no_relay_candidate() {
    let (coturn, _env, ice) = issued_by_coturns_key("webrtc-tampered", WITHOUT_STUN, "").await;
    let (username, credential) = turn_pair(&ice);

    // One character of the credential changed; everything else as in the Secret.
    let mut tampered = credential.clone().into_bytes();
    tampered[0] = if tampered[0] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let gathered = browser::gather(with_turn_pair(&ice, &username, &tampered)).await;

    assert_refused_by(&gathered, &coturn);
    coturn.assert_refused(&username);
    // The same page with the Secret's bytes, unchanged: the refusal came from the edit alone.
    assert_relayed_by(&browser::gather(ice).await, &coturn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn expired_credential_gathers_no_relay_candidate() {
    let (coturn, env, ice) = issued_by_coturns_key("webrtc-expired", WITHOUT_STUN, "").await;

    // The username coturn checks the expiry against is the expiry toma reports.
    let (username, _) = turn_pair(&ice);
    let tc = env.credentials().get("web").await.unwrap();
    let expires_at = tc.status.unwrap().expires_at.unwrap().0;
    assert_eq!(username, expires_at.as_second().to_string());
    let secret = env.secrets().get("web").await.unwrap();
    assert_eq!(text(&secret, "expiresAt"), expires_at.to_string());

    // A correctly signed credential (signed by the fake Cloudflare's independent code) that
    // expired a minute ago, and, as the control, one that expires in an hour.
    let now = jiff::Timestamp::now().as_second();
    let sign = |expiry: i64| {
        let username = expiry.to_string();
        let credential = fake_cloudflare::turn_rest_password(&coturn.secret, &username);
        (username, credential)
    };
    let (expired, expired_credential) = sign(now - 60);
    let gathered = browser::gather(with_turn_pair(&ice, &expired, &expired_credential)).await;
    assert_refused_by(&gathered, &coturn);
    coturn.assert_refused(&expired);

    let (fresh, fresh_credential) = sign(now + 3600);
    let gathered = browser::gather(with_turn_pair(&ice, &fresh, &fresh_credential)).await;
    assert_relayed_by(&gathered, &coturn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn credential_from_a_turn_key_with_another_secret_gathers_no_relay_candidate() {
    let coturn = Coturn::start();
    let env = Env::start("webrtc-wrong-secret").await;
    let not_coturns = format!("{}-not", coturn.secret);
    apply_shared_secret_key(&env, &not_coturns, &[coturn.turn_udp(), coturn.turn_tcp()]);
    env.apply_credential_with_key("web", COTURN_KEY, "  ttlSeconds: 3600");
    // toma cannot tell: the credential is Issued, and useless.
    let ice = issued_ice_json(&env, "web").await;
    let (username, _) = turn_pair(&ice);

    let gathered = browser::gather(ice).await;

    assert_refused_by(&gathered, &coturn);
    coturn.assert_refused(&username);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn turnutils_uclient_relays_with_the_secrets_username_and_credential_and_fails_with_a_wrong_one() {
    let (coturn, env, _) = issued_by_coturns_key("webrtc-uclient", WITHOUT_STUN, "").await;
    let secret = env.secrets().get("web").await.unwrap();
    let (username, credential) = (text(&secret, "username"), text(&secret, "credential"));

    let good = uclient::relay_through(coturn.port, &username, &credential).await;
    assert!(good.success, "turnutils_uclient failed:\n{}", good.output);
    let (sent, received) = good.messages.expect("a message summary");
    assert!(
        sent > 0 && received > 0,
        "no data went through the relays (sent {sent}, received {received}):\n{}",
        good.output
    );
    coturn.assert_allocated_for(&username);

    let wrong = format!("{credential}x");
    let bad = uclient::relay_through(coturn.port, &username, &wrong).await;
    assert!(!bad.success, "a wrong password was accepted:\n{}", bad.output);
    assert!(
        bad.output.contains("Cannot complete Allocation"),
        "{}",
        bad.output
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn tcp_only_url_filter_keeps_tcp_turn_urls_and_chromium_relays_over_tcp() {
    let (coturn, env, ice) =
        issued_by_coturns_key("webrtc-tcp-only", WITH_STUN, "  urlFilter: {transports: [tcp]}").await;
    let secret = env.secrets().get("web").await.unwrap();

    // STUN stays (it has no transport), UDP TURN goes.
    let expected = vec![coturn.stun(), coturn.turn_tcp()];
    assert_eq!(text(&secret, "urls").lines().collect::<Vec<_>>(), expected);
    assert_eq!(ice_urls(&ice), expected);

    let gathered = browser::gather(ice).await;
    assert_relayed_by(&gathered, &coturn);
    for relay in gathered.relays() {
        assert_eq!(relay.url.as_deref(), Some(coturn.turn_tcp().as_str()));
        assert_eq!(relay.relay_protocol.as_deref(), Some("tcp"), "{gathered:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn minimal_url_profile_keeps_three_urls_and_chromium_still_relays() {
    let coturn = Coturn::start();
    let env = Env::start("webrtc-minimal").await;
    // What a provider may offer: two STUN URLs, TURN over UDP and TCP, and TLS (on a port where
    // nothing listens, as this coturn serves no TLS: the attempt fails at once).
    let turns = format!("turns:127.0.0.1:{}?transport=tcp", free_port());
    let offered = vec![
        coturn.stun(),
        format!("stun:127.0.0.1:{}", free_port()),
        coturn.turn_udp(),
        coturn.turn_tcp(),
        turns.clone(),
    ];
    apply_shared_secret_key(&env, &coturn.secret, &offered);
    env.apply_credential_with_key(
        "web",
        COTURN_KEY,
        "  ttlSeconds: 3600\n  urlFilter: {profile: minimal}",
    );
    let ice = issued_ice_json(&env, "web").await;

    assert_eq!(ice_urls(&ice), [coturn.stun(), coturn.turn_udp(), turns]);
    let gathered = browser::gather(ice).await;
    assert_relayed_by(&gathered, &coturn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn default_url_filter_drops_port_53_urls_from_the_secret() {
    let mut env = Env::start("webrtc-port-53").await;
    env.fake = start_fake_cloudflare(fake_cloudflare::Config {
        urls: UrlSet::WithPort53,
        ..Default::default()
    })
    .await;
    env.apply_cloudflare_key(TOKEN);
    env.apply_credential("default", "  ttlSeconds: 3600");
    env.apply_credential(
        "unfiltered",
        "  ttlSeconds: 3600\n  urlFilter: {excludePorts: []}",
    );
    let default = issued_ice_json(&env, "default").await;
    let unfiltered = issued_ice_json(&env, "unfiltered").await;

    // The provider offered port-53 URLs: they reach the Secret only without the default filter.
    let offered = ice_urls(&unfiltered);
    let on_53: Vec<&String> = offered.iter().filter(|u| port(u) == Some(53)).collect();
    assert_eq!(
        on_53,
        [
            "stun:stun.cloudflare.com:53",
            "turn:turn.cloudflare.com:53?transport=udp"
        ]
    );
    let kept: Vec<String> = offered.iter().filter(|u| port(u) != Some(53)).cloned().collect();
    assert_eq!(ice_urls(&default), kept);
    let secret = env.secrets().get("default").await.unwrap();
    assert_eq!(text(&secret, "urls").lines().collect::<Vec<_>>(), kept);
    // Port 5349 is not port 53.
    assert!(kept.contains(&"turns:turn.cloudflare.com:5349?transport=tcp".to_string()));
}

// ---------------------------------------------------------------------------------------------

/// A Secret `coturn` holding `secret`, and a TurnKey `coturn` in the test's namespace that
/// mints TURN REST credentials for `urls` with it.
fn apply_shared_secret_key(env: &Env, secret: &str, urls: &[String]) {
    let ns = &env.namespace;
    // A JSON list is YAML too.
    let urls = serde_json::to_string(urls).unwrap();
    apply(&format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: coturn, namespace: {ns}}}
stringData: {{secret: "{secret}"}}
---
apiVersion: toma.dev/v1alpha1
kind: TurnKey
metadata: {{name: coturn, namespace: {ns}}}
spec:
  sharedSecret:
    secretRef: {{name: coturn, key: secret}}
    urls: {urls}
"#
    ));
}

/// The keyRef of the TurnKey `coturn` (keyRef kind defaults to TurnKey).
const COTURN_KEY: &str = "{name: coturn}";
const WITH_STUN: bool = true;
const WITHOUT_STUN: bool = false;

/// coturn, and toma in a namespace named after `test` with a TurnKey `coturn` holding coturn's
/// shared secret for coturn's TURN URLs (and its STUN URL first if `stun`), and a TurnCredential
/// `web` valid for an hour, with `extra_spec` lines, issued from it. Returns the Secret's
/// `iceServers.json` as [`issued_ice_json`] does.
async fn issued_by_coturns_key(test: &str, stun: bool, extra_spec: &str) -> (Coturn, Env, Vec<u8>) {
    let coturn = Coturn::start();
    let env = Env::start(test).await;
    let mut urls = vec![coturn.turn_udp(), coturn.turn_tcp()];
    if stun {
        urls.insert(0, coturn.stun());
    }
    apply_shared_secret_key(&env, &coturn.secret, &urls);
    env.apply_credential_with_key("web", COTURN_KEY, &format!("  ttlSeconds: 3600\n{extra_spec}"));
    let ice = issued_ice_json(&env, "web").await;
    (coturn, env, ice)
}

/// How often the waits for a rotation look: the figures they give are this precise.
const POLL: Duration = Duration::from_millis(100);

/// Waits until the Secret `name` holds a username other than `old`, as the API shows it, and
/// returns when it saw that.
async fn wait_for_secret_username_other_than(env: &Env, name: &str, old: &str) -> Instant {
    let limit = Duration::from_secs(60);
    let deadline = Instant::now() + limit;
    loop {
        let secret = env.secrets().get(name).await.unwrap();
        if text(&secret, "username") != old {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "Secret {name} still holds username {old} after {limit:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the pod serves an iceServers.json whose username is not `old` (the kubelet
/// updates a mounted Secret at its next sync of the pod: 60-90 s with the default
/// syncFrequency of 1m), and returns when it saw that, and the bytes.
async fn wait_for_served_username_other_than(app: &AppPod, old: &str) -> (Instant, Vec<u8>) {
    let limit = Duration::from_secs(240);
    let deadline = Instant::now() + limit;
    loop {
        if let Some(served) = app.served_ice().await
            && turn_pair(&served).0 != old
        {
            return (Instant::now(), served);
        }
        assert!(
            Instant::now() < deadline,
            "the pod still serves username {old} after {limit:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits for the TurnCredential `name` to be Issued and returns the bytes of its Secret's
/// `iceServers.json`, as the API server stores them.
async fn issued_ice_json(env: &Env, name: &str) -> Vec<u8> {
    env.wait_for_reason(name, "Issued").await;
    let secret: Secret = env.secrets().get(name).await.unwrap();
    secret.data.as_ref().expect("Secret data")["iceServers.json"]
        .0
        .clone()
}

fn parse(ice: &[u8]) -> Value {
    let value: Value = serde_json::from_slice(ice).expect("iceServers.json is JSON");
    assert!(
        value["iceServers"].is_array(),
        "not {{\"iceServers\": [...]}}: {value}"
    );
    value
}

/// The username and credential of the first server that has them.
fn turn_pair(ice: &[u8]) -> (String, String) {
    let value = parse(ice);
    let server = value["iceServers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s.get("username").is_some())
        .expect("a server with a username");
    (
        server["username"].as_str().unwrap().to_string(),
        server["credential"].as_str().unwrap().to_string(),
    )
}

/// The same document with another username and credential on every server that has them.
fn with_turn_pair(ice: &[u8], username: &str, credential: &str) -> Vec<u8> {
    let mut value = parse(ice);
    for server in value["iceServers"].as_array_mut().unwrap() {
        if server.get("username").is_some() {
            server["username"] = username.into();
            server["credential"] = credential.into();
        }
    }
    serde_json::to_vec(&value).unwrap()
}

/// Every URL, in order; `urls` may be a string or a list.
fn ice_urls(ice: &[u8]) -> Vec<String> {
    let value = parse(ice);
    let mut urls = Vec::new();
    for server in value["iceServers"].as_array().unwrap() {
        match &server["urls"] {
            Value::String(url) => urls.push(url.clone()),
            Value::Array(list) => urls.extend(list.iter().map(|u| u.as_str().unwrap().to_string())),
            other => panic!("urls is {other}"),
        }
    }
    urls
}

/// The explicit port of a stun:/turn:/turns: URL.
fn port(url: &str) -> Option<u16> {
    let without_query = url.split('?').next().unwrap();
    without_query.rsplit_once(':')?.1.parse().ok()
}

/// Chromium gathered relay candidates, all UDP relays that coturn allocated on 127.0.0.1 in its
/// relay port range (49152-65535 by default), from coturn's URLs; and gathering completed.
fn assert_relayed_by(gathered: &Gathered, coturn: &Coturn) {
    assert!(gathered.error.is_none(), "the page failed: {gathered:?}");
    assert!(
        gathered.relay,
        "no relay candidate: {gathered:?}\n{}",
        coturn.log()
    );
    assert!(!gathered.timed_out, "gathering never completed: {gathered:?}");
    let urls = [coturn.turn_udp(), coturn.turn_tcp()];
    for relay in gathered.relays() {
        assert_eq!(relay.address.as_deref(), Some("127.0.0.1"), "{gathered:?}");
        assert_eq!(relay.protocol.as_deref(), Some("udp"), "{gathered:?}");
        assert!(
            relay.port.is_some_and(|p| p >= 49152),
            "not a coturn relay port: {gathered:?}"
        );
        assert!(
            relay.url.as_ref().is_some_and(|u| urls.contains(u)),
            "a relay candidate from elsewhere: {gathered:?}"
        );
    }
}

/// Chromium gathered nothing, because coturn answered 401 on its URLs: the page itself ran
/// and reached the server.
fn assert_refused_by(gathered: &Gathered, coturn: &Coturn) {
    assert!(gathered.error.is_none(), "the page failed: {gathered:?}");
    assert!(
        !gathered.relay && gathered.candidates.is_empty(),
        "a candidate was gathered: {gathered:?}"
    );
    assert!(!gathered.timed_out, "gathering never completed: {gathered:?}");
    let urls = [coturn.turn_udp(), coturn.turn_tcp()];
    assert!(
        gathered
            .errors
            .iter()
            .any(|e| e.error_code == 401 && e.url.as_ref().is_some_and(|u| urls.contains(u))),
        "coturn did not answer 401: {gathered:?}"
    );
}
