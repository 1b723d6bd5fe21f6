//! The site plan file: sites, their traffic switches, the write guard, the gates and the target
//! version. Everything here is checked before anything in a cluster changes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Annotation external-dns reads for weighted records on AWS (Route 53), the default weight key.
pub const DEFAULT_WEIGHT_ANNOTATION: &str = "external-dns.alpha.kubernetes.io/aws-weight";

/// A duration written as `90s`, `15m` or `1h` in the plan file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        crate::cli::parse_duration(&s)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

/// The plan file, as written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SitePlan {
    /// Version (image tag) every site ends on.
    pub version: String,
    /// The sites share one database: only the first site runs the update Job (the schema
    /// migration); later sites get `spec.updateJob.disabled: true` for this upgrade.
    #[serde(default)]
    pub shared_database: bool,
    /// Wait after draining a site before touching it, for DNS TTLs and open connections.
    #[serde(default = "default_drain_wait")]
    pub drain_wait: Dur,
    /// How long one site may take to become stable at the new version.
    #[serde(default = "default_stable_timeout")]
    pub stable_timeout: Dur,
    /// How long the lock holds without renewal (a crashed run frees it after that).
    #[serde(default = "default_lock_ttl")]
    pub lock_ttl: Dur,
    /// Who takes writes while a site is upgraded.
    #[serde(default)]
    pub write_guard: WriteGuard,
    /// Replication health gates, evaluated before the first site, before traffic returns to an
    /// upgraded site and after it returned.
    #[serde(default)]
    pub gates: Vec<Gate>,
    /// The sites, in upgrade order.
    pub sites: Vec<Site>,
}

fn default_drain_wait() -> Dur {
    Dur(Duration::from_secs(30))
}

fn default_stable_timeout() -> Dur {
    Dur(Duration::from_secs(30 * 60))
}

fn default_lock_ttl() -> Dur {
    Dur(Duration::from_secs(10 * 60))
}

/// One site: a cluster (kubeconfig and context), the Mattermost serving there and its switch.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Site {
    /// Name used in messages, hooks (`SITE`) and `writer`.
    pub name: String,
    /// Kubeconfig file (relative to the plan file); default: `--kubeconfig`, KUBECONFIG, ~/.kube/config.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context; default: the current one.
    #[serde(default)]
    pub context: Option<String>,
    /// The Mattermost serving this site.
    pub mattermost: ObjectRef,
    /// How user traffic is taken away from this site and given back.
    pub switch: Switch,
    /// This site takes writes whenever it serves user traffic (default true).
    #[serde(default = "yes")]
    pub writes: bool,
    /// The site that takes writes while this one is upgraded (default: the only other site that
    /// writes).
    #[serde(default)]
    pub writer: Option<String>,
    /// Overrides the plan's `drainWait` for this site.
    #[serde(default)]
    pub drain_wait: Option<Dur>,
}

fn yes() -> bool {
    true
}

/// `namespace/name` of an object.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct ObjectRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// A traffic switch.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Switch {
    /// The external-dns weight annotation on an Ingress or a LoadBalancer Service.
    ExternalDns(ExternalDns),
    /// The weight of a backend in a Gateway API HTTPRoute.
    HttpRoute(HttpRoute),
    /// Two commands, one to drain and one to restore.
    Command(CommandSwitch),
}

/// Kinds an external-dns weight annotation can sit on.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum WeightedKind {
    /// A Service (type LoadBalancer).
    Service,
    /// An Ingress.
    Ingress,
}

/// `switch.externalDns`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalDns {
    /// `Service` or `Ingress`.
    pub kind: WeightedKind,
    /// Its name.
    pub name: String,
    /// Its namespace (default: the Mattermost's).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The weight annotation (default `external-dns.alpha.kubernetes.io/aws-weight`).
    #[serde(default)]
    pub annotation: Option<String>,
    /// Weight to restore (default: the value found before draining).
    #[serde(default)]
    pub weight: Option<String>,
}

impl ExternalDns {
    /// The annotation key.
    pub fn annotation(&self) -> &str {
        self.annotation.as_deref().unwrap_or(DEFAULT_WEIGHT_ANNOTATION)
    }
}

/// `switch.httpRoute`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    /// The HTTPRoute's name.
    pub name: String,
    /// Its namespace (default: the Mattermost's).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The backendRef (Service name) whose weight drains this site.
    pub backend: String,
}

/// `switch.command`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandSwitch {
    /// Takes user traffic away from the site.
    pub drain: String,
    /// Gives it back.
    pub restore: String,
}

/// The write guard.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum WriteGuard {
    /// Built in: a drained site gets no user traffic, so it takes no writes; the sites that still
    /// serve and have `writes: true` are the writers.
    #[default]
    Drained,
    /// A command run before a site is upgraded (`STEP=guard`) and after its traffic returned
    /// (`STEP=unguard`); it makes `WRITER` the only site that takes writes meanwhile.
    Command(String),
}

/// A replication health gate: exactly one of `command` and `prometheus`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gate {
    /// Name used in messages.
    pub name: String,
    /// Passes when it exits 0.
    #[serde(default)]
    pub command: Option<String>,
    /// Passes when every sample of the query is within the thresholds.
    #[serde(default)]
    pub prometheus: Option<PrometheusGate>,
}

/// `gates[].prometheus`: an instant query against `<url>/api/v1/query`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusGate {
    /// Base URL of Prometheus (or anything speaking its HTTP API: Thanos, Mimir, VictoriaMetrics).
    pub url: String,
    /// PromQL, e.g. `max(mysql_slave_status_seconds_behind_master)`.
    pub query: String,
    /// Every sample must be below this value.
    #[serde(default)]
    pub below: Option<f64>,
    /// Every sample must be above this value.
    #[serde(default)]
    pub above: Option<f64>,
}

/// Why a plan file is refused.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Not a valid plan document.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What the parser said.
        message: String,
    },
    /// Valid YAML, but the plan is unsafe or incomplete.
    #[error("the site plan is refused, nothing was changed:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl SitePlan {
    /// Reads, parses and validates the plan at `path`; relative kubeconfig paths are resolved
    /// against the plan file's directory.
    pub fn load(path: &Path) -> Result<Self, PlanError> {
        let text = std::fs::read_to_string(path).map_err(|source| PlanError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut plan = Self::parse(&text).map_err(|message| PlanError::Parse {
            path: path.display().to_string(),
            message,
        })?;
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        for site in &mut plan.sites {
            if let Some(k) = site.kubeconfig.as_mut()
                && k.is_relative()
            {
                *k = dir.join(&*k);
            }
        }
        plan.validate().map_err(PlanError::Invalid)?;
        Ok(plan)
    }

    /// Parses without validating.
    pub fn parse(text: &str) -> Result<Self, String> {
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    }

    /// Every reason to refuse the plan (empty: it may run).
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.version.trim().is_empty() {
            problems.push("version is empty".to_owned());
        }
        if self.sites.len() < 2 {
            problems.push(format!(
                "{} site(s): an active/active plan needs at least two (one serves while the other is upgraded)",
                self.sites.len()
            ));
        }
        let mut names = BTreeSet::new();
        let mut installations = BTreeSet::new();
        for s in &self.sites {
            if s.name.trim().is_empty() {
                problems.push("a site has an empty name".to_owned());
            } else if !names.insert(s.name.as_str()) {
                problems.push(format!("site {} is listed twice", s.name));
            }
            let at = (s.kubeconfig.clone(), s.context.clone(), s.mattermost.clone());
            if !installations.insert(at) {
                problems.push(format!(
                    "site {}: Mattermost {}/{} in the same cluster is already another site",
                    s.name, s.mattermost.namespace, s.mattermost.name
                ));
            }
            if s.mattermost.namespace.is_empty() || s.mattermost.name.is_empty() {
                problems.push(format!(
                    "site {}: mattermost.namespace and mattermost.name are required",
                    s.name
                ));
            }
            if let Switch::ExternalDns(e) = &s.switch
                && let Some(w) = &e.weight
                && !positive_weight(w)
            {
                problems.push(format!(
                    "site {}: switch.externalDns.weight {w:?} is not a positive number",
                    s.name
                ));
            }
        }
        let mut gate_names = BTreeSet::new();
        for g in &self.gates {
            if !gate_names.insert(g.name.as_str()) {
                problems.push(format!("gate {} is listed twice", g.name));
            }
            match (&g.command, &g.prometheus) {
                (Some(_), None) => {}
                (None, Some(p)) => {
                    if p.below.is_none() && p.above.is_none() {
                        problems.push(format!("gate {}: prometheus needs `below` or `above`", g.name));
                    }
                    if !(p.url.starts_with("http://") || p.url.starts_with("https://")) {
                        problems.push(format!(
                            "gate {}: prometheus.url must start with http:// or https://",
                            g.name
                        ));
                    }
                }
                _ => problems.push(format!(
                    "gate {}: set exactly one of `command` and `prometheus`",
                    g.name
                )),
            }
        }
        for s in &self.sites {
            if let Err(p) = self.writer_of(s) {
                problems.push(p);
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The one site that takes writes while `site` is upgraded, or why there is not exactly one.
    pub fn writer_of(&self, site: &Site) -> Result<&Site, String> {
        if let Some(w) = &site.writer {
            let Some(writer) = self.sites.iter().find(|s| &s.name == w) else {
                return Err(format!(
                    "site {}: writer {w} is not a site of the plan",
                    site.name
                ));
            };
            if writer.name == site.name {
                return Err(format!(
                    "site {}: it cannot take writes while it is upgraded (writer is itself)",
                    site.name
                ));
            }
            if !writer.writes {
                return Err(format!("site {}: writer {w} has `writes: false`", site.name));
            }
        }
        let serving_writers: Vec<&Site> = self
            .sites
            .iter()
            .filter(|s| s.name != site.name && s.writes)
            .collect();
        // The built-in guard only keeps the drained site from writing: every other site that
        // writes keeps writing. A command guard makes `writer` the only one.
        let writers: Vec<&Site> = match (&self.write_guard, &site.writer) {
            (WriteGuard::Command(_), Some(w)) => {
                serving_writers.into_iter().filter(|s| &s.name == w).collect()
            }
            _ => serving_writers,
        };
        match writers.as_slice() {
            [one] => Ok(one),
            [] => Err(format!(
                "no site would take writes while {} is upgraded (give another site `writes: true`)",
                site.name
            )),
            many => Err(format!(
                "sites {} would take writes at once while {} is upgraded: with the built-in write guard every serving site with `writes: true` writes; set `writes: false` on all but one, or use a command write guard and `writer:`",
                many.iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" and "),
                site.name
            )),
        }
    }

    /// The drain wait of `site`.
    pub fn drain_wait(&self, site: &Site) -> Duration {
        site.drain_wait.unwrap_or(self.drain_wait).0
    }
}

/// A weight that sends traffic: a number above zero.
pub fn positive_weight(w: &str) -> bool {
    w.trim().parse::<f64>().is_ok_and(|v| v > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_SITES: &str = r#"
version: 10.5.1
sharedDatabase: true
drainWait: 5s
gates:
  - name: replication-lag
    prometheus: {url: "http://127.0.0.1:9090", query: "max(lag)", below: 5}
  - name: custom
    command: ./check.sh
sites:
  - name: a
    kubeconfig: a.kubeconfig
    context: site-a
    mattermost: {namespace: chat, name: mm}
    switch:
      externalDns: {kind: Service, name: mm}
  - name: b
    context: site-b
    mattermost: {namespace: chat, name: mm}
    switch:
      httpRoute: {name: chat, backend: mm-b}
"#;

    #[test]
    fn a_two_site_plan_parses_with_defaults() {
        let plan = SitePlan::parse(TWO_SITES).unwrap();
        assert_eq!(plan.validate(), Ok(()));
        assert_eq!(plan.version, "10.5.1");
        assert!(plan.shared_database);
        assert_eq!(plan.drain_wait, Dur(Duration::from_secs(5)));
        assert_eq!(plan.stable_timeout, Dur(Duration::from_secs(1800)));
        assert_eq!(plan.write_guard, WriteGuard::Drained);
        let Switch::ExternalDns(e) = &plan.sites[0].switch else {
            panic!("{:?}", plan.sites[0].switch)
        };
        assert_eq!(e.annotation(), DEFAULT_WEIGHT_ANNOTATION);
        assert_eq!(e.kind, WeightedKind::Service);
        assert_eq!(
            plan.sites[1].switch,
            Switch::HttpRoute(HttpRoute {
                name: "chat".into(),
                namespace: None,
                backend: "mm-b".into()
            })
        );
        assert_eq!(plan.writer_of(&plan.sites[0]).unwrap().name, "b");
        assert_eq!(plan.writer_of(&plan.sites[1]).unwrap().name, "a");
        assert_eq!(plan.gates[0].prometheus.as_ref().unwrap().below, Some(5.0));
    }

    #[test]
    fn relative_kubeconfigs_are_read_next_to_the_plan() {
        let dir = std::env::temp_dir().join(format!("sites-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("plan.yaml");
        std::fs::write(&path, TWO_SITES).unwrap();
        let plan = SitePlan::load(&path).unwrap();
        assert_eq!(
            plan.sites[0].kubeconfig.as_deref(),
            Some(dir.join("a.kubeconfig").as_path())
        );
        assert_eq!(plan.sites[1].kubeconfig, None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn refused(yaml: &str) -> String {
        match SitePlan::parse(yaml) {
            Err(e) => e,
            Ok(plan) => plan.validate().unwrap_err().join("\n"),
        }
    }

    #[test]
    fn two_writers_at_once_are_refused() {
        let three = format!(
            "{TWO_SITES}  - name: c\n    mattermost: {{namespace: chat, name: mm-c}}\n    switch:\n      command: {{drain: 'true', restore: 'true'}}\n"
        );
        let why = refused(&three);
        assert!(
            why.contains("sites b and c would take writes at once while a is upgraded"),
            "{why}"
        );
        // A read-only site does not write, but the two others do while it is upgraded.
        let read_only = three.replace("name: mm-c}", "name: mm-c}\n    writes: false");
        let why = refused(&read_only);
        assert!(
            why.contains("sites a and b would take writes at once while c is upgraded"),
            "{why}"
        );
        // A command guard with an explicit writer per site decides who writes.
        let guarded = format!("writeGuard:\n  command: ./only-writer.sh\n{}", three.trim_start())
            .replace("name: a\n", "name: a\n    writer: b\n")
            .replace("name: b\n", "name: b\n    writer: c\n")
            .replace("name: c\n", "name: c\n    writer: a\n");
        let plan = SitePlan::parse(&guarded).unwrap();
        assert_eq!(plan.validate(), Ok(()));
        assert_eq!(plan.writer_of(&plan.sites[1]).unwrap().name, "c");
        let own = TWO_SITES.replace("name: a\n", "name: a\n    writer: a\n");
        assert!(refused(&own).contains("writer is itself"), "{}", refused(&own));
    }

    #[test]
    fn no_writer_is_refused() {
        let yaml = TWO_SITES.replace("name: b\n", "name: b\n    writes: false\n");
        assert!(
            refused(&yaml).contains("no site would take writes while a is upgraded"),
            "{}",
            refused(&yaml)
        );
    }

    #[test]
    fn unknown_switches_and_fields_are_refused() {
        let yaml = TWO_SITES.replace("httpRoute: {name: chat, backend: mm-b}", "carrierPigeon: {}");
        let why = refused(&yaml);
        assert!(why.contains("carrierPigeon"), "{why}");
        let typo = TWO_SITES.replace("drainWait: 5s", "drainWiat: 5s");
        assert!(refused(&typo).contains("drainWiat"), "{}", refused(&typo));
        let kind = TWO_SITES.replace("kind: Service", "kind: Gateway");
        assert!(refused(&kind).contains("Gateway"), "{}", refused(&kind));
        let dur = TWO_SITES.replace("drainWait: 5s", "drainWait: soon");
        assert!(refused(&dur).contains("soon"), "{}", refused(&dur));
    }

    #[test]
    fn missing_fields_are_refused() {
        let no_version = TWO_SITES.replace("version: 10.5.1\n", "");
        assert!(
            refused(&no_version).contains("version"),
            "{}",
            refused(&no_version)
        );
        let no_switch = TWO_SITES.replace("    switch:\n      httpRoute: {name: chat, backend: mm-b}\n", "");
        assert!(refused(&no_switch).contains("switch"), "{}", refused(&no_switch));
        let no_backend = TWO_SITES.replace(", backend: mm-b", "");
        assert!(
            refused(&no_backend).contains("backend"),
            "{}",
            refused(&no_backend)
        );
        let both = TWO_SITES.replace(
            "command: ./check.sh",
            "command: ./check.sh\n    prometheus: {url: \"http://x\", query: q, below: 1}",
        );
        assert!(
            refused(&both).contains("gate custom: set exactly one"),
            "{}",
            refused(&both)
        );
        let no_threshold = TWO_SITES.replace(", below: 5", "");
        assert!(
            refused(&no_threshold).contains("needs `below` or `above`"),
            "{}",
            refused(&no_threshold)
        );
        let one = TWO_SITES.split("  - name: b").next().unwrap().to_owned();
        assert!(refused(&one).contains("at least two"), "{}", refused(&one));
        let twice = TWO_SITES.replace("name: b\n", "name: a\n");
        assert!(
            refused(&twice).contains("site a is listed twice"),
            "{}",
            refused(&twice)
        );
        let weight = TWO_SITES.replace(
            "kind: Service, name: mm}",
            "kind: Service, name: mm, weight: \"0\"}",
        );
        assert!(
            refused(&weight).contains("not a positive number"),
            "{}",
            refused(&weight)
        );
    }
}
