//! The whole node, end to end: `up`, a busybox pod on the pod network that reads a mounted
//! Secret and one on the host network, both Ready, a pod that reaches a service on the host's
//! loopback through the pod gateway, an imported image run under its new name; then `down` leaves
//! nothing behind: no process, container, shim, mount, network namespace, cgroup, bridge, veth or
//! port.
//!
//! Needs root, hack/build-control-plane.sh and hack/build-node.sh; hence ignored:
//! `cargo test -p toma-cluster --test down_leaves_nothing -- --ignored`.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use toma_cluster::layout::EnvFile;
use toma_cluster::{Cluster, Settings, process};

const PODS: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: greeting}
stringData: {greeting: hello-from-a-secret}
---
apiVersion: v1
kind: Pod
metadata: {name: on-pod-network}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: main
      image: localhost/busybox:latest
      imagePullPolicy: Never
      command: [sh, -c, "cat /secret/greeting; echo; exec sleep 3600"]
      readinessProbe:
        exec: {command: [cat, /secret/greeting]}
        periodSeconds: 1
      volumeMounts: [{name: secret, mountPath: /secret}]
  volumes: [{name: secret, secret: {secretName: greeting}}]
---
apiVersion: v1
kind: Pod
metadata: {name: on-host-network}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
    - name: main
      image: localhost/busybox:latest
      imagePullPolicy: Never
      command: [sh, -c, "exec sleep 3600"]
"#;

/// Stops the cluster if the test fails half-way, so a failure leaves nothing either.
struct Guard<'a>(&'a Cluster, bool);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if !self.1 {
            let _ = self.0.down();
        }
    }
}

fn kubectl(bin: &Path, kubeconfig: &Path, args: &[&str]) -> String {
    let output = Command::new(bin.join("kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A one-line HTTP server on 127.0.0.1 that answers every request with `body`; its port.
fn serve_on_loopback(body: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let response = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            let _ = stream.write_all(response.as_bytes());
        }
    });
    port
}

/// A pod on the pod network that fetches `url` once and prints what it got.
fn fetching_pod(url: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: reaches-host}}
spec:
  restartPolicy: Never
  containers:
    - name: main
      image: localhost/busybox:latest
      imagePullPolicy: Never
      command: [wget, -q, -O-, "{url}"]
"#
    )
}

fn ns_link(pid: u32, kind: &str) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .ok()
        .map(|p| p.display().to_string())
}

fn cgroup_dirs(root: &str) -> Vec<PathBuf> {
    fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|e| e.path().join(root.trim_start_matches('/')))
        .filter(|p| p.exists())
        .collect()
}

fn cgroup_pids(root: &str) -> Vec<u32> {
    let procs = Path::new("/sys/fs/cgroup/pids").join(root.trim_start_matches('/'));
    let output = Command::new("find")
        .arg(&procs)
        .args(["-name", "cgroup.procs", "-exec", "cat", "{}", "+"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
#[ignore = "starts a real cluster with a node; needs root and the node build"]
fn down_leaves_no_process_container_mount_netns_cgroup_or_port() {
    let dir = format!("/tmp/toma-cluster-downtest-{}", std::process::id());
    let settings = Settings::from_lookup(|name| match name {
        "TOMA_CLUSTER_DIR" => Some(dir.clone()),
        "TOMA_NODE" => Some("1".into()),
        "TOMA_CLUSTER_EXE" => Some(env!("CARGO_BIN_EXE_toma-cluster").into()),
        other => std::env::var(other).ok(),
    })
    .unwrap();
    let cluster = Cluster::new(settings);
    let mut guard = Guard(&cluster, false);
    cluster.up().unwrap();

    let env = EnvFile::read(&cluster.layout().env_file()).unwrap();
    let bin = PathBuf::from(env.get("BIN").unwrap());
    let kubeconfig = cluster.layout().kubeconfig();
    let manifest = cluster.layout().root().join("pods.yaml");
    fs::write(&manifest, PODS).unwrap();
    kubectl(&bin, &kubeconfig, &["apply", "-f", manifest.to_str().unwrap()]);
    kubectl(
        &bin,
        &kubeconfig,
        &["wait", "--for=condition=Ready", "pod", "--all", "--timeout=120s"],
    );

    let ip = |pod: &str| {
        kubectl(
            &bin,
            &kubeconfig,
            &["get", "pod", pod, "-o", "jsonpath={.status.podIP}"],
        )
    };
    assert!(
        ip("on-pod-network").starts_with("10.244.7."),
        "pod IP {}",
        ip("on-pod-network")
    );
    assert_eq!(ip("on-host-network"), "127.0.0.1");
    // Through the apiserver's kubelet client certificate and the kubelet's webhook authorization.
    let logs = kubectl(&bin, &kubeconfig, &["logs", "on-pod-network"]);
    assert_eq!(logs.trim(), "hello-from-a-secret");

    // The host's loopback, through the pod gateway: 127.0.0.1:P answers pods at 10.244.7.1:P.
    let port = serve_on_loopback("hello-from-the-host");
    let manifest = cluster.layout().root().join("reaches-host.yaml");
    fs::write(&manifest, fetching_pod(&format!("http://10.244.7.1:{port}/"))).unwrap();
    kubectl(&bin, &kubeconfig, &["apply", "-f", manifest.to_str().unwrap()]);
    kubectl(
        &bin,
        &kubeconfig,
        &[
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            "pod/reaches-host",
            "--timeout=60s",
        ],
    );
    assert_eq!(
        kubectl(&bin, &kubeconfig, &["logs", "reaches-host"]).trim(),
        "hello-from-the-host"
    );

    // An imported archive runs under the name it was given.
    let archive = cluster.settings().node_image("busybox.tar");
    cluster
        .import_image(&archive, Some("example.test/imported:1"))
        .unwrap();
    kubectl(
        &bin,
        &kubeconfig,
        &[
            "run",
            "imported",
            "--image=example.test/imported:1",
            "--image-pull-policy=Never",
            "--restart=Never",
            "--command",
            "--",
            "echo",
            "imported-image-ran",
        ],
    );
    kubectl(
        &bin,
        &kubeconfig,
        &[
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            "pod/imported",
            "--timeout=60s",
        ],
    );
    assert_eq!(
        kubectl(&bin, &kubeconfig, &["logs", "imported"]).trim(),
        "imported-image-ran"
    );

    // What must be gone afterwards.
    let cgroup_root = env.get("CGROUP_ROOT").unwrap().to_string();
    let bridge = env.get("BRIDGE").unwrap().to_string();
    let veth = env.get("GATEWAY_VETH").unwrap().to_string();
    let gateway = process::recorded_pid(cluster.layout(), "pod-gateway").unwrap();
    let gateway_net_ns = ns_link(gateway, "net").unwrap();
    let holder = process::recorded_pid(cluster.layout(), "node-holder").unwrap();
    let node_mount_ns = ns_link(holder, "mnt").unwrap();
    let host_net_ns = ns_link(std::process::id(), "net").unwrap();
    let containers = cgroup_pids(&cgroup_root);
    assert!(!containers.is_empty(), "no container processes in {cgroup_root}");
    let pod_net_ns: BTreeSet<String> = containers
        .iter()
        .filter_map(|&p| ns_link(p, "net"))
        .filter(|ns| *ns != host_net_ns)
        .collect();
    assert_eq!(pod_net_ns.len(), 1, "one pod network namespace: {pod_net_ns:?}");
    assert!(
        Path::new("/sys/class/net").join(&bridge).exists(),
        "bridge {bridge} while up"
    );
    assert!(
        Path::new("/sys/class/net").join(&veth).exists(),
        "veth {veth} while up"
    );
    let ports: Vec<u16> = toma_cluster::PORTS
        .iter()
        .map(|key| env.port(key).unwrap())
        .collect();
    let ours: Vec<u32> = process::all_pids()
        .into_iter()
        .filter(|&pid| {
            process::is_ours(cluster.layout(), pid) || ns_link(pid, "mnt").as_deref() == Some(&node_mount_ns)
        })
        .chain(containers.iter().copied())
        .collect();

    cluster.down().unwrap();
    guard.1 = true;

    let alive: Vec<u32> = ours.iter().copied().filter(|&pid| process::alive(pid)).collect();
    assert!(alive.is_empty(), "processes left: {alive:?}");
    let marker = format!("{dir}/");
    let strays: Vec<u32> = process::all_pids()
        .into_iter()
        .filter(|&pid| process::alive(pid) && process::cmdline(pid).is_some_and(|c| c.contains(&marker)))
        .collect();
    assert!(
        strays.is_empty(),
        "processes with the state dir on their command line: {strays:?}"
    );
    for pid in process::all_pids() {
        assert_ne!(
            ns_link(pid, "mnt").as_deref(),
            Some(node_mount_ns.as_str()),
            "pid {pid} in the node's mount namespace"
        );
        let net = ns_link(pid, "net");
        assert!(
            net.as_ref().is_none_or(|n| !pod_net_ns.contains(n)),
            "pid {pid} in a pod network namespace"
        );
        assert_ne!(
            net.as_deref(),
            Some(gateway_net_ns.as_str()),
            "pid {pid} in the pod gateway's network namespace"
        );
    }
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&dir), "mounts left under {dir}");
    assert!(!mounts.lines().any(|l| {
        l.contains("nsfs")
            && pod_net_ns
                .iter()
                .any(|n| l.contains(n.trim_start_matches("net:")))
    }));
    assert_eq!(cgroup_dirs(&cgroup_root), Vec::<PathBuf>::new(), "cgroups left");
    assert!(
        !Path::new("/sys/class/net").join(&bridge).exists(),
        "bridge {bridge} left"
    );
    assert!(
        !Path::new("/sys/class/net").join(&veth).exists(),
        "veth {veth} left"
    );
    let listening = process::listening_ports();
    let open: Vec<u16> = ports.into_iter().filter(|p| listening.contains(p)).collect();
    assert!(open.is_empty(), "ports still listening: {open:?}");
    assert!(!Path::new(&dir).exists(), "state dir left");
    let _ = fs::remove_file(cluster.layout().lock_file());
}
