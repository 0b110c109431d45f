//! The node's configuration files: containerd's, the kubelet's, CNI's, the kernel settings the
//! kubelet insists on, and the Helm values file for toma's chart on this node.

use std::path::Path;

use super::gateway::GATEWAY_ADDRESS;
use crate::layout::Layout;

/// The node's name and InternalIP. The kubelet rejects a loopback --node-ip but takes an IP given
/// as the hostname as the InternalIP, so hostNetwork pods get 127.0.0.1.
pub const NODE_NAME: &str = "127.0.0.1";

/// The pod network: a bridge with no address on the host side, no masquerading and no default
/// route. Pods reach each other, and through the pod gateway (see `gateway`) the `kubernetes`
/// Service and the host's loopback; nothing else.
pub const POD_SUBNET: &str = "10.244.7.0/24";

/// The first address pods get: below it sit the pod gateway, 10.244.7.1, and the host, 10.244.7.2.
pub const POD_RANGE_START: &str = "10.244.7.10";

/// The service range (--service-cluster-ip-range), routed to the pod gateway.
pub const SERVICE_SUBNET: &str = "10.0.0.0/24";

/// The values the kubelet wants in these kernel settings (pkg/kubelet/cm setupKernelTunables).
/// Inside the node's mount namespace each /proc/sys file is covered by a file holding that value,
/// so the kubelet finds them as it wants them and the host's settings are never written.
pub const SYSCTLS: [(&str, &str); 6] = [
    ("vm/overcommit_memory", "1"),
    ("vm/panic_on_oom", "0"),
    ("kernel/panic", "10"),
    ("kernel/panic_on_oops", "1"),
    ("kernel/keys/root_maxkeys", "1000000"),
    ("kernel/keys/root_maxbytes", "25000000"),
];

pub struct Ports {
    pub kubelet: u16,
    pub kubelet_healthz: u16,
}

/// containerd 2.x, configuration version 3. Everything lives in the cluster's directory; the
/// NRI plugin and the ttrpc/debug/metrics listeners are off; the sandbox image is the locally
/// built pause image, and registries are unreachable by design (see `REGISTRY_HOSTS`).
/// `restrict_oom_score_adj`: without CAP_SYS_RESOURCE runc cannot lower oom_score_adj, and every
/// sandbox would fail with permission denied on /proc/self/oom_score_adj.
pub fn containerd_config(layout: &Layout, node_bin: &Path, pause_image: &str) -> String {
    let node = |path: &str| layout.node(path).display().to_string();
    format!(
        r#"version = 3
root = '{root}'
state = '{state}'

[grpc]
  address = '{socket}'

[ttrpc]
  address = ''

[debug]
  address = ''

[metrics]
  address = ''

[plugins]
  [plugins.'io.containerd.nri.v1.nri']
    disable = true

  [plugins.'io.containerd.internal.v1.opt']
    path = '{opt}'

  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'

  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'

    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '{pause_image}'

    [plugins.'io.containerd.cri.v1.images'.registry]
      config_path = '{registry}'

  [plugins.'io.containerd.cri.v1.runtime']
    enable_selinux = false
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true

    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'

      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'

        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '{runc}'
          Root = '{runc_root}'
          SystemdCgroup = false

    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['/usr/lib/cni']
      conf_dir = '{cni}'
"#,
        root = node("containerd/root"),
        state = node("containerd/state"),
        socket = node("containerd.sock"),
        opt = node("containerd/opt"),
        runc = node_bin.join("runc").display(),
        runc_root = node("runc"),
        cni = node("cni"),
        registry = node("registries"),
    )
}

/// The node pulls nothing: every registry resolves to a closed loopback port, so a pod whose
/// image was not imported fails at once with ErrImagePull ("connection refused") in its Events,
/// instead of reaching out to the internet. Written as `<registries>/_default/hosts.toml`.
pub const REGISTRY_HOSTS: &str =
    "# Every registry: a closed loopback port. Import images with `hack/cluster.sh import-image`.
server = \"http://127.0.0.1:1\"
";

/// The kubelet's configuration. The settings that matter on these machines:
/// - cgroup v1 is refused by default since 1.35 (`failCgroupV1: false`), and the kubelet manages
///   its own `cgroupRoot` so the machine's hierarchies are never reconfigured;
/// - `oomScoreAdj: 0` and `maxOpenFiles: 20000`: the kubelet has no CAP_SYS_RESOURCE here;
/// - listeners on loopback only; the read-only port is off; requests are authenticated with the
///   cluster CA or a token and authorised by the apiserver, as on a real node;
/// - small eviction thresholds, since the disk is shared with everything else on the machine;
/// - `resolvConf` with only 127.0.0.1, so pods never inherit the machine's resolver.
pub fn kubelet_config(layout: &Layout, ports: &Ports, cgroup_root: &str, sync_frequency: &str) -> String {
    let node = |path: &str| layout.node(path).display().to_string();
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: {cgroup_root}
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
containerRuntimeEndpoint: unix://{socket}
address: 127.0.0.1
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {ca}
authorization:
  mode: Webhook
podLogsDir: {pod_logs}
volumePluginDir: {volume_plugins}
resolvConf: {resolv}
clusterDomain: cluster.local
syncFrequency: {sync_frequency}
evictionHard:
  memory.available: 100Mi
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
  imagefs.inodesFree: "1%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
protectKernelDefaults: false
oomScoreAdj: 0
maxOpenFiles: 20000
failSwapOn: false
"#,
        socket = node("containerd.sock"),
        port = ports.kubelet,
        healthz = ports.kubelet_healthz,
        ca = layout.pki("ca.crt").display(),
        pod_logs = node("pod-logs"),
        volume_plugins = node("volume-plugins"),
        resolv = node("resolv.conf"),
    )
}

/// The pod network (containerd adds the loopback interface itself). The route sends the service
/// range to the pod gateway; there is no default route.
pub fn cni_conflist(bridge: &str, ipam_dir: &Path) -> String {
    let gateway = GATEWAY_ADDRESS;
    format!(
        r#"{{
  "cniVersion": "1.0.0",
  "name": "toma",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "{bridge}",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {{
        "type": "host-local",
        "ranges": [[{{"subnet": "{POD_SUBNET}", "rangeStart": "{POD_RANGE_START}"}}]],
        "routes": [{{"dst": "{SERVICE_SUBNET}", "gw": "{gateway}"}}],
        "dataDir": "{ipam}"
      }}
    }}
  ]
}}
"#,
        ipam = ipam_dir.display()
    )
}

/// The values file every local install passes (`helm install -f "$TOMA_HELM_VALUES"`). Nothing
/// is needed any more: pods reach the apiserver through the `kubernetes` Service's ClusterIP, as
/// on a real cluster, so toma's chart runs with its defaults. The file stays so that the place
/// for a node-specific value stays too.
pub fn helm_values() -> String {
    "# Written by the local cluster (hack/cluster.sh up) for `helm install -f`. Nothing is needed:
# pods reach the apiserver at the kubernetes Service (10.0.0.1:443) through the pod gateway.
{}
"
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_config_carries_the_settings_this_machine_needs() {
        let layout = Layout::new("/tmp/c");
        let ports = Ports {
            kubelet: 1001,
            kubelet_healthz: 1002,
        };
        let text = kubelet_config(&layout, &ports, "/toma-node-1", "10s");
        for line in [
            "failCgroupV1: false",
            "cgroupRoot: /toma-node-1",
            "containerRuntimeEndpoint: unix:///tmp/c/node/containerd.sock",
            "port: 1001",
            "healthzPort: 1002",
            "readOnlyPort: 0",
            "oomScoreAdj: 0",
            "maxOpenFiles: 20000",
            "syncFrequency: 10s",
            "resolvConf: /tmp/c/node/resolv.conf",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?}");
        }
    }

    #[test]
    fn pod_network_routes_only_the_service_range_to_the_gateway() {
        let text = cni_conflist("toma-1234", Path::new("/tmp/c/node/ipam"));
        assert!(text.contains(r#""isGateway": false"#));
        assert!(text.contains(r#""ipMasq": false"#));
        assert!(text.contains(r#""routes": [{"dst": "10.0.0.0/24", "gw": "10.244.7.1"}]"#));
        assert_eq!(text.matches("\"dst\"").count(), 1, "no other route: {text}");
        assert!(text.contains(r#""subnet": "10.244.7.0/24", "rangeStart": "10.244.7.10""#));
    }

    #[test]
    fn helm_values_override_nothing_of_the_chart() {
        let text = helm_values();
        assert!(!text.contains("hostNetwork"));
        assert!(!text.contains("KUBERNETES_SERVICE"));
        assert!(text.lines().any(|l| l == "{}"), "an empty YAML map: {text}");
    }
}
