//! Reading the deploy/ files the way the deploy tests check them: the queries of a Grafana
//! dashboard (with its variables replaced), the expressions of a Prometheus rule file, and
//! whether a metric they read is one the daemon serves.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::lab::metrics::{Kind, REFERENCE};

/// The repository's deploy/ directory.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Whether `name` is a metric of the reference the daemon serves (a histogram by its
/// `_bucket`, `_sum` and `_count` series).
pub fn documented(name: &str) -> bool {
    REFERENCE.iter().any(|(metric, kind)| {
        *metric == name
            || (*kind == Kind::Histogram
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix) == Some(*metric)))
    })
}

/// Runs `command` (a tool checking a deploy file) to success; its stdout and stderr.
pub fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{command:?} failed:\n{text}");
    text
}

/// A dashboard JSON file under deploy/grafana.
pub fn dashboard(name: &str) -> Value {
    let path = dir().join("grafana").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// Grafana's variables and the value each query is checked with: the dashboard's range, and
/// each template variable's "All" value (a regex matching every value).
pub fn dashboard_variables(dashboard: &Value) -> Vec<(String, String)> {
    let mut variables = vec![("$__range".to_owned(), "1h".to_owned())];
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        let name = variable["name"].as_str().expect("a variable's name");
        if variable["type"] == "datasource" {
            continue;
        }
        assert_eq!(
            variable["includeAll"], true,
            "variable {name}: the panels are checked with its All value"
        );
        let all = variable["allValue"].as_str().expect("allValue").to_owned();
        variables.push((format!("${name}"), all));
    }
    variables
}

/// Every query of every panel (rows hold none) as (panel title, expression), with Grafana's
/// variables replaced.
pub fn panel_exprs(dashboard: &Value) -> Vec<(String, String)> {
    let variables = dashboard_variables(dashboard);
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut exprs = Vec::new();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap_or_default().to_owned();
        let targets = panel["targets"].as_array().map_or(&[][..], Vec::as_slice);
        assert!(!targets.is_empty(), "panel {title} has no query");
        for target in targets {
            let mut expr = target["expr"].as_str().unwrap_or_default().to_owned();
            assert!(!expr.is_empty(), "panel {title} has an empty query");
            for (variable, value) in &variables {
                expr = expr.replace(variable.as_str(), value);
            }
            assert!(
                !expr.contains('$'),
                "panel {title}: an undeclared variable in {expr}"
            );
            exprs.push((title.clone(), expr));
        }
    }
    exprs
}

/// The queries of the dashboard's template variables (`label_values(METRIC, LABEL)`).
pub fn variable_queries(dashboard: &Value) -> Vec<(String, String)> {
    dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let name = v["name"].as_str().unwrap_or_default();
            let query = v["query"]["query"].as_str().unwrap_or_default();
            (format!("variable {name}"), query.to_owned())
        })
        .collect()
}

/// The rules of kind `alert` or `record` in a rule file under deploy/prometheus, as (name,
/// expression). The files keep each rule as `- KIND: NAME` with `expr: ...` on one of the
/// next lines (kept that simple on purpose).
pub fn rules(file: &str, kind: &str) -> Vec<(String, String)> {
    let path = dir().join("prometheus").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let start = format!("- {kind}: ");
    let mut out = Vec::new();
    let mut name = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(n) = line.strip_prefix(&start) {
            name = Some(n.to_owned());
        } else if line.starts_with("- alert: ") || line.starts_with("- record: ") {
            name = None;
        } else if let (Some(expr), Some(n)) = (line.strip_prefix("expr: "), name.take()) {
            out.push((n, expr.to_owned()));
        }
    }
    out
}
