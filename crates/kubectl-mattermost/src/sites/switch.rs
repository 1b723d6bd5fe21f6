//! Traffic switches: take user traffic away from a site and give back exactly what it had.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client, ResourceExt};
use mattermost_api::v1beta1::Mattermost;
use serde_json::{Value, json};

use super::hook::{self, HookEnv};
use super::plan::{ExternalDns, HttpRoute, Site, Switch, WeightedKind, positive_weight};
use super::progress::FIELD_MANAGER;
use crate::error::Error;

/// What the switch points at, for the plan and messages.
pub fn describe(site: &Site) -> String {
    let ns = |n: &Option<String>| n.clone().unwrap_or_else(|| site.mattermost.namespace.clone());
    match &site.switch {
        Switch::ExternalDns(e) => format!(
            "{} annotation on {:?} {}/{}",
            e.annotation(),
            e.kind,
            ns(&e.namespace),
            e.name
        ),
        Switch::HttpRoute(r) => format!(
            "backend {} of HTTPRoute {}/{}",
            r.backend,
            ns(&r.namespace),
            r.name
        ),
        Switch::Command(c) => format!("commands `{}` / `{}`", c.drain, c.restore),
    }
}

fn weighted_api(client: &Client, site: &Site, e: &ExternalDns) -> Api<DynamicObject> {
    let ar = match e.kind {
        WeightedKind::Service => ApiResource::erase::<Service>(&()),
        WeightedKind::Ingress => ApiResource::erase::<Ingress>(&()),
    };
    let ns = e.namespace.as_deref().unwrap_or(&site.mattermost.namespace);
    Api::namespaced_with(client.clone(), ns, &ar)
}

fn route_api(client: &Client, site: &Site, r: &HttpRoute) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "httproutes");
    let ns = r.namespace.as_deref().unwrap_or(&site.mattermost.namespace);
    Api::namespaced_with(client.clone(), ns, &ar)
}

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

async fn get(api: &Api<DynamicObject>, name: &str, what: &str) -> Result<DynamicObject, Error> {
    api.get_opt(name)
        .await?
        .ok_or_else(|| Error::NotFound(format!("{what} {name} (the site's traffic switch)")))
}

/// Problems that make the switch unusable for `mm`, checked before anything changes.
pub async fn preflight(client: &Client, site: &Site, mm: &Mattermost) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    match &site.switch {
        Switch::ExternalDns(e) => {
            let obj = get(&weighted_api(client, site, e), &e.name, &format!("{:?}", e.kind)).await?;
            match obj.annotations().get(e.annotation()) {
                Some(w) if positive_weight(w) => {}
                Some(_) if e.weight.is_some() => {}
                Some(w) => out.push(format!(
                    "{:?} {} has {}={w:?}: it serves no traffic now, so there is no weight to give back (set switch.externalDns.weight)",
                    e.kind,
                    e.name,
                    e.annotation()
                )),
                None => out.push(format!(
                    "{:?} {} has no {} annotation",
                    e.kind,
                    e.name,
                    e.annotation()
                )),
            }
            // The operator applies the annotations of the Mattermost spec to its own Service and
            // Ingress, and would put a drained weight back.
            let managed = match e.kind {
                WeightedKind::Service => mm
                    .spec
                    .service_annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(e.annotation())),
                WeightedKind::Ingress => mm.spec.ingress_annotations().contains_key(e.annotation()),
            };
            if managed && e.name == mm.name_any() {
                out.push(format!(
                    "{} is set in the Mattermost spec, so the operator would undo a drain; move it out of the spec (annotate the {:?} directly)",
                    e.annotation(),
                    e.kind
                ));
            }
        }
        Switch::HttpRoute(r) => {
            let route = get(&route_api(client, site, r), &r.name, "HTTPRoute").await?;
            if route_weights(&route.data["spec"], &r.backend).is_empty() {
                out.push(format!("HTTPRoute {} has no backendRef {}", r.name, r.backend));
            }
        }
        Switch::Command(_) => {}
    }
    Ok(out)
}

/// Whether the site receives user traffic now; `None` when a command switch cannot tell.
pub async fn serving(client: &Client, site: &Site) -> Result<Option<bool>, Error> {
    Ok(match &site.switch {
        Switch::ExternalDns(e) => {
            let obj = get(&weighted_api(client, site, e), &e.name, &format!("{:?}", e.kind)).await?;
            Some(
                obj.annotations()
                    .get(e.annotation())
                    .is_some_and(|w| positive_weight(w)),
            )
        }
        Switch::HttpRoute(r) => {
            let route = get(&route_api(client, site, r), &r.name, "HTTPRoute").await?;
            Some(
                route_weights(&route.data["spec"], &r.backend)
                    .iter()
                    .any(|w| *w > 0),
            )
        }
        Switch::Command(_) => None,
    })
}

/// The state to give back after the site was drained: read before draining.
pub async fn saved_state(client: &Client, site: &Site) -> Result<Option<Value>, Error> {
    Ok(match &site.switch {
        Switch::ExternalDns(e) => {
            let obj = get(&weighted_api(client, site, e), &e.name, &format!("{:?}", e.kind)).await?;
            let found = obj.annotations().get(e.annotation()).cloned();
            Some(Value::String(
                e.weight
                    .clone()
                    .or(found.filter(|w| positive_weight(w)))
                    .ok_or_else(|| {
                        Error::Usage(format!(
                            "site {}: no positive weight to give back later; set switch.externalDns.weight",
                            site.name
                        ))
                    })?,
            ))
        }
        Switch::HttpRoute(r) => {
            let route = get(&route_api(client, site, r), &r.name, "HTTPRoute").await?;
            Some(json!(route_weights(&route.data["spec"], &r.backend)))
        }
        Switch::Command(_) => None,
    })
}

/// Takes user traffic away from the site.
pub async fn drain(client: &Client, site: &Site, env: &HookEnv) -> Result<(), Error> {
    set(client, site, env, None).await
}

/// Gives back the traffic the site had (`saved`, from [`saved_state`]).
pub async fn restore(
    client: &Client,
    site: &Site,
    env: &HookEnv,
    saved: Option<&Value>,
) -> Result<(), Error> {
    set(client, site, env, Some(saved.unwrap_or(&Value::Null))).await
}

/// `to`: `None` drains, `Some(saved)` restores.
async fn set(client: &Client, site: &Site, env: &HookEnv, to: Option<&Value>) -> Result<(), Error> {
    match &site.switch {
        Switch::ExternalDns(e) => {
            let weight = match to {
                None => "0".to_owned(),
                Some(v) => v
                    .as_str()
                    .map(str::to_owned)
                    .or_else(|| e.weight.clone())
                    .ok_or_else(|| {
                        Error::Usage(format!("site {}: no weight recorded to give back", site.name))
                    })?,
            };
            let patch = json!({"metadata": {"annotations": {e.annotation(): weight}}});
            weighted_api(client, site, e)
                .patch(&e.name, &params(), &Patch::Merge(&patch))
                .await?;
        }
        Switch::HttpRoute(r) => {
            let api = route_api(client, site, r);
            let route = get(&api, &r.name, "HTTPRoute").await?;
            let current = route_weights(&route.data["spec"], &r.backend);
            let weights: Vec<i64> = match to {
                None => vec![0; current.len()],
                Some(v) => serde_json::from_value(v.clone()).unwrap_or_else(|_| vec![1; current.len()]),
            };
            let rules = with_weights(&route.data["spec"], &r.backend, &weights);
            // The resourceVersion read: a concurrent edit of the route fails instead of being lost.
            let patch = json!({
                "metadata": {"resourceVersion": route.resource_version()},
                "spec": {"rules": rules},
            });
            api.patch(&r.name, &params(), &Patch::Merge(&patch)).await?;
        }
        Switch::Command(c) => {
            let command = if to.is_none() { &c.drain } else { &c.restore };
            hook::run(command, env).await?;
        }
    }
    Ok(())
}

fn backend_refs<'a>(spec: &'a Value, backend: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    spec["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|rule| rule["backendRefs"].as_array().into_iter().flatten())
        .filter(move |b| b["name"] == backend)
}

/// Weights of the backendRefs named `backend`, in rule order (Gateway API default weight: 1).
pub fn route_weights(spec: &Value, backend: &str) -> Vec<i64> {
    backend_refs(spec, backend)
        .map(|b| b["weight"].as_i64().unwrap_or(1))
        .collect()
}

/// `spec.rules` with the backendRefs named `backend` set to `weights`, in the same order.
pub fn with_weights(spec: &Value, backend: &str, weights: &[i64]) -> Value {
    let mut rules = spec["rules"].clone();
    let mut next = weights.iter();
    for rule in rules.as_array_mut().into_iter().flatten() {
        for b in rule["backendRefs"].as_array_mut().into_iter().flatten() {
            if b["name"] == backend
                && let Some(w) = next.next()
            {
                b["weight"] = json!(w);
            }
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_weights_drain_one_backend_and_come_back_exactly() {
        let spec = json!({"rules": [
            {"backendRefs": [{"name": "mm-a", "port": 8065, "weight": 50}, {"name": "mm-b", "port": 8065, "weight": 50}]},
            {"matches": [{"path": {"value": "/api"}}], "backendRefs": [{"name": "mm-a", "port": 8065}]},
        ]});
        let before = route_weights(&spec, "mm-a");
        assert_eq!(before, [50, 1]);
        let drained = json!({"rules": with_weights(&spec, "mm-a", &[0, 0])});
        assert_eq!(route_weights(&drained, "mm-a"), [0, 0]);
        assert_eq!(
            route_weights(&drained, "mm-b"),
            [50],
            "the other site is untouched"
        );
        let back = json!({"rules": with_weights(&drained, "mm-a", &before)});
        assert_eq!(route_weights(&back, "mm-a"), [50, 1]);
        assert_eq!(back["rules"][1]["matches"], spec["rules"][1]["matches"]);
        assert!(route_weights(&spec, "nope").is_empty());
    }
}
