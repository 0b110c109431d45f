//! Reading the Prometheus text format (and OpenMetrics, its superset here): enough to pick
//! counters by name and labels out of toma's and the API server's `/metrics`.

use std::collections::BTreeMap;

/// One sample line: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of the metrics whose name is in `names` (all when `names` is empty). Lines that
/// cannot be read are skipped: a benchmark should not stop over an unusual exposition line.
pub fn samples(text: &str, names: &[&str]) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter(|line| names.is_empty() || names.iter().any(|n| starts_with_name(line, n)))
        .filter_map(parse_line)
        .collect()
}

/// The sum of every sample of `name`, whatever its labels.
pub fn sum(text: &str, name: &str) -> f64 {
    samples(text, &[name]).iter().map(|s| s.value).sum()
}

fn starts_with_name(line: &str, name: &str) -> bool {
    line.strip_prefix(name)
        .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let rest = &line[name_end..];
    let (labels, rest) = if let Some(body) = rest.strip_prefix('{') {
        parse_labels(body)?
    } else {
        (BTreeMap::new(), rest)
    };
    // The value, then an optional timestamp.
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample { name, labels, value })
}

/// Reads `k="v",k2="v2"}` and returns the labels and what follows the closing brace.
fn parse_labels(mut body: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        body = body.trim_start_matches([',', ' ']);
        if let Some(rest) = body.strip_prefix('}') {
            return Some((labels, rest));
        }
        let eq = body.find('=')?;
        let key = body[..eq].trim().to_string();
        let mut chars = body[eq + 1..].char_indices();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        let mut escaped = false;
        let mut end = None;
        for (i, c) in chars {
            match (escaped, c) {
                (true, 'n') => {
                    value.push('\n');
                    escaped = false;
                }
                (true, c) => {
                    value.push(c);
                    escaped = false;
                }
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(eq + 1 + i + 1);
                    break;
                }
                (false, c) => value.push(c),
            }
        }
        labels.insert(key, value);
        body = &body[end?..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP apiserver_request_total Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="201",component="apiserver",dry_run="",group="toma.dev",resource="turncredentials",scope="resource",subresource="",verb="POST",version="v1alpha1"} 1000
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="secrets",scope="resource",subresource="",verb="APPLY",version="v1"} 42
apiserver_request_total_other 7
toma_reconciles_total 12
toma_reconcile_errors_total{reason="Weird \"quoted\", value"} 3
toma_reconcile_errors_total{reason="RateLimited"} 2 1700000000
# EOF
"#;

    #[test]
    fn picks_samples_by_name_with_labels() {
        let requests = samples(TEXT, &["apiserver_request_total"]);
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].labels["resource"], "turncredentials");
        assert_eq!(requests[0].labels["subresource"], "");
        assert_eq!(requests[1].labels["verb"], "APPLY");
        assert_eq!(requests[1].value, 42.0);
    }

    #[test]
    fn sums_over_labels_and_reads_escaped_values() {
        assert_eq!(sum(TEXT, "toma_reconciles_total"), 12.0);
        assert_eq!(sum(TEXT, "toma_reconcile_errors_total"), 5.0);
        let errors = samples(TEXT, &["toma_reconcile_errors_total"]);
        assert_eq!(errors[0].labels["reason"], "Weird \"quoted\", value");
    }
}
