//! Reading Prometheus text (what the operator's and the sidecar's
//! `/metrics` serve): samples by name and labels.

use std::collections::BTreeMap;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// Whether this sample is `name` and carries every `(label, value)` of `labels`.
    pub fn matches(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.name == name
            && labels
                .iter()
                .all(|(k, v)| self.labels.get(*k).is_some_and(|have| have == v))
    }
}

/// The samples of a Prometheus text exposition (comments and lines that
/// do not parse are left out).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

/// The sum of the samples named `name` that carry all of `labels` (0 when none does).
pub fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.matches(name, labels))
        .map(|s| s.value)
        .sum()
}

/// The value of the first sample named `name` that carries all of `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.matches(name, labels))
        .map(|s| s.value)
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, tail) = parse_labels(after)?;
        labels = parsed;
        rest = tail;
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Parses `k="v",k2="v2"}` (escapes `\\`, `\"`, `\n`); returns the labels and what follows `}`.
fn parse_labels(mut s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(tail) = s.strip_prefix('}') {
            return Some((labels, tail));
        }
        let (key, after) = s.split_once('=')?;
        let mut chars = after.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        labels.insert(key.trim().to_string(), value);
        s = &after[1 + end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_found_by_name_and_a_subset_of_their_labels() {
        let text = "# HELP x_total Things.\n# TYPE x_total counter\n\
                    x_total{topic=\"t\",reason=\"not_json\"} 2\n\
                    x_total{topic=\"t\",reason=\"say \\\"hi\\\", ok\"} 3.5\n\
                    x_total{topic=\"u\",reason=\"not_json\"} 7\n\
                    leader 1\nleader_info{a=\"b\"} 1 1700000000\n# EOF\n";
        let s = parse(text);
        assert_eq!(s.len(), 5, "{s:?}");
        assert_eq!(sum(&s, "x_total", &[("topic", "t")]), 5.5);
        assert_eq!(sum(&s, "x_total", &[("reason", "not_json")]), 9.0);
        assert_eq!(s[1].labels["reason"], "say \"hi\", ok");
        assert_eq!(value(&s, "leader", &[]), Some(1.0));
        assert_eq!(value(&s, "leader_info", &[("a", "b")]), Some(1.0));
        assert_eq!(value(&s, "x", &[]), None);
        assert_eq!(sum(&s, "missing", &[]), 0.0);
    }
}
