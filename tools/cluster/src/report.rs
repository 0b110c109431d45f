//! What `env` and `status` print.

use crate::cluster::{Cluster, Status};
use crate::layout::EnvFile;
use crate::node::{self, gateway};
use crate::{control_plane, process};

/// A word for a POSIX shell, single-quoted when it needs to be.
fn shell_quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:=+,@".contains(&b))
    {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

impl Cluster {
    /// `export` lines for `eval "$(hack/cluster.sh env)"`: KUBECONFIG, PATH with kubectl and helm
    /// first, TOMA_CLUSTER_DIR, TOMA_HELM_VALUES (the values file for `helm install -f`) and
    /// TOMA_POD_HOST (where pods reach the host's loopback: a service on 127.0.0.1:P answers pods
    /// at TOMA_POD_HOST:P).
    pub fn env_lines(&self) -> String {
        let env = EnvFile::read(&self.layout().env_file()).unwrap_or_default();
        let bin = env
            .get("BIN")
            .map(str::to_string)
            .unwrap_or_else(|| self.settings().control_plane_bin.display().to_string());
        let layout = self.layout();
        // $PATH stays literal: the shell that evaluates these lines expands it.
        format!(
            "export KUBECONFIG={}\nexport PATH={}:$PATH\nexport TOMA_CLUSTER_DIR={}\nexport TOMA_HELM_VALUES={}\nexport TOMA_POD_HOST={}\n",
            shell_quote(&layout.kubeconfig().display().to_string()),
            shell_quote(&bin),
            shell_quote(&layout.root().display().to_string()),
            shell_quote(&layout.helm_values().display().to_string()),
            gateway::GATEWAY_ADDRESS,
        )
    }

    /// What `status` and `up` print: where the cluster is and what runs in it.
    pub fn summary(&self) -> String {
        let layout = self.layout();
        let env = EnvFile::read(&layout.env_file()).unwrap_or_default();
        let mut out = match self.status() {
            Status::Up => format!("up: {} (readyz ok)\n", env.get("SERVER").unwrap_or_default()),
            Status::Stale => {
                return format!(
                    "down: stale state in {} (run `hack/cluster.sh down` or `up`)\n",
                    layout.root().display()
                );
            }
            Status::Absent => return format!("down: no cluster in {}\n", layout.root().display()),
        };
        out += &format!("  kubeconfig:  {}\n", layout.kubeconfig().display());
        out += &format!("  helm values: {}\n", layout.helm_values().display());
        let mut components: Vec<&str> = control_plane::COMPONENTS.to_vec();
        if env.get("NODE") == Some("1") {
            components.extend(node::COMPONENTS);
        } else {
            components.retain(|c| *c != "kube-scheduler");
            out += "  node:        none (started with TOMA_NODE=0)\n";
        }
        for name in components {
            let pid = process::recorded_pid(layout, name)
                .map(|p| p.to_string())
                .unwrap_or_default();
            let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_string))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .map(|kib| format!("{} MiB", kib / 1024))
                .unwrap_or_default();
            out += &format!(
                "  {name:<24} pid {pid:<8} rss {rss:<8} log {}\n",
                layout.log(name).display()
            );
        }
        let port = |key: &str| env.get(key).unwrap_or("-").to_string();
        out += &format!(
            "  ports: etcd {} (peer {}), apiserver {}, controller-manager {}",
            port("ETCD_PORT"),
            port("ETCD_PEER_PORT"),
            port("API_PORT"),
            port("KCM_PORT")
        );
        if env.get("NODE") == Some("1") {
            out += &format!(
                ", scheduler {}, kubelet {} (healthz {})\n  pods reach: the apiserver at {}:{}, 127.0.0.1:P at {}:P",
                port("SCHEDULER_PORT"),
                port("KUBELET_PORT"),
                port("KUBELET_HEALTHZ_PORT"),
                gateway::API_SERVICE_ADDRESS,
                gateway::API_SERVICE_PORT,
                gateway::GATEWAY_ADDRESS,
            );
        }
        out += "\n  use:   eval \"$(hack/cluster.sh env)\"\n";
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Settings;

    #[test]
    fn env_lines_export_what_tests_and_scripts_read() {
        let settings = Settings::from_lookup(|name| match name {
            "TOMA_CLUSTER_DIR" => Some("/tmp/toma cluster".into()),
            "TOMA_CONTROL_PLANE_BIN" => Some("/cache/bin".into()),
            _ => None,
        })
        .unwrap();
        let lines = Cluster::new(settings).env_lines();
        assert_eq!(
            lines,
            "export KUBECONFIG='/tmp/toma cluster/kubeconfig'\n\
             export PATH=/cache/bin:$PATH\n\
             export TOMA_CLUSTER_DIR='/tmp/toma cluster'\n\
             export TOMA_HELM_VALUES='/tmp/toma cluster/helm-values.yaml'\n\
             export TOMA_POD_HOST=10.244.7.1\n"
        );
    }

    #[test]
    fn shell_quote_survives_single_quotes() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("/plain/path"), "/plain/path");
    }
}
