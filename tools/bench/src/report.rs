//! The figures of one N: a table on stdout and `results-<N>.json`.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::Result;
use crate::apiserver::Counts;
use crate::cluster::Outcome;
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

/// toma's time to all Ready over the floor's.
pub fn ratio(run: &Run, floor: &Floor) -> f64 {
    run.seconds_to_ready / floor.seconds_to_ready
}

pub fn ratios(operator: &[Run], floor: &Floor) -> Vec<Ratio> {
    operator
        .iter()
        .map(|run| Ratio {
            concurrency: run.concurrency,
            toma_over_floor: ratio(run, floor),
        })
        .collect()
}

impl Results {
    /// Writes `results-<N>.json` into `dir`, which exists.
    pub fn write_json(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join(format!("results-{}.json", self.n));
        std::fs::write(&path, serde_json::to_string_pretty(self)? + "\n")
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }

    pub fn table(&self) -> String {
        let floor = &self.floor;
        let per = |x: u64| fixed(x as f64 / self.n as f64, 2);
        let cpu = |x: Option<f64>| x.map_or_else(|| "-".into(), |v| fixed(v, 1));
        let ready = |o: &Outcome| format!("{} / {}", o.ready, o.rotations_not_one);
        let mut t = Table {
            runs: &self.operator,
            rows: Vec::new(),
        };
        t.row(
            "time to all Ready (s)",
            |r| fixed(r.seconds_to_ready, 2),
            fixed(floor.seconds_to_ready, 2),
        );
        t.row("ratio to floor", |r| fixed(ratio(r, floor), 2), "1.00");
        t.toma("  all Events written (s)", |r| {
            r.seconds_to_events.map_or("-".into(), |s| fixed(s, 2))
        });
        t.toma("  creates alone took (s)", |r| fixed(r.seconds_creating, 2));
        t.row(
            "mints / credential",
            |r| fixed(r.mints_per_credential, 3),
            fixed(floor.mints_per_credential, 3),
        );
        for (label, count) in API_ROWS {
            t.row(label, |r| per(count(&r.api)), per(count(&floor.api)));
        }
        t.toma("reconciles at Ready / after settle", |r| {
            format!("{} / {}", r.reconciles_at_ready, r.reconciles)
        });
        t.toma("reconcile errors", |r| r.reconcile_errors.to_string());
        t.toma("mean reconcile (ms)", |r| fixed(r.mean_reconcile_ms, 1));
        t.row(
            "Ready, rotations != 1",
            |r| ready(&r.outcome),
            ready(&floor.outcome),
        );
        t.row(
            "status.rotations value:count",
            |r| rotations(&r.outcome.rotations),
            rotations(&floor.outcome.rotations),
        );
        t.toma("peak RSS (MiB)", |r| fixed(r.peak_rss_mib, 1));
        t.toma("steady RSS (MiB)", |r| fixed(r.steady_rss_mib, 1));
        t.toma("CPU until Ready (s)", |r| fixed(r.cpu_seconds, 2));
        t.toma("  with settle (s)", |r| fixed(r.cpu_seconds_with_settle, 2));
        t.row(
            "apiserver CPU until Ready (s)",
            |r| cpu(r.apiserver_cpu_seconds),
            cpu(floor.apiserver_cpu_seconds),
        );
        t.row(
            "etcd CPU until Ready (s)",
            |r| cpu(r.etcd_cpu_seconds),
            cpu(floor.etcd_cpu_seconds),
        );
        t.toma("restart: SIGTERM to exit (s)", |r| {
            fixed(r.restart.seconds_to_stop, 2)
        });
        t.toma("restart: to /readyz (s)", |r| {
            fixed(r.restart.seconds_to_ready, 2)
        });
        t.toma("restart: to N reconciles (s)", |r| {
            r.restart
                .seconds_to_all_reconciled
                .map_or("never".into(), |s| fixed(s, 2))
        });
        t.toma("restart: to steady (s)", |r| {
            fixed(r.restart.seconds_to_steady, 2)
        });
        t.toma("restart: reconciles", |r| r.restart.reconciles.to_string());
        t.toma("restart: mints", |r| r.restart.mints.to_string());
        t.toma("restart: API writes", |r| r.restart.api.writes().to_string());
        t.toma("restart: peak RSS (MiB)", |r| fixed(r.restart.peak_rss_mib, 1));
        t.toma("restart: CPU (s)", |r| fixed(r.restart.cpu_seconds, 2));
        let idle_seconds = self.operator.first().map_or(0.0, |r| r.idle.seconds);
        t.toma(format!("idle {idle_seconds:.0} s: CPU (s)"), |r| {
            fixed(r.idle.cpu_seconds, 3)
        });
        t.toma("idle: reconciles", |r| r.idle.reconciles.to_string());
        t.toma("idle: mints", |r| r.idle.mints.to_string());
        t.toma("idle: API writes", |r| r.idle.api.writes().to_string());
        t.toma("idle: RSS (MiB)", |r| fixed(r.idle.rss_mib, 1));
        let rows = t.rows;

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
        let versions = &self.versions;
        let _ = write!(
            out,
            "versions: {}, Kubernetes {}",
            versions.toma, versions.kubernetes
        );
        for version in [&versions.etcd, &versions.rustc].into_iter().flatten() {
            let _ = write!(out, ", {version}");
        }
        out.push('\n');
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
            let ratio = ratio(r, &self.floor);
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
            let peak_rss = r.peak_rss_mib.max(r.restart.peak_rss_mib);
            if peak_rss > 64.0 {
                found.push(format!("c={c}: peak RSS {peak_rss:.1} MiB (over 64 MiB)"));
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

fn fixed(x: f64, digits: usize) -> String {
    format!("{x:.digits$}")
}

/// One figure of [`Counts`].
type Count = fn(&Counts) -> u64;

/// Requests per credential, counted alike for toma and the floor.
const API_ROWS: [(&str, Count); 10] = [
    ("API writes / credential", Counts::writes),
    ("  Secret", |a| a.secret_writes),
    ("  TC status", |a| a.status_writes),
    ("  TC (beyond the creates)", |a| a.turncredential_writes),
    ("  Event", |a| a.event_writes),
    ("  refused (not 2xx)", |a| a.failed_writes),
    ("API GETs / credential (Secret+key)", Counts::operator_gets),
    ("  Secret", |a| a.secret_gets),
    ("  TurnKey/ClusterTurnKey", |a| a.key_gets),
    ("  TC (garbage collector)", |a| a.turncredential_gets),
];

/// The rows of the table: a label, a cell per toma run, and the floor's cell.
struct Table<'a> {
    runs: &'a [Run],
    rows: Vec<(String, Vec<String>, String)>,
}

impl Table<'_> {
    fn row(&mut self, label: impl Into<String>, cell: impl Fn(&Run) -> String, floor: impl Into<String>) {
        let cells = self.runs.iter().map(cell).collect();
        self.rows.push((label.into(), cells, floor.into()));
    }

    /// A row with no figure for the floor.
    fn toma(&mut self, label: impl Into<String>, cell: impl Fn(&Run) -> String) {
        self.row(label, cell, "-");
    }
}
