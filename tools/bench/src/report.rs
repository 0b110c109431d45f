//! The figures of one N: `results-<N>.json`, and what deserves a second look (the table is in
//! table.rs).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::Result;
use crate::floor::Floor;
use crate::operator::Run;
use crate::table::rotations;

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
    /// With ESO runs: "external-secrets <version>".
    pub external_secrets: Option<String>,
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
    /// The operators' runs, in the order of the table's columns.
    pub runs: Vec<Run>,
    pub floor: Floor,
    /// The floor that also writes one Event per credential, as toma does.
    pub floor_with_events: Floor,
    /// Each run's time to all Ready over the floors'.
    pub ratios: Vec<Ratio>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// The run's column header, e.g. `toma c=16`.
    pub name: String,
    pub over_floor: f64,
    pub over_floor_with_events: f64,
    /// The API server's CPU until all the run's Events were written, over the Event-writing
    /// floor's until all were Ready (its Events are written by then).
    pub apiserver_cpu_over_floor_with_events: Option<f64>,
}

/// A run's time to all Ready over the floor's.
pub fn ratio(run: &Run, floor: &Floor) -> f64 {
    run.seconds_to_ready / floor.seconds_to_ready
}

/// The API server's CPU until the run's Events were all written, over the floor's.
pub fn apiserver_cpu_ratio(run: &Run, floor: &Floor) -> Option<f64> {
    Some(run.apiserver_cpu_seconds_to_events? / floor.apiserver_cpu_seconds?)
}

pub fn ratios(runs: &[Run], floor: &Floor, floor_with_events: &Floor) -> Vec<Ratio> {
    runs.iter()
        .map(|run| Ratio {
            name: run.name.clone(),
            over_floor: ratio(run, floor),
            over_floor_with_events: ratio(run, floor_with_events),
            apiserver_cpu_over_floor_with_events: apiserver_cpu_ratio(run, floor_with_events),
        })
        .collect()
}

impl Results {
    /// Writes `results-<N>.json` into `dir`, which exists.
    pub fn write_json(&self, dir: &Path, round: Option<usize>) -> Result<PathBuf> {
        let name = match round {
            Some(round) => format!("results-{}-round{round}.json", self.n),
            None => format!("results-{}.json", self.n),
        };
        let path = dir.join(name);
        std::fs::write(&path, serde_json::to_string_pretty(self)? + "\n")
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }

    /// What deserves a second look in toma's runs: the targets the design sets, and anything
    /// that should be 0. ESO's runs are there to compare with, not held to toma's targets.
    pub fn findings(&self) -> Vec<String> {
        let mut found = Vec::new();
        for r in self.runs.iter().filter(|r| r.operator == "toma") {
            let c = &r.name;
            // The floor has no rate limit: only a run without one is held to its time.
            let ratio = ratio(r, &self.floor);
            if ratio > 1.3 && r.mint_rate == Some(0) {
                found.push(format!(
                    "{c}: toma took {ratio:.2}x the floor's time (target <= 1.3)"
                ));
            }
            if r.mints != self.n {
                found.push(format!("{c}: {} mints for {} credentials", r.mints, self.n));
            }
            if let Some(wrong) = r.outcome.rotations_not_one.filter(|&w| w > 0) {
                found.push(format!(
                    "{c}: {wrong} TurnCredentials report status.rotations != 1 after one mint each ({})",
                    rotations(&r.outcome.rotations)
                ));
            }
            if r.outcome.unused_mints > 0 {
                found.push(format!(
                    "{c}: {} credentials minted that no Secret holds and nobody revoked",
                    r.outcome.unused_mints
                ));
            }
            if r.restart.mints > 0 {
                found.push(format!("{c}: {} mints during the restart", r.restart.mints));
            }
            if r.restart.api.writes() > 0 {
                found.push(format!(
                    "{c}: {} API writes during the restart",
                    r.restart.api.writes()
                ));
            }
            if r.idle.reconciles > 0 || r.idle.api.writes() > 0 {
                found.push(format!(
                    "{c}: idle is not idle: {} reconciles, {} API writes",
                    r.idle.reconciles,
                    r.idle.api.writes()
                ));
            }
            let peak_rss = r.peak_rss_mib.max(r.restart.peak_rss_mib);
            if peak_rss > 64.0 {
                found.push(format!("{c}: peak RSS {peak_rss:.1} MiB (over 64 MiB)"));
            }
            if r.reconcile_errors > 0 {
                found.push(format!("{c}: {} reconcile errors", r.reconcile_errors));
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
