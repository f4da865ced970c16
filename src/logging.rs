//! Log output: text or JSON lines on standard error, filtered by `logging.level` (an
//! `EnvFilter`), which `IPFS_REGISTRY_LOG` overrides without touching the configuration.
//!
//! Standard output belongs to the subcommands' results (`token create` prints the token,
//! `config` the TOML), so that scripts can capture them alone.

use std::ffi::OsString;
use std::fmt;
use std::io::IsTerminal;

use tracing::field::{Field, FieldSet, Value, Visit};
use tracing::span;
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_core::callsite::{Callsite, Identifier};
use tracing_core::metadata::Kind;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, LoggingConfig};

pub const LOG_ENV: &str = "IPFS_REGISTRY_LOG";

/// The filter in force: `IPFS_REGISTRY_LOG` when set and valid, else `logging.level`.
pub fn filter(config: &LoggingConfig) -> EnvFilter {
    EnvFilter::try_from_env(LOG_ENV)
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Colour only for a person watching a terminal: escape codes in a log file or a log
/// collector are noise. `NO_COLOR` (any non-empty value, see no-color.org) turns it off.
pub fn use_ansi(stderr_is_terminal: bool, no_color: Option<OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber. JSON lines carry the event's fields at the top level and
/// the request span's fields (`request_id`) under `span`.
pub fn init(config: &LoggingConfig) {
    let ansi = use_ansi(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR"),
    );
    let stack = tracing_subscriber::registry().with(filter(config));
    let installed = match config.format {
        LogFormat::Text => stack
            .with(ClientFaults(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(ansi),
            ))
            .try_init(),
        LogFormat::Json => stack
            .with(ClientFaults(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr)
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            ))
            .try_init(),
    };
    // Already installed (e.g. by a test harness): keep that one.
    drop(installed);
}

/// Where actix-http reports a connection it gave up on. It logs at ERROR what is nearly
/// always the client's doing: a request that is not HTTP/1 (docker and podman first try TLS
/// on a plain-HTTP port, on every operation), a malformed one, a connection reset.
const HTTP1_DISPATCHER: &str = "actix_http::h1::dispatcher";

/// Its messages for such connections; anything else it says at ERROR stays an error.
const CLIENT_FAULT_MESSAGES: [&str; 3] = [
    "stream error: ",
    "Internal server error: unexpected ",
    "write zero",
];

/// What those events become: debug events of ours, `event = "client_connection_error"`.
static CLIENT_FAULT: Metadata<'static> = Metadata::new(
    "client connection error",
    "ipfs_registry::http",
    Level::DEBUG,
    Some(file!()),
    Some(line!()),
    Some(module_path!()),
    FieldSet::new(&["event", "error"], Identifier(&CLIENT_FAULT_SITE)),
    Kind::EVENT,
);

struct ClientFaultSite;

static CLIENT_FAULT_SITE: ClientFaultSite = ClientFaultSite;

impl Callsite for ClientFaultSite {
    fn set_interest(&self, _: Interest) {}

    fn metadata(&self) -> &Metadata<'_> {
        &CLIENT_FAULT
    }
}

/// The message of an actix-http event that reports a client's fault, if `event` is one.
fn client_fault(event: &Event<'_>) -> Option<String> {
    let metadata = event.metadata();
    if *metadata.level() != Level::ERROR || metadata.target() != HTTP1_DISPATCHER {
        return None;
    }
    struct Message(Option<String>);
    impl Visit for Message {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            if field.name() == "message" {
                self.0 = Some(format!("{value:?}"));
            }
        }
    }
    let mut message = Message(None);
    event.record(&mut message);
    message
        .0
        .filter(|m| CLIENT_FAULT_MESSAGES.iter().any(|p| m.starts_with(p)))
}

/// Wraps the output layer: passes everything through, except that the client faults
/// actix-http logs at ERROR come out as debug events (when the filter lets debug events of
/// `ipfs_registry::http` through). A new event cannot be emitted from inside the subscriber
/// (tracing drops nested dispatches), hence the rewrite in place.
struct ClientFaults<L>(L);

impl<S, L> Layer<S> for ClientFaults<L>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.0.on_register_dispatch(subscriber);
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.0.on_layer(subscriber);
    }

    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        self.0.register_callsite(metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.0.enabled(metadata, ctx)
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        self.0.on_new_span(attrs, id, ctx);
    }

    fn on_record(&self, span: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        self.0.on_record(span, values, ctx);
    }

    fn on_follows_from(&self, span: &span::Id, follows: &span::Id, ctx: Context<'_, S>) {
        self.0.on_follows_from(span, follows, ctx);
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        self.0.event_enabled(event, ctx)
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(message) = client_fault(event) else {
            self.0.on_event(event, ctx);
            return;
        };
        if !ctx.enabled(&CLIENT_FAULT) {
            return;
        }
        let fields = CLIENT_FAULT.fields();
        let (Some(event_field), Some(error_field)) = (fields.field("event"), fields.field("error"))
        else {
            return;
        };
        let values: [(&Field, Option<&dyn Value>); 2] = [
            (&event_field, Some(&"client_connection_error")),
            (&error_field, Some(&message.as_str())),
        ];
        let values = fields.value_set(&values);
        self.0.on_event(&Event::new(&CLIENT_FAULT, &values), ctx);
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.0.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.0.on_exit(id, ctx);
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        self.0.on_close(id, ctx);
    }

    fn on_id_change(&self, old: &span::Id, new: &span::Id, ctx: Context<'_, S>) {
        self.0.on_id_change(old, new, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_ansi(true, None));
        assert!(use_ansi(true, Some(OsString::new())));
        assert!(!use_ansi(true, Some(OsString::from("1"))));
        assert!(!use_ansi(false, None));
    }
}
