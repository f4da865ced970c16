//! Log output: text or JSON lines on stdout, filtered by `logging.level` (an `EnvFilter`),
//! which `IPFS_REGISTRY_LOG` overrides without touching the configuration.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LoggingConfig};

pub const LOG_ENV: &str = "IPFS_REGISTRY_LOG";

/// The filter in force: `IPFS_REGISTRY_LOG` when set and valid, else `logging.level`.
pub fn filter(config: &LoggingConfig) -> EnvFilter {
    EnvFilter::try_from_env(LOG_ENV)
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the global subscriber. JSON lines carry the event's fields at the top level and
/// the request span's fields (`request_id`) under `span`.
pub fn init(config: &LoggingConfig) {
    let builder = tracing_subscriber::fmt().with_env_filter(filter(config));
    let installed = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    // Already installed (e.g. by a test harness): keep that one.
    drop(installed);
}
