//! Builders shared by the unit tests.

use jiff::{SignedDuration, Timestamp};

use crate::api::{KeyKind, KeyRef, TurnCredential, TurnCredentialSpec};
use crate::credential::{Credential, IceServer};

pub fn turn_credential(name: &str) -> TurnCredential {
    let mut tc = TurnCredential::new(
        name,
        TurnCredentialSpec::with_key(
            KeyRef {
                kind: KeyKind::ClusterTurnKey,
                name: "cloudflare".into(),
            },
            86_400,
        ),
    );
    tc.metadata.namespace = Some("app".into());
    tc.metadata.uid = Some("uid-1".into());
    tc.metadata.generation = Some(1);
    tc
}

pub fn credential_at(issued_at: i64, ttl: i64) -> Credential {
    let issued_at = Timestamp::from_second(issued_at).unwrap();
    Credential {
        ice_servers: vec![
            IceServer {
                urls: vec!["stun:stun.example.com:3478".into()],
                username: None,
                credential: None,
            },
            IceServer {
                urls: vec!["turn:turn.example.com:3478?transport=udp".into()],
                username: Some("user-1".into()),
                credential: Some("cred-1".into()),
            },
        ],
        issued_at,
        expires_at: issued_at + SignedDuration::from_secs(ttl),
    }
}
