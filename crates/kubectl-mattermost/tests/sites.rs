//! `kubectl mattermost sites` against two local control planes at once, one per site, each with
//! its own in-process operator: the built binary drives a site plan whose traffic switch is the
//! external-dns weight annotation on each site's Service.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::*;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use mattermost_api::v1beta1::Mattermost;
use serde_json::json;
use testenv::{EndpointSample, EndpointWatcher};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WEIGHT: &str = "external-dns.alpha.kubernetes.io/aws-weight";
const PROGRESS: &str = "sites.installation.mattermost.com/progress";
const LOCK: &str = "sites.installation.mattermost.com/lock";
const OLD: &str = "9.11.0";
const NEW: &str = "9.11.1";

/// Two sites: `mm` with 3 replicas at 9.11.0 in a fresh namespace of each control plane, stable,
/// its Service carrying weight 100.
struct Sites {
    a: Fleet,
    b: Fleet,
    dir: PathBuf,
}

impl Sites {
    async fn new(prefix: &str) -> Self {
        let second = testenv::client_at(&testenv::second_state_dir()).await.unwrap();
        let a = Fleet::new(prefix, 1, 0, 20).await;
        let b = Fleet::on(second, prefix, 1, 0, 20).await;
        for f in [&a, &b] {
            f.create(f.ns(0), "mm", json!({"replicas": 3})).await;
        }
        for f in [&a, &b] {
            wait_stable_at(f, OLD).await;
            let services: Api<Service> = Api::namespaced(f.client.clone(), f.ns(0));
            testenv::wait_for_object(&services, "mm", TIMEOUT, |_| true)
                .await
                .unwrap();
            set_weight(f, "100").await;
        }
        let dir = std::env::temp_dir().join(format!("sites-{}", a.ns(0)));
        std::fs::create_dir_all(&dir).unwrap();
        Self { a, b, dir }
    }

    /// Writes a plan file with `gates` (YAML list) and extra sites; returns its path.
    fn plan(&self, gates: &str, extra_sites: &str) -> PathBuf {
        let site = |name: &str, kubeconfig: PathBuf, ns: &str| {
            format!(
                "  - name: {name}\n    kubeconfig: {}\n    mattermost: {{namespace: {ns}, name: mm}}\n    switch:\n      externalDns: {{kind: Service, name: mm}}\n",
                kubeconfig.display()
            )
        };
        let text = format!(
            "version: {NEW}\nsharedDatabase: true\ndrainWait: 2s\nstableTimeout: 3m\nlockTtl: 2m\ngates: {gates}\nsites:\n{}{}{extra_sites}",
            site("a", testenv::kubeconfig_path(), self.a.ns(0)),
            site("b", testenv::second_state_dir().join("kubeconfig"), self.b.ns(0)),
        );
        let path = self.dir.join("plan.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn fleets(&self) -> [&Fleet; 2] {
        [&self.a, &self.b]
    }

    async fn cleanup(self) {
        std::fs::remove_dir_all(&self.dir).ok();
        self.a.cleanup().await;
        self.b.cleanup().await;
    }
}

async fn wait_stable_at(f: &Fleet, version: &str) {
    testenv::wait_until(&format!("mm stable at {version}"), TIMEOUT, || async {
        let mm = f.get(f.ns(0), "mm").await;
        stable_at(&mm, version).then_some(())
    })
    .await
    .unwrap();
}

fn stable_at(mm: &Mattermost, version: &str) -> bool {
    let s = mm.status.clone().unwrap_or_default();
    s.state.as_deref() == Some("stable")
        && s.version.as_deref() == Some(version)
        && s.observed_generation == mm.metadata.generation
}

async fn set_weight(f: &Fleet, w: &str) {
    Api::<Service>::namespaced(f.client.clone(), f.ns(0))
        .patch(
            "mm",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {WEIGHT: w}}})),
        )
        .await
        .unwrap();
}

async fn weight(f: &Fleet) -> Option<String> {
    Api::<Service>::namespaced(f.client.clone(), f.ns(0))
        .get("mm")
        .await
        .unwrap()
        .annotations()
        .get(WEIGHT)
        .cloned()
}

fn sites_cli(plan: &std::path::Path, command: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-mattermost"));
    c.args(["sites", command, "-f"])
        .arg(plan)
        .env("USER", "tester")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

async fn run_cli(plan: &std::path::Path, command: &str) -> (Option<i32>, String, String) {
    let out = sites_cli(plan, command).output().await.unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    println!("--- sites {command}: exit {:?}\n{o}{e}", out.status.code());
    (out.status.code(), o, e)
}

/// Records a value of one named object at every change, with the time it was seen.
struct Recorder<T> {
    samples: Arc<Mutex<Vec<(Instant, T)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl<T: Clone + PartialEq + Send + 'static> Recorder<T> {
    async fn start<K>(api: Api<K>, name: &str, value: impl Fn(&K) -> T + Send + 'static) -> Self
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
        K::DynamicType: Default,
    {
        let samples: Arc<Mutex<Vec<(Instant, T)>>> = Arc::default();
        let rec = samples.clone();
        let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let task = tokio::spawn(async move {
            let stream = watcher::watcher(api, cfg);
            futures::pin_mut!(stream);
            while let Some(e) = stream.next().await {
                let obj = match e {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => o,
                    _ => continue,
                };
                let v = value(&obj);
                let mut s = rec.lock().unwrap();
                if s.last().is_none_or(|(_, last)| *last != v) {
                    s.push((Instant::now(), v));
                }
            }
        });
        let r = Self { samples, task };
        testenv::wait_until("recorder's first sample", TIMEOUT, || async {
            (!r.samples().is_empty()).then_some(())
        })
        .await
        .unwrap();
        r
    }

    fn samples(&self) -> Vec<(Instant, T)> {
        self.samples.lock().unwrap().clone()
    }

    /// When `f` first held.
    fn first(&self, f: impl Fn(&T) -> bool) -> Option<Instant> {
        self.samples().into_iter().find(|(_, v)| f(v)).map(|(t, _)| t)
    }
}

impl<T> Drop for Recorder<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn weight_recorder(f: &Fleet) -> Recorder<f64> {
    let api: Api<Service> = Api::namespaced(f.client.clone(), f.ns(0));
    Recorder::start(api, "mm", |s: &Service| {
        s.annotations()
            .get(WEIGHT)
            .and_then(|w| w.parse().ok())
            .unwrap_or(-1.0)
    })
    .await
}

/// (spec.version, status stable at spec.version).
async fn mm_recorder(f: &Fleet) -> Recorder<(String, bool)> {
    let api: Api<Mattermost> = Api::namespaced(f.client.clone(), f.ns(0));
    Recorder::start(api, "mm", |m: &Mattermost| {
        (m.spec.version().to_owned(), stable_at(m, m.spec.version()))
    })
    .await
}

/// At every moment of the two weight records, some site had a weight above 0.
fn always_one_serving(a: &Recorder<f64>, b: &Recorder<f64>) {
    let mut events: Vec<(Instant, usize, f64)> = a
        .samples()
        .into_iter()
        .map(|(t, w)| (t, 0, w))
        .chain(b.samples().into_iter().map(|(t, w)| (t, 1, w)))
        .collect();
    events.sort_by_key(|e| e.0);
    let mut current = [f64::NAN, f64::NAN];
    for (_, site, w) in &events {
        current[*site] = *w;
        if !current.iter().any(|w| w.is_nan()) {
            assert!(
                current.iter().any(|w| *w > 0.0),
                "both sites drained at once: {current:?}; events {events:?}"
            );
        }
    }
}

/// The lowest ready count in force between `from` and `to`.
fn min_ready_between(samples: &[EndpointSample], from: Instant, to: Instant) -> usize {
    let before = samples.iter().rev().find(|s| s.at <= from).map(|s| s.ready);
    let during = samples
        .iter()
        .filter(|s| s.at > from && s.at <= to)
        .map(|s| s.ready);
    before.into_iter().chain(during).min().unwrap_or(0)
}

/// Every update Job image seen in the fleet's namespace from now on (the operator deletes a Job
/// once it succeeded, so a LIST at the end would find none).
struct JobImages {
    seen: Arc<Mutex<std::collections::BTreeSet<(String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl JobImages {
    fn start(f: &Fleet) -> Self {
        let api: Api<Job> = Api::namespaced(f.client.clone(), f.ns(0));
        let cfg = watcher::Config::default().labels("app=mattermost-update-check");
        let seen: Arc<Mutex<std::collections::BTreeSet<(String, String)>>> = Arc::default();
        let rec = seen.clone();
        let task = tokio::spawn(async move {
            let stream = watcher::watcher(api, cfg);
            futures::pin_mut!(stream);
            while let Some(e) = stream.next().await {
                if let Ok(watcher::Event::Apply(j) | watcher::Event::InitApply(j)) = e {
                    let image = j
                        .spec
                        .as_ref()
                        .and_then(|s| s.template.spec.as_ref())
                        .and_then(|p| p.containers.first())
                        .and_then(|c| c.image.clone())
                        .unwrap_or_default();
                    rec.lock().unwrap().insert((j.name_any(), image));
                }
            }
        });
        Self { seen, task }
    }

    /// Update Jobs seen for `version`.
    fn for_version(&self, version: &str) -> usize {
        let tag = format!(":{version}");
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, i)| i.ends_with(&tag))
            .count()
    }
}

impl Drop for JobImages {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A Prometheus stand-in on 127.0.0.1: answers every instant query with `value`, and records when.
struct FakePrometheus {
    url: String,
    queries: Arc<Mutex<Vec<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakePrometheus {
    async fn start(value: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let queries: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let (value, q) = (value.to_owned(), queries.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                assert!(head.starts_with("GET /api/v1/query?query="), "{head}");
                q.lock().unwrap().push(Instant::now());
                let body = json!({"status": "success", "data": {"resultType": "vector",
                    "result": [{"metric": {"site": "b"}, "value": [1.0, value.clone()]}]}})
                .to_string();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                sock.write_all(resp.as_bytes()).await.ok();
            }
        });
        Self { url, queries, task }
    }

    fn gate(&self) -> String {
        format!(
            "[{{name: replication-lag, prometheus: {{url: \"{}\", query: \"max(mysql_slave_lag_seconds)\", below: 5}}}}]",
            self.url
        )
    }
}

impl Drop for FakePrometheus {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The whole upgrade: refused plan first (nothing changes), then both sites one at a time, the
/// lock refusing a second run meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sites_upgrade_one_at_a_time_with_traffic_drained() {
    let sites = Sites::new("mm-sites-up").await;
    let prom = FakePrometheus::start("0.4").await;

    // A third site that writes: while a is upgraded, b and c would both take writes. Refused
    // before anything changes.
    let before = snapshot(&sites).await;
    let third = format!(
        "  - name: c\n    kubeconfig: {}\n    mattermost: {{namespace: {}, name: mm-c}}\n    switch:\n      command: {{drain: 'true', restore: 'true'}}\n",
        testenv::kubeconfig_path().display(),
        sites.a.ns(0)
    );
    let refused = sites.plan(&prom.gate(), &third);
    let (code, _, err) = run_cli(&refused, "upgrade").await;
    assert_eq!(code, Some(2));
    assert!(
        err.contains("sites b and c would take writes at once while a is upgraded"),
        "{err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(snapshot(&sites).await, before, "a refused plan changes nothing");
    assert!(prom.queries.lock().unwrap().is_empty(), "not even a gate ran");

    let plan = sites.plan(&prom.gate(), "");
    // `sites plan` lists the steps and changes nothing.
    let (code, out, _) = run_cli(&plan, "plan").await;
    assert_eq!(code, Some(0));
    for want in [
        "drain",
        "update Job runs the migration",
        "update Job skipped",
        "b is the only writer",
    ] {
        assert!(out.contains(want), "{want} missing in\n{out}");
    }
    assert_eq!(snapshot(&sites).await, before, "sites plan changes nothing");

    let wa = weight_recorder(&sites.a).await;
    let wb = weight_recorder(&sites.b).await;
    let ma = mm_recorder(&sites.a).await;
    let mb = mm_recorder(&sites.b).await;
    let ea = EndpointWatcher::start(&sites.a.client, sites.a.ns(0), "mm")
        .await
        .unwrap();
    let eb = EndpointWatcher::start(&sites.b.client, sites.b.ns(0), "mm")
        .await
        .unwrap();
    let (ja, jb) = (JobImages::start(&sites.a), JobImages::start(&sites.b));
    assert_eq!((ea.current(), eb.current()), (3, 3));

    let started = Instant::now();
    let run = sites_cli(&plan, "upgrade").spawn().unwrap();
    // While it runs, a second run is refused by the lock.
    testenv::wait_until("a drained", TIMEOUT, || async {
        (weight(&sites.a).await.as_deref() == Some("0")).then_some(())
    })
    .await
    .unwrap();
    let (code, _, err) = run_cli(&plan, "upgrade").await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("locked by tester (pid"), "{err}");
    let out = run.wait_with_output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!(
        "--- sites upgrade\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
    println!("two-site upgrade took {:?}", started.elapsed());

    // a: drained before its pods changed, back only after stable and the gate passed.
    let drained_a = wa.first(|w| *w == 0.0).unwrap();
    let patched_a = ma.first(|(v, _)| v == NEW).unwrap();
    let stable_a = ma.first(|(v, s)| v == NEW && *s).unwrap();
    let restored_a = wa
        .samples()
        .into_iter()
        .find(|(t, w)| *t > drained_a && *w == 100.0)
        .unwrap()
        .0;
    let first_pod_change_a = ea.samples().iter().skip(1).map(|s| s.at).next().unwrap();
    assert!(drained_a < patched_a && drained_a < first_pod_change_a);
    assert!(stable_a < restored_a);
    let gate_between = prom
        .queries
        .lock()
        .unwrap()
        .iter()
        .any(|q| *q > stable_a && *q < restored_a);
    assert!(gate_between, "the gate ran between stable and restore");
    // b likewise, and only after a was back.
    let drained_b = wb.first(|w| *w == 0.0).unwrap();
    let patched_b = mb.first(|(v, _)| v == NEW).unwrap();
    let restored_b = wb
        .samples()
        .into_iter()
        .find(|(t, w)| *t > drained_b && *w == 100.0)
        .unwrap()
        .0;
    assert!(restored_a < drained_b && drained_b < patched_b);
    assert!(mb.first(|(v, s)| v == NEW && *s).unwrap() < restored_b);
    // The serving site kept all its endpoints while the other upgraded.
    let min_b = min_ready_between(&eb.samples(), drained_a, restored_a);
    let min_a = min_ready_between(&ea.samples(), drained_b, restored_b);
    assert!(
        min_b >= 3,
        "b dropped to {min_b} while a upgraded: {:?}",
        eb.history()
    );
    assert!(
        min_a >= 3,
        "a dropped to {min_a} while b upgraded: {:?}",
        ea.history()
    );
    always_one_serving(&wa, &wb);

    // Both on the new version, serving, with the progress recorded and the lock gone; the update
    // Job ran on a only, and b's temporary `updateJob.disabled` is undone.
    for f in sites.fleets() {
        let mm = f.get(f.ns(0), "mm").await;
        assert!(stable_at(&mm, NEW), "{:?}", mm.status);
        assert!(mm.spec.update_job.as_ref().and_then(|u| u.disabled).is_none());
        let progress: serde_json::Value = serde_json::from_str(&mm.annotations()[PROGRESS]).unwrap();
        assert_eq!(
            (progress["phase"].as_str(), progress["version"].as_str()),
            (Some("done"), Some(NEW))
        );
        assert!(!mm.annotations().contains_key(LOCK));
        assert_eq!(weight(f).await.as_deref(), Some("100"));
    }
    assert_eq!(ja.for_version(NEW), 1, "the update Job ran on a");
    assert_eq!(jb.for_version(NEW), 0, "and not on b");
    assert!(text.contains("update Job skipped: shared database"), "{text}");

    // Run again: nothing to do.
    let (code, out, _) = run_cli(&plan, "upgrade").await;
    assert_eq!(code, Some(0));
    assert!(out.contains("nothing to do"), "{out}");
    sites.cleanup().await;
}

/// Resource versions of both Mattermosts and Services: what a refused plan must not change.
async fn snapshot(sites: &Sites) -> Vec<String> {
    let mut out = Vec::new();
    for f in sites.fleets() {
        out.push(f.get(f.ns(0), "mm").await.resource_version().unwrap());
        let svc = Api::<Service>::namespaced(f.client.clone(), f.ns(0))
            .get("mm")
            .await
            .unwrap();
        out.push(svc.resource_version().unwrap());
    }
    out
}

/// A gate that fails before traffic returns to a: b untouched, a drained, exit 1 with the gate's
/// name and what to do; `sites rollback` brings a back, traffic restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_gate_leaves_the_site_drained_and_rollback_brings_it_back() {
    let sites = Sites::new("mm-sites-gate").await;
    let broken = sites.dir.join("replication-broken");
    std::fs::write(&broken, "").unwrap();
    let gate = format!(
        "[{{name: replication-check, command: 'if [ \"$STEP\" != gate-before ] && [ -e {} ]; then echo \"lag 12s behind site $SITE\" >&2; exit 1; fi'}}]",
        broken.display()
    );
    let plan = sites.plan(&gate, "");
    let b_before = sites.b.get(sites.b.ns(0), "mm").await;
    let b_svc = Api::<Service>::namespaced(sites.b.client.clone(), sites.b.ns(0))
        .get("mm")
        .await
        .unwrap()
        .resource_version();

    let (code, out, _) = run_cli(&plan, "upgrade").await;
    assert_eq!(code, Some(1));
    for want in [
        "gate replication-check failed before traffic returns to site a",
        "lag 12s behind site a",
        "site a is stable at 9.11.1 and stays drained",
        "kubectl mattermost sites upgrade -f",
        "kubectl mattermost sites rollback -f",
    ] {
        assert!(out.contains(want), "{want} missing in\n{out}");
    }
    assert_eq!(weight(&sites.a).await.as_deref(), Some("0"), "a stays drained");
    assert!(stable_at(&sites.a.get(sites.a.ns(0), "mm").await, NEW));
    let b = sites.b.get(sites.b.ns(0), "mm").await;
    assert_eq!(b.metadata.generation, b_before.metadata.generation, "b untouched");
    assert!(stable_at(&b, OLD));
    assert!(!b.annotations().contains_key(PROGRESS));
    assert!(
        !b.annotations().contains_key(LOCK),
        "the lock is released on a stop"
    );
    let svc = Api::<Service>::namespaced(sites.b.client.clone(), sites.b.ns(0))
        .get("mm")
        .await
        .unwrap();
    assert_eq!(svc.resource_version(), b_svc, "b's switch untouched");

    // Replication fixed; roll back: a goes back to 9.11.0 while drained, then its traffic returns.
    std::fs::remove_file(&broken).unwrap();
    let wa = weight_recorder(&sites.a).await;
    let ma = mm_recorder(&sites.a).await;
    let (code, out, _) = run_cli(&plan, "rollback").await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("site a: resuming the rollback to 9.11.0"), "{out}");
    assert!(out.contains("site b: skipped"), "{out}");
    let a = sites.a.get(sites.a.ns(0), "mm").await;
    assert!(stable_at(&a, OLD), "{:?}", a.status);
    assert_eq!(weight(&sites.a).await.as_deref(), Some("100"));
    let stable_old = ma.first(|(v, s)| v == OLD && *s).unwrap();
    let restored = wa.first(|w| *w == 100.0).unwrap();
    assert!(stable_old < restored, "traffic back only once stable at {OLD}");
    assert_eq!(
        sites.b.get(sites.b.ns(0), "mm").await.metadata.generation,
        b_before.metadata.generation
    );
    sites.cleanup().await;
}

/// The run killed during a's upgrade and started again: it resumes a, then b, and at no moment
/// are both sites drained.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_run_resumes_and_never_drains_both_sites() {
    let sites = Sites::new("mm-sites-kill").await;
    let prom = FakePrometheus::start("1").await;
    let plan = sites.plan(&prom.gate(), "");
    let wa = weight_recorder(&sites.a).await;
    let wb = weight_recorder(&sites.b).await;
    let jb = JobImages::start(&sites.b);

    let mut run = sites_cli(&plan, "upgrade").spawn().unwrap();
    testenv::wait_until("a upgrading", TIMEOUT, || async {
        let mm = sites.a.get(sites.a.ns(0), "mm").await;
        mm.annotations()
            .get(PROGRESS)
            .is_some_and(|p| p.contains("\"phase\":\"upgrading\""))
            .then_some(())
    })
    .await
    .unwrap();
    run.kill().await.unwrap();
    let a = sites.a.get(sites.a.ns(0), "mm").await;
    assert!(a.annotations().contains_key(LOCK), "the killed run left its lock");
    assert!(!stable_at(&a, NEW), "killed before a finished");
    assert_eq!(weight(&sites.a).await.as_deref(), Some("0"));

    let (code, out, _) = run_cli(&plan, "upgrade").await;
    assert_eq!(code, Some(0));
    assert!(
        out.contains("site a: resuming the upgrade to 9.11.1 at phase upgrading"),
        "{out}"
    );
    for f in sites.fleets() {
        assert!(stable_at(&f.get(f.ns(0), "mm").await, NEW));
        assert_eq!(weight(f).await.as_deref(), Some("100"));
    }
    assert!(wb.first(|w| *w == 0.0).is_some(), "b was drained in its turn");
    always_one_serving(&wa, &wb);
    assert_eq!(jb.for_version(NEW), 0, "b skipped the update Job");
    sites.cleanup().await;
}
