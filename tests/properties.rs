//! Property tests of the pieces that take outside input: the provider-answer parser, the URL
//! filter, and the Secret and status builders. `PROPTEST_CASES` sets how many cases run
//! (256 by default; hack/test.sh runs more).

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use toma::api::{KeyKind, KeyRef, Transport, TurnCredential, TurnCredentialSpec, UrlFilter, UrlProfile};
use toma::cloudflare::parse_generate_answer;
use toma::credential::{Credential, IceServer, filter_urls};
use toma::secret::{desired_secret, is_owned_by, stored_credential};
use toma::status;

fn turn_credential(ttl: i64, renew_before: Option<i64>) -> TurnCredential {
    let mut tc = TurnCredential::new(
        "web",
        TurnCredentialSpec {
            renew_before_seconds: renew_before,
            ..TurnCredentialSpec::with_key(
                KeyRef {
                    kind: KeyKind::TurnKey,
                    name: "k".into(),
                },
                ttl,
            )
        },
    );
    tc.metadata.namespace = Some("app".into());
    tc.metadata.uid = Some("uid".into());
    tc.metadata.generation = Some(1);
    tc
}

fn url() -> impl Strategy<Value = String> {
    prop_oneof![
        "(stun|turn|turns):[a-z.]{1,12}(:[0-9]{1,5})?(\\?transport=(udp|tcp))?",
        "\\PC{0,40}",
    ]
}

fn ice_server() -> impl Strategy<Value = IceServer> {
    (
        prop::collection::vec(url(), 1..5),
        prop::option::of("\\PC{1,30}"),
        prop::option::of("\\PC{1,30}"),
    )
        .prop_map(|(urls, username, credential)| IceServer {
            urls,
            username,
            credential,
        })
}

fn credential() -> impl Strategy<Value = Credential> {
    (
        prop::collection::vec(ice_server(), 1..4),
        0i64..4_000_000_000,
        60i64..=172_800,
    )
        .prop_map(|(ice_servers, issued, ttl)| {
            let issued_at = Timestamp::from_second(issued).unwrap();
            Credential {
                ice_servers,
                issued_at,
                expires_at: issued_at + SignedDuration::from_secs(ttl),
            }
        })
}

proptest! {
    // Failures found here are kept in tests/properties.proptest-regressions and replayed first.
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_parser_never_panics_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_generate_answer(&body);
    }

    #[test]
    fn the_parser_never_panics_on_arbitrary_json(body in "\\{\"iceServers\":\\PC{0,200}\\}") {
        let _ = parse_generate_answer(body.as_bytes());
    }

    #[test]
    fn every_well_formed_answer_is_read_back_exactly(servers in prop::collection::vec(ice_server(), 1..4)) {
        let body = serde_json::to_vec(&serde_json::json!({"iceServers": servers})).unwrap();
        match parse_generate_answer(&body) {
            Ok(parsed) => prop_assert_eq!(parsed, servers),
            // Only answers without a usable TURN pair or with a blank URL are refused.
            Err(_) => prop_assert!(
                !servers.iter().any(|s| s.username.as_deref().is_some_and(|u| !u.is_empty())
                    && s.credential.as_deref().is_some_and(|c| !c.is_empty()))
                || servers.iter().any(|s| s.urls.iter().any(|u| u.trim().is_empty()))
            ),
        }
    }

    #[test]
    fn filtering_only_removes_urls(
        servers in prop::collection::vec(ice_server(), 0..4),
        ports in prop::collection::vec(any::<u16>(), 0..3),
        transports in prop::collection::vec(prop_oneof![Just(Transport::Udp), Just(Transport::Tcp), Just(Transport::Tls)], 0..3),
        profile in prop_oneof![Just(UrlProfile::All), Just(UrlProfile::Minimal)],
    ) {
        let all: Vec<String> = servers.iter().flat_map(|s| s.urls.clone()).collect();
        let kept = filter_urls(servers, &UrlFilter { exclude_ports: ports, transports, profile });
        for server in &kept {
            prop_assert!(!server.urls.is_empty());
            for url in &server.urls {
                prop_assert!(all.contains(url));
            }
        }
        if profile == UrlProfile::Minimal {
            // One STUN URL and at most two TURN URLs.
            prop_assert!(kept.iter().map(|s| s.urls.len()).sum::<usize>() <= 3);
        }
    }

    #[test]
    fn a_written_secret_reads_back_as_the_same_credential(credential in credential()) {
        let tc = turn_credential(3600, None);
        let secret = desired_secret(&tc, &credential, 1);
        prop_assert!(is_owned_by(&secret, &tc));
        prop_assert_eq!(stored_credential(&secret), Some(credential));
    }

    #[test]
    fn any_change_to_the_secret_data_is_detected(credential in credential(), key_index in 0usize..5, garbage in "\\PC{0,20}") {
        let tc = turn_credential(3600, None);
        let mut secret = desired_secret(&tc, &credential, 1);
        let data = secret.data.as_mut().unwrap();
        let key = data.keys().nth(key_index).unwrap().clone();
        prop_assume!(data[&key].0 != garbage.as_bytes());
        data.insert(key, k8s_openapi::ByteString(garbage.into_bytes()));
        prop_assert_eq!(stored_credential(&secret), None);
    }

    #[test]
    fn renewal_falls_inside_the_credentials_life(credential in credential(), renew_fraction in 1i64..100, seed in "\\PC{0,36}") {
        let ttl = credential.expires_at.as_second() - credential.issued_at.as_second();
        let renew_before = (ttl * renew_fraction / 100).max(1);
        let renewal = toma::schedule::renewal_time(credential.issued_at, credential.expires_at, renew_before, &seed);
        prop_assert!(renewal >= credential.issued_at && renewal < credential.expires_at);
        prop_assert!(renewal <= credential.expires_at - SignedDuration::from_secs(renew_before));
    }

    #[test]
    fn status_is_deterministic(credential in credential(), later in 0i64..100_000) {
        let mut tc = turn_credential(3600, None);
        let renewal = credential.expires_at - SignedDuration::from_secs(1200);
        tc.status = Some(status::issued(&tc, &credential, renewal, 1, credential.issued_at));
        let again = status::issued(&tc, &credential, renewal, 1, credential.issued_at + SignedDuration::from_secs(later));
        prop_assert_eq!(Some(again), tc.status);
    }
}
