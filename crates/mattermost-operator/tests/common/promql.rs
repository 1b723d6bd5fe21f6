//! The metric names the shipped dashboard and alerts query, read from their PromQL with a real
//! parser (promql-parser), and the check that a `/metrics` exposition carries each of them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use promql_parser::label::MatchOp;
use promql_parser::parser::{Expr, VectorSelector};
use promql_parser::util::{ExprVisitor, walk_expr};

/// `deploy/monitoring/`.
pub fn monitoring_dir() -> PathBuf {
    testenv::repo_root().join("deploy/monitoring")
}

/// Grafana's interval variables are not PromQL; they are replaced by a duration before parsing,
/// as Grafana does before sending the query.
fn grafana_to_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
}

/// Every PromQL expression with where it comes from: the dashboard panels' targets and the rules.
pub fn expressions() -> Vec<(String, String)> {
    let dir = monitoring_dir();
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("dashboard.json")).unwrap()).unwrap();
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            out.push((
                format!("panel {:?}", panel["title"].as_str().unwrap()),
                grafana_to_promql(target["expr"].as_str().unwrap()),
            ));
        }
    }
    let rules: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(dir.join("rules.yaml")).unwrap()).unwrap();
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule
                .get("alert")
                .or_else(|| rule.get("record"))
                .and_then(|n| n.as_str())
                .unwrap();
            out.push((format!("rule {name}"), rule["expr"].as_str().unwrap().to_owned()));
        }
    }
    out
}

struct Names(BTreeSet<String>);

impl Names {
    fn add(&mut self, vs: &VectorSelector) {
        // A selector names its metric either as `name{...}` or as `{__name__="name"}`.
        let by_matcher = vs
            .matchers
            .matchers
            .iter()
            .find(|m| m.name == "__name__" && matches!(m.op, MatchOp::Equal))
            .map(|m| m.value.clone());
        let name = vs
            .name
            .clone()
            .or(by_matcher)
            .unwrap_or_else(|| panic!("selector without a metric name: {vs}"));
        self.0.insert(name);
    }
}

impl ExprVisitor for Names {
    type Error = String;
    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        match expr {
            Expr::VectorSelector(vs) => self.add(vs),
            Expr::MatrixSelector(ms) => self.add(&ms.vs),
            _ => {}
        }
        Ok(true)
    }
}

/// The metric names selected by one PromQL expression.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let ast = promql_parser::parser::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
    let mut names = Names(BTreeSet::new());
    walk_expr(&mut names, &ast).unwrap();
    names.0
}

/// Metric name -> the places (panel or rule) that query it.
pub fn referenced_metrics() -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (place, expr) in expressions() {
        for name in metric_names(&expr) {
            out.entry(name).or_default().push(place.clone());
        }
    }
    out
}

/// What an exposition says about the queried names.
#[derive(Debug, Default, PartialEq)]
pub struct Exposed {
    /// Names that are not there, or whose suffix does not match their family's `# TYPE`.
    pub problems: Vec<String>,
    /// Names of a family that is declared (`# TYPE` of the right kind) but has no sample yet,
    /// e.g. a counter labelled by error reason before any error: the caller decides which of
    /// these a run may honestly leave empty.
    pub declared_only: Vec<String>,
}

/// Checks `names` against a text exposition. A name counts as exposed when it is the exact
/// name of a sample line (as Prometheus stores it); a `_bucket`/`_sum`/`_count` or `_total` name
/// must belong to a family of the matching `# TYPE` (histogram, counter), so a suffix never
/// matches by accident (e.g. a gauge that happens to end in `_count`).
pub fn check_exposition<'a>(names: impl IntoIterator<Item = &'a String>, exposition: &str) -> Exposed {
    let mut types: BTreeMap<&str, &str> = BTreeMap::new();
    let mut samples: BTreeSet<&str> = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((family, kind)) = rest.split_once(' ') {
                types.insert(family, kind.trim());
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            samples.insert(&line[..end]);
        }
    }
    let mut out = Exposed::default();
    for name in names {
        let family_type = |suffix: &str| name.strip_suffix(suffix).and_then(|f| types.get(f).copied());
        let typed = if let Some(t) = family_type("_bucket") {
            Some(t == "histogram")
        } else if let Some(t) = family_type("_sum").or_else(|| family_type("_count")) {
            Some(t == "histogram" || t == "summary")
        } else if let Some(t) = family_type("_total") {
            Some(t == "counter")
        } else {
            types.get(name.as_str()).map(|t| *t == "gauge" || *t == "unknown")
        };
        match (typed, samples.contains(name.as_str())) {
            (Some(false), _) => out
                .problems
                .push(format!("{name}: suffix does not match its family's # TYPE")),
            (None, _) => out.problems.push(format!("{name}: no such metric")),
            (Some(true), true) => {}
            (Some(true), false) => out.declared_only.push(name.clone()),
        }
    }
    out
}
