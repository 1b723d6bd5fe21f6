//! The Mattermost operator: reconciles `Mattermost` resources into the children the Go operator
//! would create, with server-side apply, conditions and events.
pub mod apply;
pub mod capacity;
pub mod cli;
pub mod client;
pub mod controller;
pub mod convert;
pub mod crd;
pub mod desired;
pub mod fleet;
pub mod http;
pub mod leader;
pub mod legacy;
pub mod metrics;
pub mod monitoring;
pub mod observe;
pub mod preflight;
pub mod reconcile;
pub mod redact;
pub mod rest_metrics;
pub mod rollout_cap;
pub mod run;
pub mod status;
pub mod telemetry;
pub mod trim;
pub mod verify;
pub mod watch;
