//! The node's configuration files: containerd's, the kubelet's, CNI's, the kernel settings the
//! kubelet insists on, and the Helm values a pod of toma's chart needs on this node.

use std::path::Path;

use crate::layout::Layout;

/// The node's name and InternalIP. The kubelet rejects a loopback --node-ip but takes an IP given
/// as the hostname as the InternalIP, so hostNetwork pods get 127.0.0.1 and probes go to loopback.
pub const NODE_NAME: &str = "127.0.0.1";

/// The pod network: a bridge with no address on the host side, no gateway, no masquerading and
/// no routes, so pods reach each other and nothing else.
pub const POD_SUBNET: &str = "10.244.7.0/24";

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

/// The pod network (containerd adds the loopback interface itself).
pub fn cni_conflist(bridge: &str, ipam_dir: &Path) -> String {
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
        "ranges": [[{{"subnet": "{POD_SUBNET}"}}]],
        "dataDir": "{ipam}"
      }}
    }}
  ]
}}
"#,
        ipam = ipam_dir.display()
    )
}

/// What a pod of toma's chart needs on this node, for `helm install -f "$TOMA_HELM_VALUES"`. The
/// apiserver listens on loopback only, so the pod runs on the host network and is told the
/// apiserver's loopback address: explicit env wins over the `kubernetes` Service's ClusterIP that
/// the kubelet injects (nothing routes that here). toma's HTTP port is one that was free at `up`,
/// since on the host network a fixed 8080 may be taken.
pub fn helm_values(api_port: u16, http_port: u16) -> String {
    format!(
        r#"# Written by the local cluster (hack/cluster.sh up): what a pod of toma's chart needs on its node.
hostNetwork: true
httpPort: {http_port}
extraEnv:
  - name: KUBERNETES_SERVICE_HOST
    value: "127.0.0.1"
  - name: KUBERNETES_SERVICE_PORT
    value: "{api_port}"
"#
    )
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
    fn pod_network_has_no_gateway_masquerade_or_routes() {
        let text = cni_conflist("toma-1234", Path::new("/tmp/c/node/ipam"));
        assert!(text.contains(r#""isGateway": false"#));
        assert!(text.contains(r#""ipMasq": false"#));
        assert!(!text.contains("routes"));
        assert!(text.contains(POD_SUBNET));
    }

    #[test]
    fn helm_values_point_the_pod_at_the_loopback_apiserver() {
        let text = helm_values(34567, 40001);
        assert!(text.contains("hostNetwork: true"));
        assert!(text.contains("httpPort: 40001"));
        assert!(text.contains("value: \"127.0.0.1\""));
        assert!(text.contains("value: \"34567\""));
    }
}
