//! Logging: plain or JSON lines on stderr, filtered by an EnvFilter directive.
//!
//! In JSON, event fields are flattened into the line and the current span's fields are under
//! `span` (all enclosing spans under `spans`). tracing-subscriber writes a span's own name as the
//! key `name` after its fields, so no span of ours has a field called `name`: the reconcile spans
//! carry `controller`, `object` and `namespace`, which a JSON parser keeps.

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

use crate::cli::LogFormat;

/// Installs the global subscriber.
pub fn init(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_new(level).map_err(|e| anyhow::anyhow!("invalid --log-level {level:?}: {e}"))?;
    let result = match format {
        LogFormat::Plain => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .finish()
            .try_init(),
        LogFormat::Json => json(filter, std::io::stderr).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("installing the logger: {e}"))
}

/// The JSON subscriber: one object per line, event fields at the top level, the current span's
/// fields under `span`.
fn json<W>(filter: EnvFilter, writer: W) -> impl Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .finish()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'w self) -> Self::Writer {
            self.clone()
        }
    }

    /// The fields of the reconcile spans survive a JSON parser (a field called `name` would be
    /// overwritten by the span's own name, which the JSON layer writes last).
    #[test]
    fn reconcile_span_fields_survive_json_parsing() {
        let buffer = Buffer::default();
        let subscriber = json(EnvFilter::new("info"), buffer.clone());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "reconcile_inner",
                controller = "mattermost",
                object = "mm-1",
                namespace = "team-a"
            );
            let _entered = span.enter();
            tracing::info!(step = "apply", "applied");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["message"], "applied");
        assert_eq!(line["step"], "apply");
        assert_eq!(line["span"]["object"], "mm-1", "{text}");
        assert_eq!(line["span"]["namespace"], "team-a");
        assert_eq!(line["span"]["controller"], "mattermost");
        assert_eq!(line["span"]["name"], "reconcile_inner");
        assert_eq!(line["spans"][0]["object"], "mm-1");
    }
}
