//! jitgate's own complaints during a run. The tracker logs an ERROR when the text it
//! recorded for an Execute is not what the server had bound (its cross-check), and a
//! WARN when a server reply matches nothing it expected. Either means its model of the
//! server is off even when the audit still matches the server log (the texts may agree
//! by chance, or the statement may be one the comparison excludes), so the test counts
//! them and fails on any.

use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// The target prefix of the tracker's events.
const TRACKER: &str = "jitgate_proxy::session::tracker";

/// The tracker's WARN and ERROR lines so far, shared with the layer that collects them.
#[derive(Clone, Default)]
pub struct Complaints(Arc<Mutex<Vec<String>>>);

impl Complaints {
    /// Installs the process's subscriber: jitgate's warnings and errors printed through
    /// the test writer (shown with a failure), and the tracker's collected. Panics when
    /// a subscriber is installed already: the complaints could not be counted.
    pub fn install() -> Complaints {
        let complaints = Complaints::default();
        tracing_subscriber::registry()
            .with(EnvFilter::new("jitgate_proxy=warn"))
            .with(tracing_subscriber::fmt::layer().with_test_writer())
            .with(Collector(complaints.clone()))
            .try_init()
            .expect("no other tracing subscriber in this test binary");
        complaints
    }

    pub fn len(&self) -> usize {
        self.lines().len()
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

struct Collector(Complaints);

impl<S: Subscriber> Layer<S> for Collector {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        // WARN and ERROR (tracing orders levels by verbosity, ERROR the least).
        if *meta.level() > Level::WARN || !meta.target().starts_with(TRACKER) {
            return;
        }
        let mut text = Text::default();
        event.record(&mut text);
        let line = format!(
            "{} {}: {}{}",
            meta.level(),
            meta.target(),
            text.message,
            text.fields
        );
        let Collector(Complaints(lines)) = self;
        lines.lock().unwrap().push(line);
    }
}

/// An event's message and its other fields as ` name=value`.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}
