//! A strict reader of the OpenMetrics text the router's `GET /metrics` serves, for tests (the
//! router's unit tests and the lab's admin test): every family announced by `# HELP` then
//! `# TYPE`, its samples right after it and named as its type requires (`_total` for a
//! counter; `_bucket`, `_sum`, `_count` for a histogram), well-formed labels, numeric values,
//! cumulative buckets ending at `+Inf` = `_count`, no series twice, and `# EOF` last.
//!
//! It reads what the router writes, not every OpenMetrics document: units, exemplars,
//! timestamps, `_created` samples and the other metric types are errors.

use std::collections::BTreeMap;

/// One parsed exposition.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Exposition {
    /// Families by the name their `# TYPE` line gives.
    pub families: BTreeMap<String, Family>,
}

/// One metric family and its samples, in the order written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Family {
    pub kind: String,
    pub help: String,
    pub samples: Vec<Sample>,
}

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The sample name: the family's name plus the suffix its type requires.
    pub name: String,
    /// Label names and (unescaped) values, in the order written.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// `name{k="v",...}` with the values escaped again, as the router writes it.
    pub fn series(&self) -> String {
        if self.labels.is_empty() {
            return self.name.clone();
        }
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        format!("{}{{{}}}", self.name, labels.join(","))
    }

    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Exposition {
    /// Every sample by [`Sample::series`].
    pub fn samples(&self) -> BTreeMap<String, f64> {
        self.families
            .values()
            .flat_map(|f| f.samples.iter())
            .map(|s| (s.series(), s.value))
            .collect()
    }
}

/// Parses `text`; the error names the line and what is wrong with it.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut reader = Reader::default();
    let mut lines = text.split_inclusive('\n').enumerate();
    for (number, line) in lines.by_ref() {
        let line = line
            .strip_suffix('\n')
            .ok_or_else(|| format!("line {}: not ended by a newline", number + 1))?;
        if line == "# EOF" {
            reader.finish_family()?;
            return match lines.next() {
                None => Ok(reader.exposition),
                Some((n, _)) => Err(format!("line {}: text after # EOF", n + 1)),
            };
        }
        reader
            .line(line)
            .map_err(|why| format!("line {}: {why}: {line:?}", number + 1))?;
    }
    Err("no # EOF at the end".to_owned())
}

/// Escapes a label value as the text format does (backslash, double quote, newline).
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[derive(Default)]
struct Reader {
    exposition: Exposition,
    /// The family being read: its name, and whether its TYPE line was seen.
    current: Option<(String, bool)>,
}

impl Reader {
    fn line(&mut self, line: &str) -> Result<(), String> {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            self.finish_family()?;
            let (name, help) = rest.split_once(' ').ok_or("HELP without text")?;
            check_name(name)?;
            if help.trim().is_empty() {
                return Err("empty HELP".to_owned());
            }
            if self.exposition.families.contains_key(name) {
                return Err("family announced twice".to_owned());
            }
            self.exposition.families.insert(
                name.to_owned(),
                Family {
                    help: help.to_owned(),
                    ..Family::default()
                },
            );
            self.current = Some((name.to_owned(), false));
            Ok(())
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or("TYPE without a type")?;
            match &mut self.current {
                Some((current, typed)) if current == name && !*typed => *typed = true,
                _ => return Err("TYPE not right after its family's HELP".to_owned()),
            }
            if !["counter", "gauge", "histogram"].contains(&kind) {
                return Err(format!("type {kind:?} is not one the router writes"));
            }
            self.family(name)?.kind = kind.to_owned();
            Ok(())
        } else if line.starts_with('#') {
            Err("a comment the router does not write".to_owned())
        } else {
            self.sample(line)
        }
    }

    fn sample(&mut self, line: &str) -> Result<(), String> {
        let (family_name, typed) = self.current.clone().ok_or("sample before any family")?;
        if !typed {
            return Err("sample before its family's TYPE".to_owned());
        }
        let (series, value) = line.rsplit_once(' ').ok_or("sample without a value")?;
        let value = parse_value(value)?;
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').ok_or("labels not closed by }")?;
                (name, parse_labels(inner)?)
            }
            None => (series, Vec::new()),
        };
        let family = self.family(&family_name)?;
        let suffixes: &[&str] = match family.kind.as_str() {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        let suffix = name
            .strip_prefix(family_name.as_str())
            .filter(|s| suffixes.contains(s))
            .ok_or_else(|| format!("sample {name} outside family {family_name}"))?;
        if (suffix == "_bucket") != labels.iter().any(|(k, _)| k == "le") {
            return Err(
                "an `le` label on anything but a bucket, or a bucket without one".to_owned(),
            );
        }
        let sample = Sample {
            name: name.to_owned(),
            labels,
            value,
        };
        if family.samples.iter().any(|s| s.series() == sample.series()) {
            return Err("series written twice".to_owned());
        }
        family.samples.push(sample);
        Ok(())
    }

    fn family(&mut self, name: &str) -> Result<&mut Family, String> {
        self.exposition
            .families
            .get_mut(name)
            .ok_or_else(|| format!("no family {name}"))
    }

    /// Checks the family just read: typed, and each histogram's buckets add up.
    fn finish_family(&mut self) -> Result<(), String> {
        let Some((name, typed)) = self.current.take() else {
            return Ok(());
        };
        if !typed {
            return Err(format!("family {name} has no TYPE"));
        }
        let family = self.family(&name)?;
        if family.kind == "histogram" {
            check_histogram(&name, family)?;
        }
        Ok(())
    }
}

/// Each series of a histogram (by its labels other than `le`): buckets in increasing bounds
/// with non-decreasing counts, the last `+Inf` and equal to `_count`, and a `_sum`.
fn check_histogram(name: &str, family: &Family) -> Result<(), String> {
    let mut series: BTreeMap<Vec<(String, String)>, Vec<&Sample>> = BTreeMap::new();
    for sample in &family.samples {
        let key = sample
            .labels
            .iter()
            .filter(|(k, _)| k != "le")
            .cloned()
            .collect();
        series.entry(key).or_default().push(sample);
    }
    for (labels, samples) in series {
        let pick = |suffix: &'static str| {
            samples
                .iter()
                .filter(move |s| s.name.strip_prefix(name) == Some(suffix))
        };
        let count = pick("_count").next().map(|s| s.value);
        if pick("_sum").next().is_none() || count.is_none() {
            return Err(format!("{name}{labels:?}: no _sum or _count"));
        }
        let mut last = (f64::NEG_INFINITY, 0.0);
        for bucket in pick("_bucket") {
            let bound = parse_value(bucket.label("le").unwrap_or_default())?;
            if bound <= last.0 || bucket.value < last.1 {
                return Err(format!("{name}{labels:?}: buckets out of order"));
            }
            last = (bound, bucket.value);
        }
        if last.0 != f64::INFINITY || Some(last.1) != count {
            return Err(format!(
                "{name}{labels:?}: +Inf bucket missing or not _count"
            ));
        }
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(format!("bad name {name:?}"))
    }
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if text.contains(|c: char| c.is_ascii_alphabetic() && c != 'e') => {
            Err(format!("bad value {text:?}"))
        }
        _ => text.parse().map_err(|_| format!("bad value {text:?}")),
    }
}

/// `k="v",k2="v2"` with escaped values into unescaped pairs.
fn parse_labels(mut text: &str) -> Result<Vec<(String, String)>, String> {
    let mut labels: Vec<(String, String)> = Vec::new();
    while !text.is_empty() {
        let (key, rest) = text.split_once("=\"").ok_or("label without =\"")?;
        check_name(key)?;
        if labels.iter().any(|(k, _)| k == key) {
            return Err(format!("label {key} twice"));
        }
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().ok_or("label value not closed")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("escape at the end")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    other => return Err(format!("unknown escape \\{other}")),
                },
                (_, '\n') => return Err("newline in a label value".to_owned()),
                (_, c) => value.push(c),
            }
        };
        labels.push((key.to_owned(), value));
        text = rest.get(end + 1..).unwrap_or_default();
        if let Some(next) = text.strip_prefix(',') {
            text = next;
            if text.is_empty() {
                return Err("trailing comma".to_owned());
            }
        } else if !text.is_empty() {
            return Err("labels not separated by ,".to_owned());
        }
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str =
        "# HELP up Whether up.\n# TYPE up gauge\nup{peer=\"a\\\"b\"} 1\nup{peer=\"c\"} 0\n\
        # HELP hits Hits.\n# TYPE hits counter\nhits_total 3\n\
        # HELP t Times.\n# TYPE t histogram\nt_sum{role=\"x\"} 0.5\nt_count{role=\"x\"} 2\n\
        t_bucket{role=\"x\",le=\"0.1\"} 1\nt_bucket{role=\"x\",le=\"+Inf\"} 2\n# EOF\n";

    #[test]
    fn reads_what_the_router_writes() {
        let exposition = parse(GOOD).unwrap();
        let samples = exposition.samples();
        assert_eq!(samples["up{peer=\"a\\\"b\"}"], 1.0);
        assert_eq!(samples["hits_total"], 3.0);
        assert_eq!(samples["t_bucket{role=\"x\",le=\"+Inf\"}"], 2.0);
        assert_eq!(
            exposition.families["up"].samples[0].label("peer"),
            Some("a\"b")
        );
    }

    #[test]
    fn refuses_what_a_scraper_would_trip_on() {
        let broken = [
            ("no EOF", GOOD.replace("# EOF\n", "")),
            ("after EOF", format!("{GOOD}up 1\n")),
            (
                "TYPE first",
                GOOD.replacen("# HELP up Whether up.\n", "", 1),
            ),
            ("counter suffix", GOOD.replace("hits_total", "hits")),
            ("foreign sample", GOOD.replace("hits_total 3", "up 3")),
            (
                "bad value",
                GOOD.replace("hits_total 3", "hits_total three"),
            ),
            (
                "twice",
                GOOD.replace("up{peer=\"c\"} 0", "up{peer=\"a\\\"b\"} 0"),
            ),
            ("open quote", GOOD.replace("{peer=\"c\"}", "{peer=\"c}")),
            (
                "bucket order",
                GOOD.replace("le=\"0.1\"} 1", "le=\"0.1\"} 3"),
            ),
            (
                "no +Inf",
                GOOD.replace("t_bucket{role=\"x\",le=\"+Inf\"} 2\n", ""),
            ),
            ("bad escape", GOOD.replace("a\\\"b", "a\\tb")),
        ];
        for (what, text) in broken {
            assert!(parse(&text).is_err(), "{what} accepted:\n{text}");
        }
    }
}
