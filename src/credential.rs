//! A minted TURN credential: the ICE servers a client needs and the window they are valid in.

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::api::{Transport, UrlFilter, UrlProfile};

/// One entry of `RTCConfiguration.iceServers`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

// The username and credential are secrets: never print them.
impl fmt::Debug for IceServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceServer")
            .field("urls", &self.urls)
            .field("username", &self.username.as_ref().map(|_| "<redacted>"))
            .field("credential", &self.credential.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The document written to `iceServers.json`: exactly what `new RTCPeerConnection()` takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceConfig {
    pub ice_servers: Vec<IceServer>,
}

/// A credential and its validity window. toma computes the window itself: Cloudflare's answer
/// carries no expiry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub ice_servers: Vec<IceServer>,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
}

impl Credential {
    /// The TURN username and credential: those of the first server that has them.
    pub fn turn_pair(&self) -> Option<(&str, &str)> {
        self.ice_servers
            .iter()
            .find_map(|s| Some((s.username.as_deref()?, s.credential.as_deref()?)))
    }

    pub fn urls(&self) -> impl Iterator<Item = &str> {
        self.ice_servers
            .iter()
            .flat_map(|s| s.urls.iter().map(String::as_str))
    }

    pub fn ice_config(&self) -> IceConfig {
        IceConfig {
            ice_servers: self.ice_servers.clone(),
        }
    }

    pub fn is_valid_at(&self, now: Timestamp) -> bool {
        self.issued_at <= now && now < self.expires_at
    }
}

/// Keeps the URLs the filter allows and drops servers left without any URL.
pub fn filter_urls(servers: Vec<IceServer>, filter: &UrlFilter) -> Vec<IceServer> {
    let mut servers: Vec<IceServer> = servers
        .into_iter()
        .map(|mut server| {
            server.urls.retain(|url| url_allowed(url, filter));
            server
        })
        .collect();
    if filter.profile == UrlProfile::Minimal {
        keep_minimal(&mut servers);
    }
    servers.retain(|server| !server.urls.is_empty());
    servers
}

/// The minimal profile: one STUN URL, one TURN URL over UDP and one over TLS, preferring ports
/// 3478, 3478 and 443; one over TCP (preferring 443) where there is no TLS one. URLs that are
/// neither STUN nor TURN are dropped.
fn keep_minimal(servers: &mut [IceServer]) {
    let all: Vec<((usize, usize), ParsedUrl)> = servers
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            s.urls
                .iter()
                .enumerate()
                .map(move |(j, u)| ((i, j), ParsedUrl::parse(u)))
        })
        .collect();
    let pick = |kind: UrlKind, port: u16| {
        let of_kind = || all.iter().filter(|(_, p)| p.kind == kind);
        of_kind()
            .find(|(_, p)| p.port == Some(port))
            .or_else(|| of_kind().next())
            .map(|(at, _)| *at)
    };
    let tls = pick(UrlKind::Turn(Transport::Tls), 443);
    let tcp = if tls.is_none() {
        pick(UrlKind::Turn(Transport::Tcp), 443)
    } else {
        None
    };
    let keep = [
        pick(UrlKind::Stun, 3478),
        pick(UrlKind::Turn(Transport::Udp), 3478),
        tls,
        tcp,
    ];
    for (i, server) in servers.iter_mut().enumerate() {
        server.urls = std::mem::take(&mut server.urls)
            .into_iter()
            .enumerate()
            .filter(|(j, _)| keep.contains(&Some((i, *j))))
            .map(|(_, url)| url)
            .collect();
    }
}

fn url_allowed(url: &str, filter: &UrlFilter) -> bool {
    let parsed = ParsedUrl::parse(url);
    if parsed
        .port
        .is_some_and(|port| filter.exclude_ports.contains(&port))
    {
        return false;
    }
    match parsed.kind {
        UrlKind::Turn(transport) if !filter.transports.is_empty() => filter.transports.contains(&transport),
        _ => true,
    }
}

/// The parts of a `stun:`/`turn:`/`turns:` URL (RFC 7064/7065) that filters look at.
struct ParsedUrl {
    port: Option<u16>,
    kind: UrlKind,
}

#[derive(Clone, Copy, PartialEq)]
enum UrlKind {
    /// STUN URLs carry no transport.
    Stun,
    Turn(Transport),
    Other,
}

impl ParsedUrl {
    fn parse(url: &str) -> ParsedUrl {
        let (scheme, rest) = url.split_once(':').unwrap_or(("", url));
        let (host_port, query) = rest.split_once('?').unwrap_or((rest, ""));
        // The port follows the last colon, unless that colon is inside an IPv6 literal.
        let port = match host_port.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') => port.parse().ok(),
            _ => None,
        };
        let port = port.or(match scheme {
            "stun" | "turn" => Some(3478),
            "turns" => Some(5349),
            _ => None,
        });
        let transport_param = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("transport="))
            .map(str::to_ascii_lowercase);
        let kind = match (scheme, transport_param.as_deref()) {
            ("stun", _) => UrlKind::Stun,
            ("turns", _) => UrlKind::Turn(Transport::Tls),
            ("turn", Some("tcp")) => UrlKind::Turn(Transport::Tcp),
            ("turn", _) => UrlKind::Turn(Transport::Udp),
            _ => UrlKind::Other,
        };
        ParsedUrl { port, kind }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(urls: &[&str]) -> IceServer {
        IceServer {
            urls: urls.iter().map(|u| u.to_string()).collect(),
            username: Some("u".into()),
            credential: Some("c".into()),
        }
    }

    fn minimal() -> UrlFilter {
        UrlFilter {
            profile: UrlProfile::Minimal,
            ..UrlFilter::default()
        }
    }

    const CLOUDFLARE_WITH_53: &[&str] = &[
        "stun:stun.cloudflare.com:3478",
        "stun:stun.cloudflare.com:53",
        "turn:turn.cloudflare.com:3478?transport=udp",
        "turn:turn.cloudflare.com:53?transport=udp",
        "turn:turn.cloudflare.com:3478?transport=tcp",
        "turn:turn.cloudflare.com:80?transport=tcp",
        "turns:turn.cloudflare.com:5349?transport=tcp",
        "turns:turn.cloudflare.com:443?transport=tcp",
    ];

    #[test]
    fn default_filter_drops_port_53_and_keeps_the_rest() {
        let kept = filter_urls(vec![server(CLOUDFLARE_WITH_53)], &UrlFilter::default());
        assert_eq!(kept[0].urls.len(), 6);
        assert!(
            kept[0]
                .urls
                .iter()
                .all(|u| !u.ends_with(":53") && !u.contains(":53?"))
        );
    }

    #[test]
    fn transport_filter_keeps_stun_and_only_the_chosen_turn_transports() {
        let filter = UrlFilter {
            exclude_ports: vec![],
            transports: vec![Transport::Udp, Transport::Tls],
            ..UrlFilter::default()
        };
        let kept = filter_urls(vec![server(CLOUDFLARE_WITH_53)], &filter);
        assert_eq!(
            kept[0].urls,
            vec![
                "stun:stun.cloudflare.com:3478",
                "stun:stun.cloudflare.com:53",
                "turn:turn.cloudflare.com:3478?transport=udp",
                "turn:turn.cloudflare.com:53?transport=udp",
                "turns:turn.cloudflare.com:5349?transport=tcp",
                "turns:turn.cloudflare.com:443?transport=tcp",
            ]
        );
    }

    #[test]
    fn the_minimal_profile_keeps_stun_turn_over_udp_and_turns_on_443() {
        let cloudflare_today = [
            "stun:stun.cloudflare.com:3478",
            "turn:turn.cloudflare.com:3478?transport=udp",
            "turn:turn.cloudflare.com:443?transport=udp",
            "turn:turn.cloudflare.com:3478?transport=tcp",
            "turn:turn.cloudflare.com:80?transport=tcp",
            "turns:turn.cloudflare.com:5349?transport=tcp",
            "turns:turn.cloudflare.com:443?transport=tcp",
        ];
        let stun = IceServer {
            urls: vec![cloudflare_today[0].into()],
            username: None,
            credential: None,
        };
        let kept = filter_urls(vec![stun, server(&cloudflare_today[1..])], &minimal());
        assert_eq!(kept[0].urls, ["stun:stun.cloudflare.com:3478"]);
        assert_eq!(
            kept[1].urls,
            [
                "turn:turn.cloudflare.com:3478?transport=udp",
                "turns:turn.cloudflare.com:443?transport=tcp"
            ]
        );
    }

    #[test]
    fn the_minimal_profile_keeps_one_of_repeated_urls_and_drops_what_is_neither_stun_nor_turn() {
        let kept = filter_urls(
            vec![
                server(&["", "", "https://t"]),
                server(&["turns:a", "turn:a", "turn:a", "stun:a", "stun:a"]),
            ],
            &minimal(),
        );
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].urls, ["turns:a", "turn:a", "stun:a"]);
    }

    #[test]
    fn the_minimal_profile_takes_tcp_where_there_is_no_turns_and_any_port_where_the_preferred_is_missing() {
        let kept = filter_urls(
            vec![server(&[
                "stun:t:19302",
                "turn:t:3479?transport=udp",
                "turn:t:80?transport=tcp",
                "turn:t:443?transport=tcp",
            ])],
            &minimal(),
        );
        assert_eq!(
            kept[0].urls,
            [
                "stun:t:19302",
                "turn:t:3479?transport=udp",
                "turn:t:443?transport=tcp"
            ]
        );
    }

    #[test]
    fn servers_left_without_urls_are_dropped() {
        let stun_53 = IceServer {
            urls: vec!["stun:stun.cloudflare.com:53".into()],
            username: None,
            credential: None,
        };
        let kept = filter_urls(vec![stun_53, server(&["turn:t:3478"])], &UrlFilter::default());
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].urls, vec!["turn:t:3478"]);
    }

    #[test]
    fn urls_without_port_use_the_scheme_default() {
        let filter = UrlFilter {
            exclude_ports: vec![3478],
            transports: vec![],
            ..UrlFilter::default()
        };
        let kept = filter_urls(
            vec![server(&["turn:t", "turns:t", "turn:[::1]:3478", "turn:[::1]"])],
            &filter,
        );
        assert_eq!(kept[0].urls, vec!["turns:t"]);
    }

    #[test]
    fn debug_output_never_shows_the_credential() {
        let printed = format!("{:?}", server(&["turn:t"]));
        assert!(
            !printed.contains("\"c\"") && !printed.contains("\"u\""),
            "{printed}"
        );
    }

    #[test]
    fn turn_pair_comes_from_the_first_server_with_one() {
        let stun = IceServer {
            urls: vec!["stun:s".into()],
            username: None,
            credential: None,
        };
        let cred = Credential {
            ice_servers: vec![stun, server(&["turn:t"])],
            issued_at: Timestamp::UNIX_EPOCH,
            expires_at: Timestamp::UNIX_EPOCH,
        };
        assert_eq!(cred.turn_pair(), Some(("u", "c")));
    }
}
