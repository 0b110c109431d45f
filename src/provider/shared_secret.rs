//! TURN REST API credentials (draft-uberti-behave-turn-rest-00), as accepted by coturn
//! (`use-auth-secret`), eturnal, STUNner and pion/turn: the username is the expiry time in Unix
//! seconds, optionally followed by `:suffix`, and the credential is
//! `base64(HMAC-SHA1(shared secret, username))`. Computed locally: no network call.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use sha1::Sha1;

use crate::api::SharedSecretProvider;
use crate::credential::IceServer;
use crate::secret_value::SecretValue;

pub fn username(expires_at: Timestamp, suffix: Option<&str>) -> String {
    match suffix {
        Some(suffix) => format!("{}:{suffix}", expires_at.as_second()),
        None => expires_at.as_second().to_string(),
    }
}

pub fn credential(secret: &[u8], username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// The ICE servers for a credential expiring at `expires_at`: STUN URLs without a username
/// (browsers reject credentials on STUN servers in some versions), TURN URLs with it.
pub fn ice_servers(
    provider: &SharedSecretProvider,
    secret: &SecretValue,
    expires_at: Timestamp,
) -> Vec<IceServer> {
    let username = username(expires_at, provider.username_suffix.as_deref());
    let (stun, turn): (Vec<String>, Vec<String>) = provider
        .urls
        .iter()
        .map(|u| u.trim().to_string())
        .partition(|u| u.starts_with("stun:"));
    let mut servers = Vec::new();
    if !stun.is_empty() {
        servers.push(IceServer {
            urls: stun,
            username: None,
            credential: None,
        });
    }
    if !turn.is_empty() {
        servers.push(IceServer {
            urls: turn,
            credential: Some(credential(secret.expose(), &username)),
            username: Some(username),
        });
    }
    servers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SecretKeyRef;

    // Expected values computed independently with Python's standard library:
    //   base64.b64encode(hmac.new(b"secret", b"1700000000:toma", hashlib.sha1).digest())
    #[test]
    fn credential_matches_a_known_vector() {
        assert_eq!(
            credential(b"secret", "1700000000:toma"),
            "Wqc/ZqgBAYQOnK/tGk7TgzwhmZA="
        );
    }

    // A second secret and a username with a suffix:
    //   base64.b64encode(hmac.new(b"north", b"1433886223:alice", hashlib.sha1).digest())
    #[test]
    fn credential_matches_a_second_known_vector() {
        assert_eq!(
            credential(b"north", "1433886223:alice"),
            "jmHLNOmX8RjmZVd+up+DERrRQVw="
        );
    }

    #[test]
    fn username_is_the_expiry_time_with_an_optional_suffix() {
        let at = Timestamp::from_second(1_700_000_000).unwrap();
        assert_eq!(username(at, None), "1700000000");
        assert_eq!(username(at, Some("app")), "1700000000:app");
    }

    #[test]
    fn stun_urls_carry_no_credential() {
        let provider = SharedSecretProvider {
            secret_ref: SecretKeyRef {
                name: "s".into(),
                key: "k".into(),
                namespace: None,
            },
            urls: vec![
                "stun:turn.example.com:3478".into(),
                "turn:turn.example.com:3478?transport=udp".into(),
            ],
            username_suffix: None,
        };
        let servers = ice_servers(
            &provider,
            &SecretValue::new(b"x".to_vec()),
            Timestamp::from_second(10).unwrap(),
        );
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].username, None);
        assert_eq!(servers[1].username.as_deref(), Some("10"));
        assert_eq!(
            servers[1].credential.as_deref(),
            Some(credential(b"x", "10").as_str())
        );
    }
}
