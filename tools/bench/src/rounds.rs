//! The summary of several rounds of one N: each figure's median and spread across rounds, the
//! ratios taken within each round (a run over the floor measured beside it), and the request
//! counts, which do not vary from round to round.

use std::collections::BTreeSet;
use std::fmt::Write;

use crate::floor::Floor;
use crate::operator::Run;
use crate::report::{Results, apiserver_cpu_ratio, ratio};

/// Median, lowest and highest.
fn spread(mut values: Vec<f64>) -> Option<(f64, f64, f64)> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    let median = if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    };
    Some((median, values[0], values[values.len() - 1]))
}

fn line(out: &mut String, label: &str, values: Vec<f64>) {
    let cell = match spread(values) {
        Some((median, low, high)) => format!("{median:>8.2}   {low:.2}–{high:.2}"),
        None => format!("{:>8}", "-"),
    };
    let _ = writeln!(out, "  {label:<40} {cell}");
}

pub fn summary(rounds: &[Results]) -> String {
    let mut out = String::new();
    let first = &rounds[0];
    let names: Vec<&str> = first.runs.iter().map(|r| r.name.as_str()).collect();
    let _ = writeln!(
        out,
        "N = {}: {} rounds, each in this order: floor with Events, {}, floor",
        first.n,
        rounds.len(),
        names.join(", ")
    );
    let _ = writeln!(out, "  {:<40} {:>8}   min–max", "", "median");
    // A line per run of each round's `figure` for it, and one per floor.
    let runs = |out: &mut String, figure: &dyn Fn(&Results, &Run) -> Option<f64>| {
        for name in &names {
            let values = rounds
                .iter()
                .filter_map(|round| figure(round, round.runs.iter().find(|r| r.name == *name)?))
                .collect();
            line(out, name, values);
        }
    };
    let floors = |out: &mut String, figure: &dyn Fn(&Floor) -> Option<f64>| {
        line(
            out,
            "floor",
            rounds.iter().filter_map(|r| figure(&r.floor)).collect(),
        );
        let with_events = rounds.iter().filter_map(|r| figure(&r.floor_with_events));
        line(out, "floor with Events", with_events.collect());
    };

    let _ = writeln!(out, "time to all Ready (s)");
    floors(&mut out, &|floor| Some(floor.seconds_to_ready));
    runs(&mut out, &|_, run| Some(run.seconds_to_ready));
    let _ = writeln!(out, "ratio to the floor with Events of the same round");
    runs(&mut out, &|round, run| Some(ratio(run, &round.floor_with_events)));
    let _ = writeln!(out, "ratio to the floor of the same round");
    runs(&mut out, &|round, run| Some(ratio(run, &round.floor)));
    let _ = writeln!(
        out,
        "API server CPU (s): floors until all Ready, runs until all Events written"
    );
    floors(&mut out, &|floor| floor.apiserver_cpu_seconds);
    runs(&mut out, &|_, run| run.apiserver_cpu_seconds_to_events);
    let _ = writeln!(
        out,
        "API server CPU ratio to the floor with Events of the same round"
    );
    runs(&mut out, &|round, run| {
        apiserver_cpu_ratio(run, &round.floor_with_events)
    });
    let _ = writeln!(out, "peak RSS (MiB)");
    runs(&mut out, &|_, run| Some(run.peak_rss_mib));

    // Counts do not vary; the last round's, per credential.
    let last = &rounds[rounds.len() - 1];
    let n = last.n as f64;
    let mut columns: Vec<(&str, &std::collections::BTreeMap<String, u64>)> = vec![
        ("floor", &last.floor.api.by_verb),
        ("floor+Events", &last.floor_with_events.api.by_verb),
    ];
    columns.extend(last.runs.iter().map(|r| (r.name.as_str(), &r.api.by_verb)));
    let keys: BTreeSet<&String> = columns.iter().flat_map(|(_, by)| by.keys()).collect();
    let _ = writeln!(
        out,
        "API requests / credential by verb and resource (round {}; from the first create to the end of the settle period)",
        rounds.len()
    );
    let _ = write!(out, "  {:<40}", "");
    for (name, _) in &columns {
        let _ = write!(out, " {name:>20}");
    }
    out.push('\n');
    for key in keys {
        let _ = write!(out, "  {key:<40}");
        for (_, by) in &columns {
            let per = by.get(key).map_or(0.0, |count| *count as f64 / n);
            let _ = write!(out, " {per:>20.3}");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(spread(vec![3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
        assert_eq!(spread(vec![4.0, 1.0, 2.0, 3.0]), Some((2.5, 1.0, 4.0)));
        assert_eq!(spread(vec![]), None);
    }
}
