//! The `iceServers` the fake answers with, and the credentials inside them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::Serialize;
use sha1::Sha1;

/// Which URLs the answers list. Cloudflare's example answer has changed over
/// time, so clients must not depend on any one of these.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum UrlSet {
    /// Newest docs: `stun:…:3478` alone, then six TURN URLs on ports
    /// 3478/udp, 443/udp, 3478/tcp, 80/tcp, 5349/tls, 443/tls.
    #[default]
    Current,
    /// Two objects with the alternate port 53: `stun` 3478 and 53, then TURN
    /// on 3478/udp, 53/udp, 3478/tcp, 80/tcp, 5349/tls, 443/tls.
    WithPort53,
    /// The first `generate-ice-servers` docs: one credentialed object holding
    /// all eight URLs, STUN included.
    SingleObject,
    /// Given `turn:`/`turns:` URLs, e.g. a local coturn. Each distinct
    /// host:port of a `turn:` URL is also offered as a `stun:` URL, because a
    /// TURN server answers STUN on its TURN port; with only `turns:` URLs
    /// there is no STUN entry.
    Custom(Vec<String>),
}

const STUN_3478: &str = "stun:stun.cloudflare.com:3478";
const STUN_53: &str = "stun:stun.cloudflare.com:53";
const TURN_3478_UDP: &str = "turn:turn.cloudflare.com:3478?transport=udp";
const TURN_53_UDP: &str = "turn:turn.cloudflare.com:53?transport=udp";
const TURN_443_UDP: &str = "turn:turn.cloudflare.com:443?transport=udp";
const TURN_3478_TCP: &str = "turn:turn.cloudflare.com:3478?transport=tcp";
const TURN_80_TCP: &str = "turn:turn.cloudflare.com:80?transport=tcp";
const TURNS_5349_TCP: &str = "turns:turn.cloudflare.com:5349?transport=tcp";
const TURNS_443_TCP: &str = "turns:turn.cloudflare.com:443?transport=tcp";

/// A group of URLs that share one `iceServers` entry.
struct Group {
    urls: Vec<String>,
    credentialed: bool,
}

impl UrlSet {
    /// The URL groups of a `generate-ice-servers` answer, in order.
    fn groups(&self) -> Vec<Group> {
        let owned = |urls: &[&str]| urls.iter().map(|url| url.to_string()).collect::<Vec<_>>();
        let (stun, turn) = match self {
            UrlSet::Current => (
                owned(&[STUN_3478]),
                owned(&[
                    TURN_3478_UDP,
                    TURN_443_UDP,
                    TURN_3478_TCP,
                    TURN_80_TCP,
                    TURNS_5349_TCP,
                    TURNS_443_TCP,
                ]),
            ),
            UrlSet::WithPort53 => (
                owned(&[STUN_3478, STUN_53]),
                owned(&[
                    TURN_3478_UDP,
                    TURN_53_UDP,
                    TURN_3478_TCP,
                    TURN_80_TCP,
                    TURNS_5349_TCP,
                    TURNS_443_TCP,
                ]),
            ),
            UrlSet::SingleObject => {
                let all = owned(&[
                    STUN_3478,
                    STUN_53,
                    TURN_3478_UDP,
                    TURN_53_UDP,
                    TURN_3478_TCP,
                    TURN_80_TCP,
                    TURNS_5349_TCP,
                    TURNS_443_TCP,
                ]);
                return vec![Group {
                    urls: all,
                    credentialed: true,
                }];
            }
            UrlSet::Custom(turn) => (stun_urls_for(turn), turn.clone()),
        };
        let mut groups = Vec::new();
        if !stun.is_empty() {
            groups.push(Group {
                urls: stun,
                credentialed: false,
            });
        }
        groups.push(Group {
            urls: turn,
            credentialed: true,
        });
        groups
    }

    /// Every URL, STUN first, as the legacy `generate` lists them in its one
    /// object.
    fn all_urls(&self) -> Vec<String> {
        self.groups().into_iter().flat_map(|group| group.urls).collect()
    }
}

/// `stun:host:port` for each distinct host:port among the `turn:` URLs.
fn stun_urls_for(turn_urls: &[String]) -> Vec<String> {
    let mut stun: Vec<String> = Vec::new();
    for url in turn_urls {
        let Some(rest) = url.strip_prefix("turn:") else {
            continue;
        };
        let host_port = rest.split('?').next().unwrap_or(rest);
        let candidate = format!("stun:{host_port}");
        if !stun.contains(&candidate) {
            stun.push(candidate);
        }
    }
    stun
}

/// The shape of the `iceServers` member in a successful answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A list of entries (`generate-ice-servers`).
    List { urls_as_string: bool },
    /// One object holding every URL (legacy `generate`).
    SingleObject,
}

/// A username/credential pair; `None` leaves them out (a faulty answer).
pub(crate) type Credentials<'a> = Option<(&'a str, &'a str)>;

/// The answer body. Typed rather than a `serde_json::Value` so the fields keep
/// Cloudflare's order: `urls`, `username`, `credential`.
#[derive(Serialize)]
pub(crate) struct Answer<'a> {
    #[serde(rename = "iceServers")]
    ice_servers: OneOrMany<IceServer<'a>>,
}

#[derive(Serialize)]
struct IceServer<'a> {
    urls: OneOrMany<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credential: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

/// The full answer body `{"iceServers": …}`.
pub(crate) fn answer_body<'a>(urls: &UrlSet, shape: Shape, credentials: Credentials<'a>) -> Answer<'a> {
    let entry = |urls: OneOrMany<String>, credentialed: bool| {
        let credentials = credentials.filter(|_| credentialed);
        IceServer {
            urls,
            username: credentials.map(|(username, _)| username),
            credential: credentials.map(|(_, credential)| credential),
        }
    };
    let ice_servers = match shape {
        Shape::SingleObject => OneOrMany::One(entry(OneOrMany::Many(urls.all_urls()), true)),
        Shape::List {
            urls_as_string: false,
        } => OneOrMany::Many(
            urls.groups()
                .into_iter()
                .map(|group| entry(OneOrMany::Many(group.urls), group.credentialed))
                .collect(),
        ),
        // One entry per URL, since a plain string holds a single URL.
        Shape::List { urls_as_string: true } => OneOrMany::Many(
            urls.groups()
                .into_iter()
                .flat_map(|group| group.urls.into_iter().map(move |url| (url, group.credentialed)))
                .map(|(url, credentialed)| entry(OneOrMany::One(url), credentialed))
                .collect(),
        ),
    };
    Answer { ice_servers }
}

/// 96 random hex characters (48 bytes), the look of Cloudflare's opaque
/// usernames and credentials.
pub(crate) fn random_hex_96() -> String {
    let mut bytes = [0u8; 48];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// `base64(HMAC-SHA1(secret, username))`: the TURN REST API password that
/// coturn checks under `use-auth-secret` / `static-auth-secret`.
pub fn turn_rest_password(secret: &str, username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(username.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn to_json(answer: Answer<'_>) -> serde_json::Value {
        serde_json::to_value(answer).unwrap()
    }

    #[test]
    fn random_credentials_are_96_lowercase_hex_characters_and_differ() {
        let first = random_hex_96();
        assert_eq!(first.len(), 96);
        assert!(
            first
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        );
        assert_ne!(first, random_hex_96());
    }

    #[test]
    fn custom_urls_offer_stun_on_each_distinct_turn_host_and_port() {
        let urls = vec![
            "turn:127.0.0.1:3478?transport=udp".to_string(),
            "turn:127.0.0.1:3478?transport=tcp".to_string(),
            "turns:127.0.0.1:5349?transport=tcp".to_string(),
        ];
        assert_eq!(stun_urls_for(&urls), vec!["stun:127.0.0.1:3478"]);
    }

    #[test]
    fn custom_urls_with_only_turns_have_no_stun_entry() {
        let urls = UrlSet::Custom(vec!["turns:127.0.0.1:5349?transport=tcp".to_string()]);
        let shape = Shape::List {
            urls_as_string: false,
        };
        let body = to_json(answer_body(&urls, shape, Some(("u", "c"))));
        assert_eq!(
            body,
            json!({"iceServers": [{"urls": ["turns:127.0.0.1:5349?transport=tcp"], "username": "u", "credential": "c"}]})
        );
    }

    #[test]
    fn urls_as_string_gives_one_entry_per_url_with_credentials_only_on_turn() {
        let urls = UrlSet::Custom(vec!["turn:h:1?transport=udp".to_string()]);
        let body = to_json(answer_body(
            &urls,
            Shape::List { urls_as_string: true },
            Some(("u", "c")),
        ));
        assert_eq!(
            body,
            json!({"iceServers": [
                {"urls": "stun:h:1"},
                {"urls": "turn:h:1?transport=udp", "username": "u", "credential": "c"},
            ]})
        );
    }
}
