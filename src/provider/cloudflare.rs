//! Client for Cloudflare's TURN credential API.
//!
//! `POST {base}/v1/turn/keys/{keyId}/credentials/generate-ice-servers` with the key's API token
//! mints ICE servers; `POST .../credentials/{username}/revoke` revokes them. Failures are
//! classified so the controller can tell a wrong token from an outage, and no error ever
//! carries the token or a credential.

use std::time::Duration;

use reqwest::{StatusCode, header};
use serde::{Deserialize, Serialize};

pub use super::ProviderError;
use crate::credential::IceServer;
use crate::secret_value::SecretValue;

/// Where Cloudflare's TURN credential API lives when a key names no `baseUrl`.
pub(super) const DEFAULT_BASE_URL: &str = "https://rtc.live.cloudflare.com";
/// The longest Retry-After toma will wait for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateRequest<'a> {
    ttl: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    custom_identifier: Option<&'a str>,
}

/// `urls` and `iceServers` each come as one value or a list, depending on the endpoint and the
/// year the answer was documented.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

#[derive(Deserialize)]
struct GenerateAnswer {
    #[serde(rename = "iceServers")]
    ice_servers: OneOrMany<AnswerServer>,
}

#[derive(Deserialize)]
struct AnswerServer {
    urls: OneOrMany<String>,
    username: Option<String>,
    credential: Option<String>,
}

/// Reads a generate answer in any of its documented shapes.
pub fn parse_generate_answer(body: &[u8]) -> Result<Vec<IceServer>, ProviderError> {
    // serde_json's messages name a position, never the input, so they are safe to show.
    let answer: GenerateAnswer =
        serde_json::from_slice(body).map_err(|e| ProviderError::MalformedAnswer(e.to_string()))?;
    let servers: Vec<IceServer> = answer
        .ice_servers
        .into_vec()
        .into_iter()
        .map(|s| IceServer {
            urls: s.urls.into_vec(),
            username: s.username,
            credential: s.credential,
        })
        .collect();
    if servers
        .iter()
        .any(|s| s.urls.is_empty() || s.urls.iter().any(|u| u.trim().is_empty()))
    {
        return Err(ProviderError::MalformedAnswer("an ICE server has no URL".into()));
    }
    let has_turn = servers.iter().any(|s| {
        s.username.as_deref().is_some_and(|u| !u.is_empty())
            && s.credential.as_deref().is_some_and(|c| !c.is_empty())
    });
    if !has_turn {
        return Err(ProviderError::MalformedAnswer(
            "no ICE server carries a username and credential".into(),
        ));
    }
    Ok(servers)
}

/// A successful answer: its status code (201 as documented) and the servers it carried.
pub struct Generated {
    pub status: u16,
    pub ice_servers: Vec<IceServer>,
}

#[derive(Clone)]
pub struct CloudflareClient {
    http: reqwest::Client,
}

impl CloudflareClient {
    pub fn new(request_timeout: Duration) -> CloudflareClient {
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .user_agent(crate::USER_AGENT)
            .connect_timeout(Duration::from_secs(5).min(request_timeout))
            .timeout(request_timeout)
            .build()
            .expect("the HTTP client configuration is static and valid");
        CloudflareClient { http }
    }

    pub async fn generate_ice_servers(
        &self,
        base_url: &str,
        key_id: &str,
        token: &SecretValue,
        ttl_seconds: i64,
        custom_identifier: Option<&str>,
    ) -> Result<Generated, ProviderError> {
        let body = GenerateRequest {
            ttl: ttl_seconds,
            custom_identifier,
        };
        let path = "credentials/generate-ice-servers";
        let (status, body) = self.post(base_url, key_id, path, token, Some(&body)).await?;
        if !status.is_success() {
            return Err(classify_failure(status.code, status.retry_after, &body, key_id));
        }
        Ok(Generated {
            status: status.code.as_u16(),
            ice_servers: parse_generate_answer(&body)?,
        })
    }

    pub async fn revoke(
        &self,
        base_url: &str,
        key_id: &str,
        token: &SecretValue,
        username: &str,
    ) -> Result<(), ProviderError> {
        let path = format!("credentials/{username}/revoke");
        let (status, body) = self
            .post(base_url, key_id, &path, token, None::<&GenerateRequest>)
            .await?;
        // An unknown username has nothing left to revoke.
        if status.is_success() || status.code == StatusCode::NOT_FOUND {
            return Ok(());
        }
        Err(classify_failure(status.code, status.retry_after, &body, key_id))
    }

    /// `POST {base}/v1/turn/keys/{key_id}/{path}` with the token, and the answer's status and body.
    async fn post(
        &self,
        base_url: &str,
        key_id: &str,
        path: &str,
        token: &SecretValue,
        json: Option<&impl Serialize>,
    ) -> Result<(Answered, Vec<u8>), ProviderError> {
        let url = format!("{}/v1/turn/keys/{key_id}/{path}", base_url.trim_end_matches('/'));
        let authorization = token.bearer_header().ok_or(ProviderError::MalformedToken)?;
        let mut request = self.http.post(url).header(header::AUTHORIZATION, authorization);
        if let Some(json) = json {
            request = request.json(json);
        }
        let response = request.send().await.map_err(transport_error)?;
        let answered = Answered {
            code: response.status(),
            retry_after: retry_after(response.headers()),
        };
        let body = response.bytes().await.map_err(transport_error)?;
        Ok((answered, body.to_vec()))
    }
}

/// The status of an answer and the delay it asked for.
struct Answered {
    code: StatusCode,
    retry_after: Option<Duration>,
}

impl Answered {
    fn is_success(&self) -> bool {
        self.code.is_success()
    }
}

fn transport_error(error: reqwest::Error) -> ProviderError {
    if error.is_timeout() {
        return ProviderError::Timeout;
    }
    // Drop the URL: it names only the key ID, but the error source chain is what helps.
    let error = error.without_url();
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    ProviderError::Unreachable(message)
}

fn retry_after(headers: &header::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// Maps a non-success answer to what it means for the user.
pub fn classify_failure(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
    key_id: &str,
) -> ProviderError {
    let text = String::from_utf8_lossy(body);
    match status.as_u16() {
        401 => ProviderError::Unauthorized { status: 401 },
        403 if text.contains("error code: 1010") => ProviderError::BotBlocked,
        403 => ProviderError::Unauthorized { status: 403 },
        404 => ProviderError::UnknownKey {
            key_id: key_id.to_string(),
        },
        429 => ProviderError::RateLimited { retry_after },
        500..=599 => ProviderError::ServerError {
            status: status.as_u16(),
        },
        code => ProviderError::Rejected {
            status: code,
            detail: short_detail(&text),
        },
    }
}

/// The start of an error body, on one line: enough to act on, too short to carry much else.
fn short_detail(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut detail: String = one_line.chars().take(120).collect();
    if one_line.chars().count() > 120 {
        detail.push('…');
    }
    if detail.is_empty() {
        "no detail given".into()
    } else {
        detail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_answer_with_stun_and_turn_objects_is_read() {
        let body = br#"{"iceServers":[{"urls":["stun:stun.cloudflare.com:3478"]},
            {"urls":["turn:turn.cloudflare.com:3478?transport=udp","turns:turn.cloudflare.com:443?transport=tcp"],
             "username":"u1","credential":"c1"}]}"#;
        let servers = parse_generate_answer(body).unwrap();
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].username, None);
        assert_eq!(servers[1].urls.len(), 2);
        assert_eq!(servers[1].credential.as_deref(), Some("c1"));
    }

    #[test]
    fn legacy_single_object_answer_is_wrapped_in_a_list() {
        let body =
            br#"{"iceServers":{"urls":["stun:s:3478","turn:t:3478"],"username":"u","credential":"c"}}"#;
        let servers = parse_generate_answer(body).unwrap();
        assert_eq!(servers.len(), 1);
        assert_eq!(servers[0].urls, vec!["stun:s:3478", "turn:t:3478"]);
    }

    #[test]
    fn urls_given_as_a_string_become_a_list() {
        let body = br#"{"iceServers":[{"urls":"stun:s"},{"urls":"turn:t","username":"u","credential":"c"}]}"#;
        let servers = parse_generate_answer(body).unwrap();
        assert_eq!(servers[0].urls, vec!["stun:s"]);
        assert_eq!(servers[1].urls, vec!["turn:t"]);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let body =
            br#"{"iceServers":[{"urls":["turn:t"],"username":"u","credential":"c","extra":1}],"ttl":5}"#;
        assert!(parse_generate_answer(body).is_ok());
    }

    #[test]
    fn answer_without_credentials_is_malformed() {
        let body = br#"{"iceServers":[{"urls":["stun:s"]}]}"#;
        assert!(matches!(
            parse_generate_answer(body),
            Err(ProviderError::MalformedAnswer(_))
        ));
    }

    #[test]
    fn truncated_json_is_malformed_and_the_error_does_not_echo_the_body() {
        let body =
            br#"{"iceServers":[{"urls":["turn:t"],"username":"secret-user","credential":"secret-cred""#;
        let err = parse_generate_answer(body).unwrap_err();
        assert!(matches!(err, ProviderError::MalformedAnswer(_)));
        let text = err.to_string();
        assert!(
            !text.contains("secret-user") && !text.contains("secret-cred"),
            "{text}"
        );
    }

    #[test]
    fn failures_are_classified_by_status() {
        let classify = |code: u16, body: &str| {
            classify_failure(StatusCode::from_u16(code).unwrap(), None, body.as_bytes(), "k1")
        };
        assert_eq!(classify(401, ""), ProviderError::Unauthorized { status: 401 });
        assert_eq!(classify(403, "error code: 1010"), ProviderError::BotBlocked);
        assert_eq!(classify(403, "{}"), ProviderError::Unauthorized { status: 403 });
        assert_eq!(
            classify(404, ""),
            ProviderError::UnknownKey { key_id: "k1".into() }
        );
        assert_eq!(
            classify(429, ""),
            ProviderError::RateLimited { retry_after: None }
        );
        assert_eq!(classify(503, ""), ProviderError::ServerError { status: 503 });
        assert!(matches!(
            classify(400, "bad ttl"),
            ProviderError::Rejected { status: 400, .. }
        ));
    }

    #[test]
    fn retry_after_seconds_are_read_and_capped() {
        let mut headers = header::HeaderMap::new();
        headers.insert(header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(header::RETRY_AFTER, "999999".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
        headers.insert(
            header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn long_error_bodies_are_cut_short() {
        let err = classify_failure(StatusCode::BAD_REQUEST, None, "x".repeat(500).as_bytes(), "k");
        assert!(err.to_string().len() < 250);
    }
}
