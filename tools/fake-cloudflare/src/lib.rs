//! A fake of Cloudflare's TURN credential API (`rtc.live.cloudflare.com`).
//!
//! It speaks the documented endpoints (`generate-ice-servers`, the legacy
//! `generate`, and `revoke`), remembers every credential it issued so tests can
//! count mints and revokes, and can be told to fail in the ways a real upstream
//! fails. Control endpoints under `/_fake/` drive it from another process; the
//! [`FakeCloudflare`] handle drives it in-process.

mod api;
mod control;
mod fault;
mod ice;
mod tls;

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use serde::{Deserialize, Serialize};

pub use fault::Fault;
pub use ice::{UrlSet, turn_rest_password};
pub use tls::Tls;

/// How a fake is set up before it starts.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Address to bind; `None` means `127.0.0.1:0` (a free port).
    pub listen: Option<SocketAddr>,
    /// Known TURN keys: key id → bearer token.
    pub keys: BTreeMap<String, String>,
    /// When set, credentials follow the TURN REST scheme with this shared
    /// secret, so a coturn with `static-auth-secret` accepts them.
    pub turn_secret: Option<String>,
    /// Which URLs the answers list.
    pub urls: UrlSet,
    /// Write every `urls` of `generate-ice-servers` as a plain string, one
    /// entry per URL, instead of a list.
    pub urls_as_string: bool,
    /// Print one line per Cloudflare API request to stderr.
    pub log_requests: bool,
    /// Serve HTTPS with this certificate instead of plain HTTP.
    pub tls: Option<Tls>,
}

/// Which credential endpoint issued a credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Endpoint {
    /// `POST …/credentials/generate-ice-servers`: `iceServers` is a list.
    GenerateIceServers,
    /// `POST …/credentials/generate`: `iceServers` is a single object.
    Generate,
}

/// One credential handed out by the fake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mint {
    pub key_id: String,
    pub username: String,
    pub credential: String,
    /// The `ttl` the caller asked for, in seconds.
    pub ttl: u32,
    pub custom_identifier: Option<String>,
    /// Unix seconds.
    pub issued_at: u64,
    /// Unix seconds: `issued_at + ttl`.
    pub expires_at: u64,
    pub endpoint: Endpoint,
}

/// Everything the fake has recorded, as served by `GET /_fake/state`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    /// Credentials handed out, oldest first.
    pub mints: Vec<Mint>,
    /// Usernames of successful revoke calls, in call order (a repeated revoke
    /// appears twice).
    pub revoked: Vec<String>,
    /// Cloudflare API requests counted by the status code they were answered
    /// with. Control requests under `/_fake/` are not counted.
    pub requests: BTreeMap<u16, u64>,
}

/// Mutable state behind the handle.
#[derive(Debug, Default)]
struct State {
    keys: BTreeMap<String, String>,
    fault: fault::ActiveFault,
    recorded: Recorded,
}

/// Settings fixed at start.
#[derive(Debug)]
struct Settings {
    turn_secret: Option<String>,
    urls: UrlSet,
    urls_as_string: bool,
    log_requests: bool,
}

#[derive(Debug)]
struct Shared {
    settings: Settings,
    state: Mutex<State>,
}

/// A cheap-to-clone handle over one fake's shared state.
#[derive(Clone, Debug)]
pub struct FakeCloudflare {
    shared: Arc<Shared>,
    /// Set by [`FakeCloudflare::start`]; `None` for a fake only used through
    /// [`router`].
    addr: Option<SocketAddr>,
    /// Whether it serves HTTPS.
    tls: bool,
}

impl FakeCloudflare {
    /// Creates the state without serving it; pair with [`router`].
    pub fn new(config: Config) -> FakeCloudflare {
        let settings = Settings {
            turn_secret: config.turn_secret,
            urls: config.urls,
            urls_as_string: config.urls_as_string,
            log_requests: config.log_requests,
        };
        let state = State {
            keys: config.keys,
            ..State::default()
        };
        FakeCloudflare {
            shared: Arc::new(Shared {
                settings,
                state: Mutex::new(state),
            }),
            addr: None,
            tls: false,
        }
    }

    /// Binds `config.listen` (default `127.0.0.1:0`) and serves the fake on
    /// the current tokio runtime until the runtime shuts down.
    pub async fn start(config: Config) -> io::Result<FakeCloudflare> {
        let listen = config
            .listen
            .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let tls = config.tls.clone();
        let mut fake = FakeCloudflare::new(config);
        let listener = tokio::net::TcpListener::bind(listen).await?;
        fake.addr = Some(listener.local_addr()?);
        fake.tls = tls.is_some();
        let app = router(fake.clone());
        let served = match tls {
            Some(tls) => {
                let listener = tls::TlsListener::new(listener, &tls)?;
                tokio::spawn(async move { axum::serve(listener, app).await })
            }
            None => tokio::spawn(async move { axum::serve(listener, app).await }),
        };
        tokio::spawn(async move {
            if let Ok(Err(error)) = served.await {
                eprintln!("fake-cloudflare: server stopped: {error}");
            }
        });
        Ok(fake)
    }

    /// The bound address, once started.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the base URL to give a client in place of
    /// `https://rtc.live.cloudflare.com`.
    ///
    /// # Panics
    /// If the fake was not started with [`FakeCloudflare::start`].
    pub fn base_url(&self) -> String {
        let addr = self
            .addr
            .expect("base_url needs a fake started with FakeCloudflare::start");
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{addr}")
    }

    /// Registers (or replaces) a TURN key.
    pub fn add_key(&self, key_id: &str, token: &str) {
        self.lock().keys.insert(key_id.to_owned(), token.to_owned());
    }

    /// Applies `fault` to every generate request until changed.
    pub fn set_fault(&self, fault: Fault) {
        self.lock().fault = fault::ActiveFault::new(fault, None);
    }

    /// Applies `fault` to the next `times` generate requests, then behaves
    /// normally again.
    pub fn set_fault_times(&self, fault: Fault, times: u32) {
        self.lock().fault = fault::ActiveFault::new(fault, Some(times));
    }

    /// Back to normal behaviour.
    pub fn clear_fault(&self) {
        self.set_fault(Fault::None);
    }

    /// Credentials handed out so far, oldest first.
    pub fn mints(&self) -> Vec<Mint> {
        self.lock().recorded.mints.clone()
    }

    /// Usernames of successful revoke calls, in call order.
    pub fn revoked(&self) -> Vec<String> {
        self.lock().recorded.revoked.clone()
    }

    /// Cloudflare API requests counted by answered status code.
    pub fn requests(&self) -> BTreeMap<u16, u64> {
        self.lock().recorded.requests.clone()
    }

    /// Everything recorded: mints, revokes and request counts.
    pub fn recorded(&self) -> Recorded {
        self.lock().recorded.clone()
    }

    /// Forgets recorded mints, revokes and counters; keys and the fault stay.
    pub fn reset(&self) {
        self.lock().recorded = Recorded::default();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A handler that panicked mid-update leaves nothing half-written that
        // matters to a test, so a poisoned lock is still usable.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The whole fake as an axum router: the Cloudflare API plus `/_fake/` control.
pub fn router(fake: FakeCloudflare) -> Router {
    api::router(fake.clone())
        .merge(control::router(fake.clone()))
        .fallback(api::unknown_path)
        .layer(axum::middleware::from_fn_with_state(fake, api::edge))
}
