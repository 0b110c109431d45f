//! A real WebRTC client: Debian's Chromium, headless, opening a page served by the test or by an
//! app pod. The page passes the `iceServers.json` served beside it unchanged to
//! `RTCPeerConnection` (with `iceTransportPolicy: "relay"`), gathers candidates and posts them
//! back to the test.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::scratch::{GroupChild, ScratchDir, tail};

/// The page: it fetches `iceServers.json` from its own origin, as an app's page would.
pub const PAGE: &str = include_str!("page.html");
/// The page gathers for at most 10 s; starting Chromium takes 1-2 s.
const RESULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the page reports.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gathered {
    /// Whether any candidate of type `relay` was gathered.
    pub relay: bool,
    pub candidates: Vec<Candidate>,
    /// `icecandidateerror` events: a TURN server's refusal shows here with its STUN error code.
    pub errors: Vec<CandidateError>,
    /// A JavaScript exception, e.g. RTCPeerConnection refusing the configuration.
    pub error: Option<String>,
    /// Gathering had not completed after 10 s.
    pub timed_out: bool,
    /// How long the page took, from fetching iceServers.json to the end of gathering.
    pub ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub address: Option<String>,
    pub port: Option<u16>,
    pub protocol: Option<String>,
    /// For a relay candidate, how the browser talks to the TURN server (udp, tcp, tls).
    pub relay_protocol: Option<String>,
    /// The ICE server URL the candidate came from.
    pub url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CandidateError {
    pub error_code: u16,
    /// The browser's words for the error, e.g. "Unauthorized".
    pub error_text: String,
    pub url: Option<String>,
}

impl Gathered {
    pub fn relays(&self) -> Vec<&Candidate> {
        self.candidates
            .iter()
            .filter(|c| c.kind.as_deref() == Some("relay"))
            .collect()
    }
}

/// Serves the page beside `ice_json` as its iceServers.json, opens it in a fresh headless
/// Chromium and returns what the page gathered. Chromium and the server are gone when this
/// returns, or panics.
pub async fn gather(ice_json: Vec<u8>) -> Gathered {
    let (report, rx) = report_route();
    let app = report
        .route(
            "/page.html",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE) }),
        )
        .route(
            "/iceServers.json",
            get(move || {
                let body = ice_json.clone();
                async move {
                    (
                        [
                            (header::CONTENT_TYPE, "application/json"),
                            (header::CACHE_CONTROL, "no-store"),
                        ],
                        body,
                    )
                }
            }),
        );
    let (addr, _server) = serve(app).await;
    open(&format!("http://{addr}/page.html"), rx).await
}

/// Opens `page_url`, a copy of the page served by someone else beside the iceServers.json it
/// fetches (an app pod), in a fresh headless Chromium and returns what the page gathered. The
/// page reports to a server of the test's, named in its query string. Chromium and that server
/// are gone when this returns, or panics.
pub async fn gather_from(page_url: &str) -> Gathered {
    let (report, rx) = report_route();
    let (addr, _server) = serve(report).await;
    open(&format!("{page_url}?report=http://{addr}/result"), rx).await
}

/// A router whose POST /result takes the page's report, and the receiving end of that report.
fn report_route() -> (Router, oneshot::Receiver<String>) {
    let (tx, rx) = oneshot::channel::<String>();
    let slot = Arc::new(Mutex::new(Some(tx)));
    let router = Router::new().route(
        "/result",
        post(move |body: String| {
            let slot = slot.clone();
            async move {
                if let Some(tx) = slot.lock().unwrap().take() {
                    let _ = tx.send(body);
                }
                StatusCode::NO_CONTENT
            }
        }),
    );
    (router, rx)
}

/// Serves `app` on a free loopback port until the returned guard drops.
async fn serve(app: Router) -> (SocketAddr, AbortOnDrop) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = AbortOnDrop(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    }));
    (addr, server)
}

/// Opens `url` in a fresh headless Chromium and waits for the page's report on `rx`.
async fn open(url: &str, mut rx: oneshot::Receiver<String>) -> Gathered {
    let dir = ScratchDir::new("chromium");
    let mut chromium = start_chromium(&dir, url);
    let log = dir.path().join("chromium.log");
    let deadline = tokio::time::Instant::now() + RESULT_TIMEOUT;
    let body = loop {
        match tokio::time::timeout(Duration::from_millis(200), &mut rx).await {
            Ok(Ok(body)) => break body,
            Ok(Err(_)) => unreachable!("the sender lives in the server"),
            Err(_) => {}
        }
        if let Some(status) = chromium.try_wait() {
            panic!(
                "chromium exited with {status} before the page reported:\n{}",
                tail(&log, 40)
            );
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "the page reported nothing within {RESULT_TIMEOUT:?}; chromium's log:\n{}",
                tail(&log, 40)
            );
        }
    };
    drop(chromium);
    drop(dir);
    let gathered: Gathered =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("the page posted {body:?}: {e}"));
    let errors: Vec<String> = gathered
        .errors
        .iter()
        .map(|e| format!("{} {}", e.error_code, e.error_text))
        .collect();
    eprintln!(
        "chromium: {} candidate(s), {} error(s) {errors:?}, gathering {} after {} ms",
        gathered.candidates.len(),
        gathered.errors.len(),
        if gathered.timed_out {
            "timed out"
        } else {
            "complete"
        },
        gathered.ms
    );
    gathered
}

/// Chromium's command line:
/// - `--headless`: no display (Chromium's current headless mode);
/// - `--no-sandbox`: tests run as root in containers, where the sandbox cannot start;
/// - `--disable-gpu`, `--disable-dev-shm-usage`: no GPU and a possibly tiny /dev/shm in CI;
/// - `--disable-background-networking`, `--disable-component-update`, `--disable-extensions`,
///   `--no-first-run`: less traffic of Chromium's own. They do not silence it all (it still
///   looks up accounts.google.com, clients2.google.com, update.googleapis.com), hence
/// - `--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1`: every host name fails to
///   resolve, so no DNS query and no connection leaves the machine; the page and coturn are
///   addressed by IP;
/// - `--disable-features=WebRtcHideLocalIpsWithMdns`: without it an RTCPeerConnection opens an
///   mDNS listener on 224.0.0.251:5353. It would only hide host candidates, which
///   `iceTransportPolicy: "relay"` never gathers anyway;
/// - `--user-data-dir` and HOME/XDG dirs in a fresh scratch dir: no profile, cache or crash
///   database outside it, and no state shared between runs. Chromium's crash handler runs in a
///   session of its own, out of reach of the process-group kill, but its command line names
///   the crash database in that dir, so the guard finds it there.
///   (`--disable-crashpad-for-testing` would avoid it, but makes Chromium 156's network service
///   crash in a loop with "FD ownership violation".)
///
/// What remains outside 127.0.0.1: Chromium binds WebRTC's UDP sockets to 0.0.0.0 and [::] on
/// ephemeral ports (as observed with `ss`); they only talk to coturn on 127.0.0.1 and close with
/// the page.
fn start_chromium(dir: &ScratchDir, url: &str) -> GroupChild {
    let log = std::fs::File::create(dir.path().join("chromium.log")).unwrap();
    let child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-extensions",
            "--no-first-run",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--disable-features=WebRtcHideLocalIpsWithMdns",
            &format!("--user-data-dir={}", dir.path().join("profile").display()),
            url,
        ])
        .env("HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("chromium runs: run hack/webrtc-prerequisites.sh (apt-get install chromium)");
    GroupChild::new(child).also_kill_mentioning(dir.path())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
