//! `contrib/`: the Grafana dashboard and the Prometheus rules name only metrics and labels the
//! real server serves, and promtool accepts the real server's `/metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

const DASHBOARD: &str = "contrib/grafana/sekoia-relay.json";
const RULES: &str = "contrib/prometheus/sekoia-relay.rules.yml";

/// A relay that has received, enriched and delivered one alert, so every metric family has
/// samples (per-hook and per-target families only appear once they count something).
async fn busy_scrape() -> String {
    let app = TestApp::spawn().await;
    mount_alert(&app.sekoia).await;
    mount_chat_ok(&app.chat).await;
    assert_eq!(app.post_event(&alert_event(1)).await.status(), 202);
    wait_for(&app.chat, "/teams", 1, Duration::from_secs(15)).await;
    wait_for(&app.chat, "/slack", 1, Duration::from_secs(15)).await;
    let start = std::time::Instant::now();
    loop {
        let text = app.scrape().await;
        let delivered = text
            .contains("sekoia_relay_delivery_latency_seconds_count{target=\"slack\"}")
            && text.contains("sekoia_relay_delivery_latency_seconds_count{target=\"teams\"}");
        if delivered || start.elapsed() > Duration::from_secs(15) {
            app.shutdown().await;
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a scrape serves: each sample name with the label names and values seen on it, and
/// each family's HELP text (which lists the label values that have not happened yet).
#[derive(Default)]
struct Served {
    labels: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    help: BTreeMap<String, String>,
}

impl Served {
    fn parse(text: &str) -> Served {
        let mut served = Served::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                served.help.insert(name.to_string(), help.to_string());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let labels = served
                .labels
                .entry(line[..name_end].to_string())
                .or_default();
            if let Some(set) = line[name_end..]
                .strip_prefix('{')
                .and_then(|r| r.split_once('}'))
            {
                for (label, value) in matchers(set.0) {
                    labels.entry(label).or_default().insert(value);
                }
            }
        }
        served
    }

    /// The HELP text of the family a sample name belongs to.
    fn help_of(&self, sample: &str) -> &str {
        ["_total", "_bucket", "_count", "_sum", ""]
            .iter()
            .find_map(|suffix| self.help.get(sample.strip_suffix(suffix)?))
            .map_or("", String::as_str)
    }
}

/// `a="x",b=~"y|z"` → `[(a, x), (b, y|z)]` (the operator is dropped).
fn matchers(set: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = set;
    while let Some(quote) = rest.find('"') {
        let label = rest[..quote]
            .trim_matches(|c: char| c == ',' || c.is_whitespace())
            .trim_end_matches(['=', '!', '~'])
            .to_string();
        let Some(end) = rest[quote + 1..].find('"') else {
            break;
        };
        out.push((label, rest[quote + 1..quote + 1 + end].to_string()));
        rest = &rest[quote + 2 + end..];
    }
    out
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every problem with the relay's metrics named in `expr`: a metric the server does not
/// serve, a label it does not carry, a label value it neither served nor lists in its HELP,
/// a `by (…)` label that none of the expression's metrics carry.
fn problems(expr: &str, served: &Served) -> Vec<String> {
    // Labels Prometheus adds to every scraped series, then those of the metrics named.
    let mut known_labels: BTreeSet<&str> = ["job", "instance"].into();
    let mut out = Vec::new();
    for (at, _) in expr.match_indices("sekoia_relay_") {
        if at > 0 && expr[..at].ends_with(is_name_char) {
            continue;
        }
        let len = expr[at..]
            .find(|c| !is_name_char(c))
            .unwrap_or(expr.len() - at);
        let name = &expr[at..at + len];
        let Some(labels) = served.labels.get(name) else {
            out.push(format!("{name} is not served"));
            continue;
        };
        known_labels.extend(labels.keys().map(String::as_str));
        let Some(set) = expr[at + len..]
            .strip_prefix('{')
            .and_then(|r| r.split_once('}'))
        else {
            continue;
        };
        for (label, value) in matchers(set.0) {
            if label == "job" || label == "instance" {
                continue;
            }
            let Some(seen) = labels.get(&label) else {
                out.push(format!("{name} has no label {label}"));
                continue;
            };
            if value.contains('$') || value.contains(".*") {
                continue; // a template variable or a wildcard
            }
            let help = served.help_of(name);
            for alternative in value.split('|') {
                let listed = help
                    .split(|c: char| !is_name_char(c))
                    .any(|w| w == alternative);
                if !seen.contains(alternative) && !listed {
                    out.push(format!(
                        "{name}{{{label}=\"{alternative}\"}} is not a value the relay serves"
                    ));
                }
            }
        }
    }
    for keyword in ["by (", "by(", "without (", "without("] {
        for (at, _) in expr.match_indices(keyword) {
            let list = &expr[at + keyword.len()..];
            let list = &list[..list.find(')').unwrap_or(list.len())];
            for label in list.split(',').map(str::trim).filter(|l| !l.is_empty()) {
                if !known_labels.contains(label) {
                    out.push(format!(
                        "`{keyword}{list})`: no metric here has the label {label}"
                    ));
                }
            }
        }
    }
    out
}

/// Every string in the dashboard that holds a query (panel targets, template variables).
fn queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query", Value::String(q)) => out.push(q.clone()),
                    _ => queries(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| queries(i, out)),
        _ => {}
    }
}

fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// The dashboard is JSON Grafana can import with any Prometheus datasource, and every query
/// in it names metrics, labels and values the live `/metrics` serves.
#[tokio::test]
async fn the_grafana_dashboard_queries_only_what_the_relay_serves() {
    let dashboard: Value = serde_json::from_str(&repo_file(DASHBOARD)).expect("dashboard is JSON");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    assert!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "a datasource variable"
    );
    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in panels(&dashboard) {
        if panel["type"] == "row" {
            continue;
        }
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "unique ids"
        );
        let title = panel["title"].as_str().expect("title");
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            exprs.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    let all = exprs.join("\n");
    for wanted in [
        "sekoia_relay_events_received_total",
        "by (target, outcome)",
        "state=\"dead\"})",
        "histogram_quantile(0.5,",
        "histogram_quantile(0.99,",
        "sekoia_relay_delivery_latency_seconds_bucket",
        "sekoia_relay_enrichments_total",
        "sekoia_relay_config_reloads_total",
    ] {
        assert!(all.contains(wanted), "no panel shows {wanted}");
    }

    let served = Served::parse(&busy_scrape().await);
    let mut found = Vec::new();
    queries(&dashboard, &mut found);
    assert!(found.len() >= exprs.len());
    let wrong: Vec<String> = found.iter().flat_map(|q| problems(q, &served)).collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The alert rules name only metrics, labels and values the live `/metrics` serves (their
/// logic is tested by `promtool test rules` in .ci/run).
#[tokio::test]
async fn the_alert_rules_query_only_what_the_relay_serves() {
    let rules = repo_file(RULES);
    let served = Served::parse(&busy_scrape().await);
    let exprs: Vec<&str> = rules
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    let wrong = problems(&exprs.join("\n"), &served);
    assert!(wrong.is_empty(), "{wrong:#?}");
    for alert in [
        "SekoiaRelayDown",
        "SekoiaRelayDeadLetters",
        "SekoiaRelayStoreErrors",
        "SekoiaRelayQueueGrowing",
        "SekoiaRelayEnrichmentUnavailable",
    ] {
        assert!(rules.contains(&format!("alert: {alert}\n")), "{alert}");
    }
}

/// The checker above catches what it is there for (else the two tests above prove nothing).
#[test]
fn the_query_checker_finds_unknown_metrics_labels_and_values() {
    let served = Served::parse(
        "# HELP sekoia_relay_deliveries Delivery outcomes by target (delivered, retry, dead, skipped).\n\
         sekoia_relay_deliveries_total{target=\"teams\",outcome=\"delivered\"} 1\n",
    );
    let ok = r#"sum by (target, outcome, instance) (rate(sekoia_relay_deliveries_total{job=~"$job",outcome=~"dead|skipped"}[5m]))"#;
    assert_eq!(problems(ok, &served), Vec::<String>::new());
    for (bad, why) in [
        ("sekoia_relay_deliveries{target=\"a\"}", "not served"),
        ("sekoia_relay_delivery_total", "not served"),
        (
            "sekoia_relay_deliveries_total{hook=\"soc\"}",
            "no label hook",
        ),
        (
            "sekoia_relay_deliveries_total{outcome=\"dead_letter\"}",
            "not a value",
        ),
        (
            "sekoia_relay_deliveries_total{outcome=~\"dead|lost\"}",
            "not a value",
        ),
        (
            "sum by (state) (sekoia_relay_deliveries_total)",
            "no metric here has the label state",
        ),
    ] {
        let found = problems(bad, &served);
        assert!(
            found.len() == 1 && found[0].contains(why),
            "{bad}: {found:?}"
        );
    }
}

/// `promtool check metrics` accepts what the relay serves (format and naming conventions).
/// Without promtool on PATH the test says so and passes, unless
/// SEKOIA_RELAY_REQUIRE_PROMTOOL=1 (set by .ci/run, which installs it).
#[tokio::test]
async fn promtool_accepts_the_live_metrics() {
    let required = std::env::var("SEKOIA_RELAY_REQUIRE_PROMTOOL").is_ok_and(|v| v == "1");
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if !required => {
            eprintln!("note: promtool not runnable ({e}): /metrics not checked by promtool");
            return;
        }
        Err(e) => panic!("SEKOIA_RELAY_REQUIRE_PROMTOOL=1 but promtool is not runnable: {e}"),
    };
    let text = busy_scrape().await;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool ends");
    let report = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    let unexplained: Vec<&str> = report
        .lines()
        .filter(|l| !l.trim().is_empty() && !openmetrics_counter_help(l, &text))
        .collect();
    // Exit 3 is "lint problems found"; anything else but 0 is a parse error.
    let code = out.status.code();
    assert!(
        (code == Some(0) || code == Some(3)) && unexplained.is_empty(),
        "promtool check metrics ({code:?}):\n{report}\n{text}"
    );
}

/// promtool (2.42, Debian 12) reads the classic text format, where a counter's HELP and TYPE
/// name the sample (`x_total`); OpenMetrics, which the relay serves and Prometheus scrapes,
/// names the family (`x`). So promtool reports `x_total no help text` for every counter. That
/// line is explained only when the scrape does have `# HELP x` and `# TYPE x counter`.
fn openmetrics_counter_help(line: &str, scrape: &str) -> bool {
    let scrape = format!("\n{scrape}");
    line.strip_suffix(" no help text")
        .and_then(|sample| sample.strip_suffix("_total"))
        .is_some_and(|family| {
            scrape.contains(&format!("\n# HELP {family} "))
                && scrape.contains(&format!("\n# TYPE {family} counter\n"))
        })
}

#[test]
fn only_a_counter_family_with_help_explains_promtools_no_help_text() {
    let scrape = "# HELP a_b Things.\n# TYPE a_b counter\na_b_total 1\n# TYPE c gauge\nc 1\n";
    assert!(openmetrics_counter_help("a_b_total no help text", scrape));
    assert!(!openmetrics_counter_help("c_total no help text", scrape));
    assert!(!openmetrics_counter_help("c no help text", scrape));
    assert!(!openmetrics_counter_help(
        "a_b_total counter metrics should have \"_total\" suffix",
        scrape
    ));
}
