//! Replication health gates: a command, or a Prometheus instant query with a threshold.

use std::cmp::Ordering;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::hook::{self, HookEnv};
use super::plan::{Gate, PrometheusGate};

/// How long one Prometheus query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Evaluates `gate`: `Ok(detail)` when it passes, `Err(why)` when it fails or cannot be evaluated
/// (a gate that cannot tell is a failed gate).
pub async fn evaluate(gate: &Gate, env: &HookEnv) -> Result<String, String> {
    if let Some(command) = &gate.command {
        return hook::run(command, env).await.map_err(|e| e.to_string());
    }
    if let Some(p) = &gate.prometheus {
        let body = query(p).await?;
        return check(&body, p.below, p.above);
    }
    Err("neither command nor prometheus".into())
}

/// `<url>/api/v1/query?query=<query>`.
pub fn query_url(p: &PrometheusGate) -> String {
    let q: String = form_urlencoded::byte_serialize(p.query.as_bytes()).collect();
    format!("{}/api/v1/query?query={q}", p.url.trim_end_matches('/'))
}

async fn query(p: &PrometheusGate) -> Result<String, String> {
    let url = query_url(p);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("TLS roots: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: HttpClient<_, Empty<Bytes>> = HttpClient::builder(TokioExecutor::new()).build(connector);
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let fetch = async {
        let resp = client.get(uri).await.map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?
            .to_bytes();
        let text = String::from_utf8_lossy(&body).into_owned();
        if status.is_success() {
            Ok(text)
        } else {
            Err(format!(
                "GET {url}: HTTP {status}: {}",
                crate::output::cell(&text, 200)
            ))
        }
    };
    tokio::time::timeout(QUERY_TIMEOUT, fetch)
        .await
        .map_err(|_| format!("GET {url}: no answer within {QUERY_TIMEOUT:?}"))?
}

/// Checks a Prometheus query response: every sample (vector or scalar) within the thresholds.
/// No sample is a failure: missing data says nothing about replication.
pub fn check(body: &str, below: Option<f64>, above: Option<f64>) -> Result<String, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not a Prometheus response: {e}"))?;
    if v["status"] != "success" {
        return Err(format!(
            "query failed: {}",
            v["error"].as_str().unwrap_or("status is not success")
        ));
    }
    let data = &v["data"];
    let samples: Vec<&Value> = match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| &s["value"][1])
            .collect(),
        Some("scalar") => vec![&data["result"][1]],
        other => {
            return Err(format!(
                "unsupported result type {other:?} (use an instant vector or scalar)"
            ));
        }
    };
    if samples.is_empty() {
        return Err("the query returned no samples".into());
    }
    let mut values = Vec::new();
    for s in samples {
        let x: f64 = s
            .as_str()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| format!("sample {s} is not a number"))?;
        // NaN compares as neither: never healthy.
        if let Some(b) = below
            && x.partial_cmp(&b) != Some(Ordering::Less)
        {
            return Err(format!("value {x} is not below {b}"));
        }
        if let Some(a) = above
            && x.partial_cmp(&a) != Some(Ordering::Greater)
        {
            return Err(format!("value {x} is not above {a}"));
        }
        values.push(x.to_string());
    }
    Ok(format!("value {}", values.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(values: &[&str]) -> String {
        let result: Vec<Value> = values
            .iter()
            .map(|v| serde_json::json!({"metric": {}, "value": [1.0, v]}))
            .collect();
        serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": result}})
            .to_string()
    }

    #[test]
    fn samples_are_checked_against_the_thresholds() {
        assert_eq!(
            check(&vector(&["0.5", "2"]), Some(5.0), None),
            Ok("value 0.5, 2".into())
        );
        assert_eq!(
            check(&vector(&["0.5", "12"]), Some(5.0), None),
            Err("value 12 is not below 5".into())
        );
        assert_eq!(
            check(&vector(&["1"]), None, Some(1.0)),
            Err("value 1 is not above 1".into())
        );
        assert!(
            check(&vector(&["NaN"]), Some(5.0), None).is_err(),
            "NaN is never healthy"
        );
        assert_eq!(
            check(&vector(&[]), Some(5.0), None),
            Err("the query returned no samples".into())
        );
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"3"]}}"#;
        assert_eq!(check(scalar, Some(5.0), None), Ok("value 3".into()));
        let error = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert_eq!(
            check(error, Some(5.0), None),
            Err("query failed: parse error".into())
        );
        assert!(check("<html>", Some(5.0), None).is_err());
    }

    #[test]
    fn the_query_is_url_encoded() {
        let p = PrometheusGate {
            url: "http://127.0.0.1:9090/".into(),
            query: "max(lag{site=\"a\"}) > 0".into(),
            below: Some(5.0),
            above: None,
        };
        assert_eq!(
            query_url(&p),
            "http://127.0.0.1:9090/api/v1/query?query=max%28lag%7Bsite%3D%22a%22%7D%29+%3E+0"
        );
    }
}
