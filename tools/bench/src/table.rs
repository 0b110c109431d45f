//! The table of one N on stdout: a column per operator run (toma's, ESO's) and one for the
//! floor, every row built once for all of them.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::apiserver::Counts;
use crate::cluster::Outcome;
use crate::operator::Run;
use crate::report::{Results, apiserver_cpu_ratio, ratio};

impl Results {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let machine = &self.machine;
        let _ = writeln!(
            out,
            "N = {}   ({} cores, {}; load average {}; bench parallelism {})",
            self.n, machine.cores, machine.cpu_model, machine.load_average, self.parallelism
        );
        if let Some(note) = &machine.note {
            let _ = writeln!(out, "note: {note}");
        }
        let versions = &self.versions;
        let _ = write!(
            out,
            "versions: {}, Kubernetes {}",
            versions.toma, versions.kubernetes
        );
        let others = [&versions.etcd, &versions.rustc, &versions.external_secrets];
        for version in others.into_iter().flatten() {
            let _ = write!(out, ", {version}");
        }
        out.push('\n');
        for run in &self.runs {
            let _ = writeln!(out, "{}: {}", run.name, run.command_line);
        }
        let headers: Vec<&str> = self.runs.iter().map(|r| r.name.as_str()).collect();
        out + &layout(&headers, &self.rows())
    }

    fn rows(&self) -> Vec<Row> {
        let floor = &self.floor;
        let per = |x: u64| fixed(x as f64 / self.n as f64, 2);
        let cpu = |x: Option<f64>| x.map_or_else(|| "-".into(), |v| fixed(v, 1));
        let mut t = Table {
            runs: &self.runs,
            rows: Vec::new(),
        };
        t.row(
            "time to all Ready (s)",
            |r| fixed(r.seconds_to_ready, 2),
            fixed(floor.seconds_to_ready, 2),
        );
        t.row("ratio to floor", |r| fixed(ratio(r, floor), 2), "1.00");
        let with_events = &self.floor_with_events;
        t.runs(
            format!(
                "ratio to floor with Events ({:.2} s)",
                with_events.seconds_to_ready
            ),
            |r| fixed(ratio(r, with_events), 2),
        );
        t.runs("  all Events written (s)", |r| optional(r.seconds_to_events, 2));
        t.runs("  creates alone took (s)", |r| fixed(r.seconds_creating, 2));
        t.row(
            "mints / credential",
            |r| fixed(r.mints_per_credential, 3),
            fixed(floor.mints_per_credential, 3),
        );
        for (label, count) in API_ROWS {
            t.row(label, |r| per(count(&r.api)), per(count(&floor.api)));
        }
        t.runs("provider calls / credential", |r| {
            fixed(r.provider_calls_per_credential, 2)
        });
        t.runs("reconciles at Ready / after settle", |r| {
            format!("{} / {}", r.reconciles_at_ready, r.reconciles)
        });
        t.runs("reconcile errors", |r| r.reconcile_errors.to_string());
        t.runs("reconcile requeues", |r| {
            r.reconcile_requeues.map_or("-".into(), |n| n.to_string())
        });
        t.runs("mean reconcile (ms)", |r| fixed(r.mean_reconcile_ms, 1));
        let outcome_rows: [(&str, OutcomeCell); 4] = [
            ("Ready / Secrets", |o| format!("{} / {}", o.ready, o.secrets)),
            ("rotations != 1", |o| {
                o.rotations_not_one.map_or("-".into(), |n| n.to_string())
            }),
            ("status.rotations value:count", |o| rotations(&o.rotations)),
            ("minted, in no Secret, not revoked", |o| {
                o.unused_mints.to_string()
            }),
        ];
        for (label, cell) in outcome_rows {
            t.row(label, |r| cell(&r.outcome), cell(&floor.outcome));
        }
        t.runs("peak RSS (MiB)", |r| fixed(r.peak_rss_mib, 1));
        t.runs("steady RSS (MiB)", |r| fixed(r.steady_rss_mib, 1));
        t.runs("CPU until Ready (s)", |r| fixed(r.cpu_seconds, 2));
        t.runs("  with settle (s)", |r| fixed(r.cpu_seconds_with_settle, 2));
        t.row(
            "apiserver CPU until Ready (s)",
            |r| cpu(r.apiserver_cpu_seconds),
            cpu(floor.apiserver_cpu_seconds),
        );
        t.runs(
            format!(
                "apiserver CPU until all Events (s; floor with Events {})",
                cpu(with_events.apiserver_cpu_seconds)
            ),
            |r| cpu(r.apiserver_cpu_seconds_to_events),
        );
        t.runs("  ratio to floor with Events", |r| {
            apiserver_cpu_ratio(r, with_events).map_or("-".into(), |x| fixed(x, 2))
        });
        t.row(
            "etcd CPU until Ready (s)",
            |r| cpu(r.etcd_cpu_seconds),
            cpu(floor.etcd_cpu_seconds),
        );
        t.runs("restart: SIGTERM to exit (s)", |r| {
            fixed(r.restart.seconds_to_stop, 2)
        });
        t.runs("restart: to ready (s)", |r| fixed(r.restart.seconds_to_ready, 2));
        t.runs("restart: to N reconciles (s)", |r| {
            r.restart
                .seconds_to_all_reconciled
                .map_or("never".into(), |s| fixed(s, 2))
        });
        t.runs("restart: to steady (s)", |r| {
            fixed(r.restart.seconds_to_steady, 2)
        });
        t.runs("restart: reconciles", |r| r.restart.reconciles.to_string());
        t.runs("restart: mints", |r| r.restart.mints.to_string());
        t.runs("restart: API writes", |r| r.restart.api.writes().to_string());
        t.runs("restart: peak RSS (MiB)", |r| fixed(r.restart.peak_rss_mib, 1));
        t.runs("restart: CPU (s)", |r| fixed(r.restart.cpu_seconds, 2));
        let idle_seconds = self.runs.first().map_or(0.0, |r| r.idle.seconds);
        t.runs(format!("idle {idle_seconds:.0} s: CPU (s)"), |r| {
            fixed(r.idle.cpu_seconds, 3)
        });
        t.runs("idle: reconciles", |r| r.idle.reconciles.to_string());
        t.runs("idle: mints", |r| r.idle.mints.to_string());
        t.runs("idle: API writes", |r| r.idle.api.writes().to_string());
        t.runs("idle: RSS (MiB)", |r| fixed(r.idle.rss_mib, 1));
        t.rows
    }
}

/// A label, a cell per operator run, and the floor's cell.
type Row = (String, Vec<String>, String);

/// The header line and the rows, each column as wide as the widest cell (at least 9).
fn layout(headers: &[&str], rows: &[Row]) -> String {
    let label_width = rows.iter().map(|(l, ..)| l.len()).max().unwrap_or(0);
    let width = rows
        .iter()
        .flat_map(|(_, cells, floor)| cells.iter().chain([floor]).map(String::len))
        .chain(headers.iter().map(|h| h.len()))
        .max()
        .unwrap_or(0)
        .max(9);
    let mut out = format!("{:label_width$}", "");
    for header in headers.iter().chain(&["floor"]) {
        let _ = write!(out, "  {header:>width$}");
    }
    out.push('\n');
    for (label, cells, floor) in rows {
        let _ = write!(out, "{label:label_width$}");
        for cell in cells.iter().chain([floor]) {
            let _ = write!(out, "  {cell:>width$}");
        }
        out.push('\n');
    }
    out
}

/// `1:870 0:130`: how many TurnCredentials report each rotation count, most first; `-` for
/// none (ExternalSecrets have no such count).
pub fn rotations(histogram: &BTreeMap<i64, usize>) -> String {
    if histogram.is_empty() {
        return "-".into();
    }
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

fn optional(x: Option<f64>, digits: usize) -> String {
    x.map_or("-".into(), |v| fixed(v, digits))
}

/// A cell of the table from an [`Outcome`].
type OutcomeCell = fn(&Outcome) -> String;

/// One figure of [`Counts`].
type Count = fn(&Counts) -> u64;

/// Requests per credential, counted alike for every operator and the floor.
const API_ROWS: [(&str, Count); 12] = [
    ("API writes / credential", Counts::writes),
    ("  Secret", |a| a.secret_writes),
    ("  status (TC / ES)", |a| a.status_writes),
    ("  TC / ES beyond the creates", |a| a.object_writes),
    ("  Event", |a| a.event_writes),
    ("  generator objects", |a| a.key_writes),
    ("  refused (not 2xx)", |a| a.failed_writes),
    ("API GETs / credential (Secret + key)", Counts::operator_gets),
    ("  Secret", |a| a.secret_gets),
    ("  TurnKey / generator", |a| a.key_gets),
    ("  TC / ES (garbage collector)", |a| a.object_gets),
    ("API LISTs / credential", |a| a.lists),
];

/// The rows of the table, built a row at a time.
struct Table<'a> {
    runs: &'a [Run],
    rows: Vec<Row>,
}

impl Table<'_> {
    fn row(&mut self, label: impl Into<String>, cell: impl Fn(&Run) -> String, floor: impl Into<String>) {
        let cells = self.runs.iter().map(cell).collect();
        self.rows.push((label.into(), cells, floor.into()));
    }

    /// A row with no figure for the floor.
    fn runs(&mut self, label: impl Into<String>, cell: impl Fn(&Run) -> String) {
        self.row(label, cell, "-");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_the_widest_cell_and_the_floor_comes_last() {
        let rows = vec![
            (
                "time (s)".to_string(),
                vec!["1.00".into(), "58.30".into()],
                "4.34".into(),
            ),
            (
                "a longer label".to_string(),
                vec!["-".into(), "1234567890".into()],
                "-".into(),
            ),
        ];
        let table = layout(&["toma c=16", "ESO c=16"], &rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            format!(
                "{:14}  {:>10}  {:>10}  {:>10}",
                "", "toma c=16", "ESO c=16", "floor"
            )
        );
        assert_eq!(
            lines[1],
            format!(
                "{:14}  {:>10}  {:>10}  {:>10}",
                "time (s)", "1.00", "58.30", "4.34"
            )
        );
        assert_eq!(lines[2], "a longer label           -  1234567890           -");
    }

    #[test]
    fn rotations_list_the_most_common_count_first_and_none_as_a_dash() {
        assert_eq!(rotations(&BTreeMap::from([(0, 130), (1, 870)])), "1:870 0:130");
        assert_eq!(rotations(&BTreeMap::new()), "-");
    }
}
