//! A tower layer on the kube client that counts every API request in client-go's
//! `rest_client_requests_total{code,method,host}`, so API-server dashboards and alerts written for
//! Go controllers work unchanged.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Request, Response};
use tower::{Layer, Service};

use crate::metrics::{Metrics, RequestLabels};

/// Counts requests into `metrics`; `host` is the API server's `host:port`.
#[derive(Clone)]
pub struct CountRequestsLayer {
    metrics: Arc<Metrics>,
    host: String,
}

impl CountRequestsLayer {
    /// A layer recording into `metrics` for requests to `host`.
    pub fn new(metrics: Arc<Metrics>, host: String) -> Self {
        Self { metrics, host }
    }
}

impl<S> Layer<S> for CountRequestsLayer {
    type Service = CountRequests<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountRequests {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`CountRequestsLayer`].
#[derive(Clone)]
pub struct CountRequests<S> {
    inner: S,
    layer: CountRequestsLayer,
}

impl<S, B, R> Service<Request<B>> for CountRequests<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Response: Send,
    S::Error: Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let method = req.method().as_str().to_owned();
        let layer = self.layer.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            // client-go's value when no response came back.
            let code = match &res {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "<error>".to_owned(),
            };
            layer.metrics.rest_request(&RequestLabels {
                code,
                method,
                host: layer.host.clone(),
            });
            res
        })
    }
}
