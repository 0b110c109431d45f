//! The pod gateway: how pods on the isolated bridge reach the apiserver and the host's loopback
//! services while everything keeps listening on 127.0.0.1 and the host's own network
//! configuration is never touched.
//!
//! - A network namespace of the cluster's own, held by a shell (`toma-pod-gateway`) that only
//!   sleeps; it dies with that shell.
//! - A veth pair joins it to the cluster's bridge: the host end (named from the same tag as the
//!   bridge, so two clusters never collide) is a port of the bridge, the other end is `gw0` in
//!   the gateway namespace with 10.244.7.1/24. 10.0.0.1, the `kubernetes` Service's ClusterIP,
//!   sits on the namespace's lo; pods route 10.0.0.0/24 via 10.244.7.1 (the CNI config).
//! - The host's end of the bridge has 10.244.7.2/24, so the kubelet reaches pods for probes.
//! - An nft table in the gateway namespace only redirects TCP to 10.244.7.1:* and to 10.0.0.1:443
//!   to the relay (see `crate::relay`), which reads the original destination and connects from the
//!   host's namespace to 127.0.0.1: the same port, or the apiserver's for 10.0.0.1:443.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Node;
use crate::process::{self, launch};
use crate::{Error, Result, layout, wait};

/// Where pods reach the host's loopback: a service on 127.0.0.1:P answers them at 10.244.7.1:P.
pub const GATEWAY_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 244, 7, 1);

/// The host's own address on the pod bridge: the kubelet probes pods from it, as on any node. The
/// connected route to the pod subnet that comes with it is what keeps those probes (and anything
/// else on the host bound for a pod) on the bridge; without it they would leave by the default
/// route. It goes with the bridge at `down`.
pub const HOST_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 244, 7, 2);

/// The `kubernetes` Service's ClusterIP and port, which the kubelet injects into every pod as
/// KUBERNETES_SERVICE_HOST/PORT (the first address of --service-cluster-ip-range).
pub const API_SERVICE_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const API_SERVICE_PORT: u16 = 443;

/// The relay's port inside the gateway namespace, which nothing else uses. A pod connecting to
/// 10.244.7.1 on this port is redirected like any other and reaches 127.0.0.1 on it too.
pub const RELAY_PORT: u16 = 15001;

/// The gateway's end of the veth pair, inside the gateway namespace (so one name for every cluster).
const GATEWAY_INTERFACE: &str = "gw0";

/// The holder: a shell in a new network namespace that says it is there and sleeps.
const HOLDER_SCRIPT: &str = r#"touch "$1"
while :; do sleep 3600; done
"#;

/// Run inside the gateway namespace once the veth's end is in it; `$1` is the nft rules file.
const SETUP_SCRIPT: &str = r#"set -e
ip link set lo up
ip address add "$2/32" dev lo
ip address add "$3/24" dev "$4"
ip link set "$4" up
nft -f "$1"
"#;

/// The gateway namespace's only netfilter rules: redirect to the relay, which then finds the
/// original destination with SO_ORIGINAL_DST.
pub fn nft_rules() -> String {
    format!(
        "table ip toma-relay {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr {API_SERVICE_ADDRESS} tcp dport {API_SERVICE_PORT} redirect to :{RELAY_PORT}
    ip daddr {GATEWAY_ADDRESS} meta l4proto tcp redirect to :{RELAY_PORT}
  }}
}}
"
    )
}

/// The host end of the veth pair: "tg-" and the cluster's tag, 11 characters (the kernel allows 15).
pub fn veth_name(tag: &str) -> String {
    format!("tg-{tag}")
}

impl Node<'_> {
    fn holder_ready_file(&self) -> PathBuf {
        self.layout.root().join("pod-gateway.ready")
    }

    fn relay_ready_file(&self) -> PathBuf {
        self.layout.root().join("pod-relay.ready")
    }

    /// Starts the holder of the gateway namespace and joins that namespace to the bridge.
    pub fn start_gateway(&self) -> Result<u32> {
        let ready = self.holder_ready_file().display().to_string();
        let args = ["--net", "sh", "-c", HOLDER_SCRIPT, "toma-pod-gateway", &ready];
        let pid = launch(self.layout, "pod-gateway", Path::new("unshare"), args, &[])?;
        wait::until_ready(
            self.layout,
            "pod-gateway",
            pid,
            Duration::from_secs(10),
            "namespace ready",
            || self.holder_ready_file().exists(),
        )?;
        self.connect_gateway(pid)?;
        Ok(pid)
    }

    fn connect_gateway(&self, holder: u32) -> Result<()> {
        let ip = Path::new("ip");
        let bridge = self.get("BRIDGE");
        let veth = self.get("GATEWAY_VETH");
        // The bridge plugin makes the bridge at the first pod; the gateway needs it before that,
        // and the plugin takes an existing one as it is.
        if !Path::new("/sys/class/net").join(&bridge).exists() {
            process::run(ip, &["link", "add", "name", &bridge, "type", "bridge"])?;
        }
        let host = format!("{HOST_ADDRESS}/24");
        process::run(ip, &["address", "replace", &host, "dev", &bridge])?;
        process::run(ip, &["link", "set", &bridge, "up"])?;
        let holder = holder.to_string();
        process::run(
            ip,
            &[
                "link",
                "add",
                &veth,
                "type",
                "veth",
                "peer",
                "name",
                GATEWAY_INTERFACE,
                "netns",
                &holder,
            ],
        )?;
        process::run(ip, &["link", "set", &veth, "master", &bridge, "up"])?;
        let rules = self.layout.node("pod-gateway.nft");
        layout::write(&rules, &nft_rules())?;
        process::run(
            Path::new("nsenter"),
            &[
                "-t",
                &holder,
                "-n",
                "sh",
                "-c",
                SETUP_SCRIPT,
                "toma-pod-gateway-setup",
                &rules.display().to_string(),
                &API_SERVICE_ADDRESS.to_string(),
                &GATEWAY_ADDRESS.to_string(),
                GATEWAY_INTERFACE,
            ],
        )?;
        Ok(())
    }

    /// Starts `toma-cluster relay` against the gateway namespace of `holder`.
    pub fn start_relay(&self, holder: u32) -> Result<u32> {
        let exe = &self.settings.cluster_exe;
        let ready = self.relay_ready_file();
        let args = vec![
            "relay".to_string(),
            format!("--namespace-of={holder}"),
            format!("--apiserver-port={}", self.get("API_PORT")),
            format!("--ready-file={}", ready.display()),
        ];
        let pid = launch(self.layout, "pod-relay", exe, args, &[])?;
        wait::until_ready(
            self.layout,
            "pod-relay",
            pid,
            Duration::from_secs(10),
            "listening",
            || ready.exists(),
        )?;
        Ok(pid)
    }

    /// Stops the relay and the holder and removes the veth pair; the namespace goes with the last
    /// of them.
    pub fn stop_gateway(&self, stopped: &mut Vec<u32>, left: &mut Vec<String>) {
        if let Err(error) = self.stop_component("pod-relay", stopped) {
            left.push(error.to_string());
        }
        // Deleting one end deletes the pair, at once, rather than when the namespace is reclaimed.
        if let Some(veth) = self.env.get("GATEWAY_VETH")
            && Path::new("/sys/class/net").join(veth).exists()
            && let Err(error) = process::run(Path::new("ip"), &["link", "delete", veth])
        {
            left.push(error.to_string());
        }
        if let Err(error) = self.stop_component("pod-gateway", stopped) {
            left.push(error.to_string());
        }
    }

    /// The relay is this crate's binary; a library caller (a test) names it.
    pub fn check_gateway(&self) -> Result<()> {
        let exe = &self.settings.cluster_exe;
        if exe.file_name().is_none_or(|name| name != "toma-cluster") || !exe.is_file() {
            return Err(Error::Missing(format!(
                "the pod relay runs as `toma-cluster relay`, but {} is not the toma-cluster binary: set TOMA_CLUSTER_EXE to it",
                exe.display()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_gateway_and_the_api_service_are_redirected_to_the_relay() {
        let rules = nft_rules();
        assert!(rules.contains("ip daddr 10.0.0.1 tcp dport 443 redirect to :15001"));
        assert!(rules.contains("ip daddr 10.244.7.1 meta l4proto tcp redirect to :15001"));
        assert_eq!(rules.matches("redirect").count(), 2);
    }

    #[test]
    fn veth_names_fit_the_kernel_limit_and_follow_the_tag() {
        let name = veth_name("0123abcd");
        assert_eq!(name, "tg-0123abcd");
        assert!(name.len() <= 15);
    }
}
