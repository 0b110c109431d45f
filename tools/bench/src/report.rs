//! The figures of one N: a table on stdout and `results-<N>.json`.

use std::fmt::Write;
use std::path::Path;

use serde::Serialize;

use crate::Result;
use crate::floor::Floor;
use crate::operator::Run;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    /// /proc/loadavg when this N started: other work on the machine shows here.
    pub load_average: String,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Versions {
    pub toma: String,
    pub kubernetes: String,
    pub etcd: Option<String>,
    pub rustc: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub n: usize,
    pub started_at: String,
    pub machine: Machine,
    pub versions: Versions,
    /// Requests the bench client keeps in flight (creates, and the whole floor).
    pub parallelism: usize,
    pub settle_seconds: u64,
    pub operator: Vec<Run>,
    pub floor: Floor,
    /// toma's time to all Ready over the floor's, per concurrency.
    pub ratios: Vec<Ratio>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub concurrency: u16,
    pub toma_over_floor: f64,
}

impl Results {
    pub fn write_json(&self, dir: &Path) -> Result<std::path::PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("results-{}.json", self.n));
        std::fs::write(&path, serde_json::to_string_pretty(self)? + "\n")?;
        Ok(path)
    }

    pub fn table(&self) -> String {
        let floor = &self.floor;
        let mut rows: Vec<(String, Vec<String>, String)> = Vec::new();
        let mut row = |label: &str, cell: &dyn Fn(&Run) -> String, floor_cell: String| {
            rows.push((label.into(), self.operator.iter().map(cell).collect(), floor_cell));
        };
        let dash = || "-".to_string();
        let per = |x: u64| format!("{:.2}", x as f64 / self.n as f64);
        let opt = |x: Option<f64>| x.map_or_else(|| "-".into(), |v| format!("{v:.1}"));

        row(
            "time to all Ready (s)",
            &|r| format!("{:.2}", r.seconds_to_ready),
            format!("{:.2}", floor.seconds_to_ready),
        );
        row(
            "ratio to floor",
            &|r| format!("{:.2}", r.seconds_to_ready / floor.seconds_to_ready),
            "1.00".into(),
        );
        row(
            "  all Events written (s)",
            &|r| r.seconds_to_events.map_or("-".into(), |s| format!("{s:.2}")),
            dash(),
        );
        row(
            "  creates alone took (s)",
            &|r| format!("{:.2}", r.seconds_creating),
            dash(),
        );
        row(
            "mints / credential",
            &|r| format!("{:.3}", r.mints_per_credential),
            format!("{:.3}", floor.mints_per_credential),
        );
        row(
            "API writes / credential",
            &|r| format!("{:.2}", r.api_writes_per_credential),
            format!("{:.2}", floor.api_writes_per_credential),
        );
        row(
            "  Secret",
            &|r| per(r.api.secret_writes),
            per(floor.api.secret_writes),
        );
        row(
            "  TC status",
            &|r| per(r.api.status_writes),
            per(floor.api.status_writes),
        );
        row(
            "  TC (beyond the creates)",
            &|r| per(r.api.turncredential_writes),
            per(floor.api.turncredential_writes),
        );
        row(
            "  Event",
            &|r| per(r.api.event_writes),
            per(floor.api.event_writes),
        );
        row(
            "  refused (not 2xx)",
            &|r| per(r.api.failed_writes),
            per(floor.api.failed_writes),
        );
        row(
            "API GETs / credential (Secret+key)",
            &|r| format!("{:.2}", r.api_gets_per_credential),
            per(floor.api.operator_gets()),
        );
        row(
            "  Secret",
            &|r| per(r.api.secret_gets),
            per(floor.api.secret_gets),
        );
        row(
            "  TurnKey/ClusterTurnKey",
            &|r| per(r.api.key_gets),
            per(floor.api.key_gets),
        );
        row(
            "  TC (garbage collector)",
            &|r| per(r.api.turncredential_gets),
            per(floor.api.turncredential_gets),
        );
        row(
            "reconciles at Ready / after settle",
            &|r| format!("{} / {}", r.reconciles_at_ready, r.reconciles),
            dash(),
        );
        row("reconcile errors", &|r| r.reconcile_errors.to_string(), dash());
        row(
            "mean reconcile (ms)",
            &|r| format!("{:.1}", r.mean_reconcile_ms),
            dash(),
        );
        row(
            "Ready, rotations != 1",
            &|r| format!("{} / {}", r.outcome.ready, r.outcome.rotations_not_one),
            format!("{} / {}", floor.outcome.ready, floor.outcome.rotations_not_one),
        );
        row(
            "status.rotations value:count",
            &|r| rotations(&r.outcome.rotations),
            rotations(&floor.outcome.rotations),
        );
        row("peak RSS (MiB)", &|r| format!("{:.1}", r.peak_rss_mib), dash());
        row(
            "steady RSS (MiB)",
            &|r| format!("{:.1}", r.steady_rss_mib),
            dash(),
        );
        row(
            "CPU until Ready (s)",
            &|r| format!("{:.2}", r.cpu_seconds),
            dash(),
        );
        row(
            "  with settle (s)",
            &|r| format!("{:.2}", r.cpu_seconds_with_settle),
            dash(),
        );
        row(
            "apiserver CPU until Ready (s)",
            &|r| opt(r.apiserver_cpu_seconds),
            opt(floor.apiserver_cpu_seconds),
        );
        row(
            "etcd CPU until Ready (s)",
            &|r| opt(r.etcd_cpu_seconds),
            opt(floor.etcd_cpu_seconds),
        );
        row(
            "restart: SIGTERM to exit (s)",
            &|r| format!("{:.2}", r.restart.seconds_to_stop),
            dash(),
        );
        row(
            "restart: to /readyz (s)",
            &|r| format!("{:.2}", r.restart.seconds_to_ready),
            dash(),
        );
        row(
            "restart: to N reconciles (s)",
            &|r| opt2(r.restart.seconds_to_all_reconciled),
            dash(),
        );
        row(
            "restart: to steady (s)",
            &|r| format!("{:.2}", r.restart.seconds_to_steady),
            dash(),
        );
        row(
            "restart: reconciles",
            &|r| r.restart.reconciles.to_string(),
            dash(),
        );
        row("restart: mints", &|r| r.restart.mints.to_string(), dash());
        row(
            "restart: API writes",
            &|r| r.restart.api.writes().to_string(),
            dash(),
        );
        row(
            "restart: peak RSS (MiB)",
            &|r| format!("{:.1}", r.restart.peak_rss_mib),
            dash(),
        );
        row(
            "restart: CPU (s)",
            &|r| format!("{:.2}", r.restart.cpu_seconds),
            dash(),
        );
        row(
            &format!(
                "idle {:.0} s: CPU (s)",
                self.operator.first().map_or(0.0, |r| r.idle.seconds)
            ),
            &|r| format!("{:.3}", r.idle.cpu_seconds),
            dash(),
        );
        row("idle: reconciles", &|r| r.idle.reconciles.to_string(), dash());
        row("idle: mints", &|r| r.idle.mints.to_string(), dash());
        row("idle: API writes", &|r| r.idle.api.writes().to_string(), dash());
        row("idle: RSS (MiB)", &|r| format!("{:.1}", r.idle.rss_mib), dash());

        let headers: Vec<String> = self
            .operator
            .iter()
            .map(|r| format!("toma c={}", r.concurrency))
            .chain(["floor".to_string()])
            .collect();
        let label_width = rows.iter().map(|(l, ..)| l.len()).max().unwrap_or(0);
        let width = rows
            .iter()
            .flat_map(|(_, cells, f)| cells.iter().chain([f]))
            .chain(&headers)
            .map(String::len)
            .max()
            .unwrap_or(0)
            .max(9);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "N = {}   ({} cores, {}; load average {}; bench parallelism {})",
            self.n, self.machine.cores, self.machine.cpu_model, self.machine.load_average, self.parallelism
        );
        if let Some(note) = &self.machine.note {
            let _ = writeln!(out, "note: {note}");
        }
        let _ = writeln!(
            out,
            "versions: {}, Kubernetes {}{}{}",
            self.versions.toma,
            self.versions.kubernetes,
            self.versions
                .etcd
                .as_ref()
                .map(|e| format!(", {e}"))
                .unwrap_or_default(),
            self.versions
                .rustc
                .as_ref()
                .map(|r| format!(", {r}"))
                .unwrap_or_default(),
        );
        let _ = write!(out, "{:label_width$}", "");
        for header in &headers {
            let _ = write!(out, "  {header:>width$}");
        }
        out.push('\n');
        for (label, cells, floor_cell) in &rows {
            let _ = write!(out, "{label:label_width$}");
            for cell in cells.iter().chain([floor_cell]) {
                let _ = write!(out, "  {cell:>width$}");
            }
            out.push('\n');
        }
        out
    }

    /// What deserves a second look: the targets the design sets, and anything that should be 0.
    pub fn findings(&self) -> Vec<String> {
        let mut found = Vec::new();
        for r in &self.operator {
            let c = r.concurrency;
            let ratio = r.seconds_to_ready / self.floor.seconds_to_ready;
            if ratio > 1.3 {
                found.push(format!(
                    "c={c}: toma took {ratio:.2}x the floor's time (target <= 1.3)"
                ));
            }
            if r.mints != self.n {
                found.push(format!("c={c}: {} mints for {} credentials", r.mints, self.n));
            }
            if r.outcome.rotations_not_one > 0 {
                found.push(format!(
                    "c={c}: {} TurnCredentials report status.rotations != 1 after one mint each ({})",
                    r.outcome.rotations_not_one,
                    rotations(&r.outcome.rotations)
                ));
            }
            if r.restart.mints > 0 {
                found.push(format!("c={c}: {} mints during the restart", r.restart.mints));
            }
            if r.restart.api.writes() > 0 {
                found.push(format!(
                    "c={c}: {} API writes during the restart",
                    r.restart.api.writes()
                ));
            }
            if r.idle.reconciles > 0 || r.idle.api.writes() > 0 {
                found.push(format!(
                    "c={c}: idle is not idle: {} reconciles, {} API writes",
                    r.idle.reconciles,
                    r.idle.api.writes()
                ));
            }
            if r.peak_rss_mib.max(r.restart.peak_rss_mib) > 64.0 {
                found.push(format!(
                    "c={c}: peak RSS {:.1} MiB (over 64 MiB)",
                    r.peak_rss_mib.max(r.restart.peak_rss_mib)
                ));
            }
            if r.reconcile_errors > 0 {
                found.push(format!("c={c}: {} reconcile errors", r.reconcile_errors));
            }
        }
        if self.floor.mints != self.n {
            found.push(format!(
                "floor: {} mints for {} credentials",
                self.floor.mints, self.n
            ));
        }
        found
    }
}

/// `1:870 0:130`: how many TurnCredentials report each rotation count, most first.
fn rotations(histogram: &std::collections::BTreeMap<i64, usize>) -> String {
    let mut entries: Vec<(&i64, &usize)> = histogram.iter().collect();
    entries.sort_by(|a, b| b.1.cmp(a.1));
    entries
        .iter()
        .map(|(rotations, count)| format!("{rotations}:{count}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn opt2(x: Option<f64>) -> String {
    x.map_or_else(|| "never".into(), |v| format!("{v:.2}"))
}
