//! Checks before an upgrade changes anything: no unintended downgrade, and room in the cluster for
//! the surge pod. A failed check blocks the upgrade; the Deployment is not modified.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod, ResourceRequirements, Taint, Toleration};
use mattermost_api::v1beta1::Mattermost;

use crate::apply::parse_quantity;

/// Why an upgrade may not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// Stable reason.
    pub reason: &'static str,
    /// For humans.
    pub message: String,
}

fn version_of(v: &str) -> Option<semver::Version> {
    let v = v.trim_start_matches('v');
    semver::Version::parse(v).ok().or_else(|| {
        // Two-part versions such as "10.5".
        semver::Version::parse(&format!("{v}.0")).ok()
    })
}

/// Refuses a version older than the last stable one, unless it is the previous stable version
/// (the documented rollback) or the spec allows downgrades. Tags that are not versions pass.
pub fn check_downgrade(
    new: &str,
    last_stable: Option<&str>,
    previous_stable: Option<&str>,
    allowed: bool,
) -> Result<(), Blocked> {
    let (Some(last), Some(new_v)) = (last_stable, version_of(new)) else {
        return Ok(());
    };
    if allowed || Some(new) == previous_stable || new == last {
        return Ok(());
    }
    match version_of(last) {
        Some(last_v) if new_v < last_v => Err(Blocked {
            reason: "DowngradeNotAllowed",
            message: format!(
                "version {new} is older than the last stable version {last}; set it back to {} to roll back, or set \
                 spec.upgrade.allowDowngrade: true",
                previous_stable.unwrap_or(last)
            ),
        }),
        _ => Ok(()),
    }
}

fn tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| {
        let key_ok = t.key.as_deref().is_none_or(|k| k.is_empty() || k == taint.key);
        let effect_ok = t
            .effect
            .as_deref()
            .is_none_or(|e| e.is_empty() || e == taint.effect);
        let value_ok = match t.operator.as_deref() {
            Some("Exists") => true,
            _ => t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default(),
        };
        key_ok && effect_ok && value_ok
    })
}

fn request(resources: &ResourceRequirements, name: &str) -> f64 {
    let req = resources.requests.as_ref().and_then(|r| r.get(name));
    let limit = resources.limits.as_ref().and_then(|r| r.get(name));
    req.or(limit).and_then(|q| parse_quantity(&q.0)).unwrap_or(0.0)
}

/// How many pods needing `cpu` and `memory` fit in `free_cpu` and `free_mem`.
fn room(free_cpu: f64, free_mem: f64, cpu: f64, memory: f64) -> u64 {
    let per = |free: f64, need: f64| {
        if need <= 0.0 {
            u64::MAX
        } else if free < need {
            0
        } else {
            // Bounded by the node's allocatable; the cast saturates.
            (free / need).floor() as u64
        }
    };
    per(free_cpu, cpu).min(per(free_mem, memory))
}

/// What the capacity check needs of a node (a few hundred bytes, whatever the node reports).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeCapacity {
    /// Ready and not cordoned.
    pub schedulable: bool,
    /// Node labels (for node selectors).
    pub labels: BTreeMap<String, String>,
    /// `NoSchedule`/`NoExecute` taints.
    pub taints: Vec<Taint>,
    /// Allocatable CPU, in cores.
    pub cpu: f64,
    /// Allocatable memory, in bytes.
    pub memory: f64,
}

impl NodeCapacity {
    /// The summary of `node`.
    pub fn of(node: &Node) -> Self {
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let spec = node.spec.as_ref();
        let alloc = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
        let q = |k: &str| {
            alloc
                .and_then(|a| a.get(k))
                .and_then(|q| parse_quantity(&q.0))
                .unwrap_or(0.0)
        };
        Self {
            schedulable: ready && !spec.and_then(|s| s.unschedulable).unwrap_or(false),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: spec
                .and_then(|s| s.taints.as_ref())
                .into_iter()
                .flatten()
                .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
                .cloned()
                .collect(),
            cpu: q("cpu"),
            memory: q("memory"),
        }
    }
}

/// What a pod takes from its node: the requests of its containers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodUsage {
    /// The node the pod is bound to.
    pub node: String,
    /// Requested CPU, in cores.
    pub cpu: f64,
    /// Requested memory, in bytes.
    pub memory: f64,
}

impl PodUsage {
    /// What `pod` takes; `None` while it is unscheduled or once it finished.
    pub fn of(pod: &Pod) -> Option<Self> {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded") | Some("Failed")) {
            return None;
        }
        let spec = pod.spec.as_ref()?;
        let node = spec.node_name.clone().filter(|n| !n.is_empty())?;
        let (mut cpu, mut memory) = (0.0, 0.0);
        for c in &spec.containers {
            let r = c.resources.clone().unwrap_or_default();
            cpu += request(&r, "cpu");
            memory += request(&r, "memory");
        }
        Some(Self { node, cpu, memory })
    }
}

/// The cluster as the capacity check sees it: nodes and the requests bound to each.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Nodes by name.
    pub nodes: BTreeMap<String, NodeCapacity>,
    /// Requested (cpu, memory) by node name.
    pub used: BTreeMap<String, (f64, f64)>,
}

impl ClusterView {
    /// The view of listed nodes and pods (the fleet CLI lists them once for many installations).
    pub fn from_lists(nodes: &[Node], pods: &[Pod]) -> Self {
        Self::new(
            nodes
                .iter()
                .map(|n| (n.metadata.name.clone().unwrap_or_default(), NodeCapacity::of(n))),
            pods.iter().filter_map(PodUsage::of),
        )
    }

    /// The view of summarised nodes and pods.
    pub fn new(
        nodes: impl IntoIterator<Item = (String, NodeCapacity)>,
        pods: impl IntoIterator<Item = PodUsage>,
    ) -> Self {
        let mut used: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for p in pods {
            let u = used.entry(p.node).or_default();
            u.0 += p.cpu;
            u.1 += p.memory;
        }
        Self {
            nodes: nodes.into_iter().collect(),
            used,
        }
    }
}

/// True when the Ready, schedulable nodes matching `selector` and tolerated by `tolerations` have
/// `cpu` and `memory` free for `count` more pods (each on one node). `Err` says why not.
pub fn fits(
    view: &ClusterView,
    cpu: f64,
    memory: f64,
    count: u32,
    selector: &BTreeMap<String, String>,
    tolerations: &[Toleration],
) -> Result<(), Blocked> {
    let mut candidates = 0;
    let mut placeable: u64 = 0;
    let mut best: Option<(f64, f64)> = None;
    for (name, node) in &view.nodes {
        let selected = selector.iter().all(|(k, v)| node.labels.get(k) == Some(v));
        let tainted = node.taints.iter().any(|t| !tolerates(tolerations, t));
        if !node.schedulable || !selected || tainted {
            continue;
        }
        candidates += 1;
        let (used_cpu, used_mem) = view.used.get(name).copied().unwrap_or_default();
        let (free_cpu, free_mem) = (node.cpu - used_cpu, node.memory - used_mem);
        placeable = placeable.saturating_add(room(free_cpu, free_mem, cpu, memory));
        if placeable >= u64::from(count) {
            return Ok(());
        }
        if best.is_none_or(|(c, _)| free_cpu > c) {
            best = Some((free_cpu, free_mem));
        }
    }
    if candidates == 0 {
        return Err(Blocked {
            reason: "NoSchedulableNodes",
            message: "no Ready, schedulable node matches the pods' node selector and tolerations".to_owned(),
        });
    }
    let (c, m) = best.unwrap_or_default();
    if count > 1 {
        return Err(Blocked {
            reason: "InsufficientCapacity",
            message: format!(
                "the nodes have room for {placeable} of {count} new pods (each needs cpu {cpu}, memory {:.0}Mi)",
                memory / 1_048_576.0
            ),
        });
    }
    Err(Blocked {
        reason: "InsufficientCapacity",
        message: format!(
            "no node has room for the surge pod (needs cpu {cpu}, memory {:.0}Mi; most free: cpu {c:.3}, memory {:.0}Mi)",
            memory / 1_048_576.0,
            m / 1_048_576.0
        ),
    })
}

/// Whether `count` more pods of `mm` fit in `view`.
pub fn installation_fits(view: &ClusterView, mm: &Mattermost, count: u32) -> Result<(), Blocked> {
    let resources = mm.spec.effective_resources();
    let scheduling = mm.spec.scheduling.as_ref();
    let selector = scheduling
        .and_then(|s| s.node_selector.clone())
        .unwrap_or_default();
    let tolerations = scheduling.and_then(|s| s.tolerations.clone()).unwrap_or_default();
    fits(
        view,
        request(&resources, "cpu"),
        request(&resources, "memory"),
        count,
        &selector,
        &tolerations,
    )
}

/// Annotation with the time (RFC 3339) of the last backup taken by other tooling (Velero, a
/// managed database snapshot), read by `spec.upgrade.requireBackupWithin`.
pub const LAST_BACKUP_ANNOTATION: &str = "installation.mattermost.com/last-backup-time";

/// With `spec.upgrade.requireBackupWithin`: an upgrade waits until a backup younger than the
/// window is recorded, by the team's tooling in [`LAST_BACKUP_ANNOTATION`] or by the operator's
/// own backup in `status.lastBackup`.
pub fn check_recent_backup(mm: &Mattermost, now: jiff::Timestamp) -> Result<(), Blocked> {
    let Some(window) = mm
        .spec
        .upgrade
        .as_ref()
        .and_then(|u| u.require_backup_within.as_deref())
    else {
        return Ok(());
    };
    let blocked = |message: String| Blocked {
        reason: "BackupTooOld",
        message,
    };
    let window = crate::cli::parse_duration(window)
        .map_err(|e| blocked(format!("upgrade.requireBackupWithin: {e}")))?;
    let annotated = mm
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LAST_BACKUP_ANNOTATION))
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let own = mm
        .status
        .as_ref()
        .and_then(|s| s.last_backup.as_ref())
        .and_then(|b| b.time.parse::<jiff::Timestamp>().ok());
    let newest = annotated.into_iter().chain(own).max();
    let window_text = format!("{}s", window.as_secs());
    match newest {
        Some(t) if now.duration_since(t).unsigned_abs() <= window || t > now => Ok(()),
        Some(t) => Err(blocked(format!(
            "the last backup ({t}) is older than upgrade.requireBackupWithin ({window_text}); back up, then set the annotation {LAST_BACKUP_ANNOTATION} to its time (RFC 3339)"
        ))),
        None => Err(blocked(format!(
            "upgrade.requireBackupWithin ({window_text}) asks for a recent backup: back up, then set the annotation {LAST_BACKUP_ANNOTATION} to its time (RFC 3339)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, NodeCondition, NodeSpec, NodeStatus, PodSpec};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, cpu: &str, taint: Option<&str>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: taint.map(|k| {
                    vec![Taint {
                        key: k.into(),
                        effect: "NoSchedule".into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                allocatable: Some(BTreeMap::from([
                    ("cpu".into(), Quantity(cpu.into())),
                    ("memory".into(), Quantity("8Gi".into())),
                ])),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn pod(node: &str, cpu: &str) -> Pod {
        let resources = ResourceRequirements {
            requests: Some(BTreeMap::from([("cpu".into(), Quantity(cpu.into()))])),
            ..Default::default()
        };
        Pod {
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                containers: vec![Container {
                    resources: Some(resources),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn view(nodes: &[Node], pods: &[Pod]) -> ClusterView {
        ClusterView::from_lists(nodes, pods)
    }

    #[test]
    fn capacity_counts_requests_selectors_and_taints() {
        let none = BTreeMap::new();
        let nodes = [node("a", "2", None), node("b", "8", Some("dedicated"))];
        assert!(fits(&view(&nodes, &[]), 1.0, 1e9, 1, &none, &[]).is_ok());
        let err = fits(&view(&nodes, &[pod("a", "1500m")]), 1.0, 1e9, 1, &none, &[]).unwrap_err();
        assert_eq!(err.reason, "InsufficientCapacity");
        let tol = Toleration {
            key: Some("dedicated".into()),
            operator: Some("Exists".into()),
            ..Default::default()
        };
        assert!(fits(&view(&nodes, &[pod("a", "1500m")]), 1.0, 1e9, 1, &none, &[tol]).is_ok());
        let sel = BTreeMap::from([("zone".to_owned(), "x".to_owned())]);
        assert_eq!(
            fits(&view(&nodes, &[]), 1.0, 1.0, 1, &sel, &[])
                .unwrap_err()
                .reason,
            "NoSchedulableNodes"
        );
    }

    #[test]
    fn scale_ups_need_room_for_every_new_pod() {
        let none = BTreeMap::new();
        let nodes = [node("a", "2", None), node("b", "3", None)];
        assert!(
            fits(&view(&nodes, &[]), 1.0, 1e9, 5, &none, &[]).is_ok(),
            "2 + 3 pods of 1 cpu"
        );
        let err = fits(&view(&nodes, &[]), 1.0, 1e9, 6, &none, &[]).unwrap_err();
        assert_eq!(err.reason, "InsufficientCapacity");
        assert!(err.message.contains("room for 5 of 6"), "{}", err.message);
        assert!(
            fits(&view(&nodes, &[]), 0.0, 0.0, 1000, &none, &[]).is_ok(),
            "no requests: always fits"
        );
    }

    #[test]
    fn downgrades_need_opt_in_except_the_documented_rollback() {
        assert!(check_downgrade("10.9.0", Some("10.8.1"), None, false).is_ok());
        assert!(
            check_downgrade("10.8.1", Some("10.9.0"), Some("10.8.1"), false).is_ok(),
            "rollback"
        );
        let err = check_downgrade("10.7.0", Some("10.9.0"), Some("10.8.1"), false).unwrap_err();
        assert_eq!(err.reason, "DowngradeNotAllowed");
        assert!(check_downgrade("10.7.0", Some("10.9.0"), None, true).is_ok());
        assert!(check_downgrade("latest", Some("10.9.0"), None, false).is_ok());
        assert!(check_downgrade("10.5", Some("10.9.0"), None, false).is_err());
    }

    #[test]
    fn upgrades_wait_for_a_recent_enough_backup() {
        let now: jiff::Timestamp = "2026-05-02T12:00:00Z".parse().unwrap();
        let mut mm = Mattermost::new("chat", Default::default());
        assert!(check_recent_backup(&mm, now).is_ok(), "off by default");
        mm.spec.upgrade = Some(mattermost_api::v1beta1::UpgradePolicy {
            require_backup_within: Some("24h".into()),
            ..Default::default()
        });
        let err = check_recent_backup(&mm, now).unwrap_err();
        assert_eq!(err.reason, "BackupTooOld");
        assert!(err.message.contains(LAST_BACKUP_ANNOTATION), "{}", err.message);
        let annotate = |mm: &mut Mattermost, t: &str| {
            mm.metadata.annotations = Some(BTreeMap::from([(
                LAST_BACKUP_ANNOTATION.to_owned(),
                t.to_owned(),
            )]));
        };
        annotate(&mut mm, "2026-05-01T00:00:00Z");
        assert!(check_recent_backup(&mm, now).is_err(), "36 h old");
        annotate(&mut mm, "2026-05-01T13:00:00Z");
        assert!(check_recent_backup(&mm, now).is_ok(), "23 h old");
        annotate(&mut mm, "yesterday");
        assert!(check_recent_backup(&mm, now).is_err(), "unparsable");
        mm.status = Some(mattermost_api::v1beta1::MattermostStatus {
            last_backup: Some(mattermost_api::v1beta1::LastBackup {
                location: "s3://b/p/x".into(),
                time: "2026-05-02T11:00:00Z".into(),
                version: "10.8.1".into(),
            }),
            ..Default::default()
        });
        assert!(
            check_recent_backup(&mm, now).is_ok(),
            "the operator's own backup counts"
        );
    }
}
