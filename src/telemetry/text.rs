//! The text log line when it goes to a file or a pipe: byte for byte what tracing-subscriber's
//! default (`Full`) format writes without ANSI colours — except that line breaks and the other
//! control characters are escaped in every value, so that a caller's text cannot forge a line —
//!
//! ```text
//! 2026-11-21T15:46:47.389082Z  INFO call{rpc.service=… trace_id=…}: streamgate::middleware::trace: call finished grpc.code=OK latency_ms=1.1
//! ```
//!
//! written without its detours. tracing-subscriber paints every span name, brace, colon,
//! field name and `=` through `nu_ansi_term` even when colours are off (an empty style still
//! goes through a `Display` of its own, ~36 per call), and escapes each message character by
//! character through `write_char`. Every call writes an access line and opens a `call` span
//! whose fields are formatted when it opens, so that was ~13k of the ~111k instructions a
//! GetProvider call cost (issue 7). No crate formats tracing events as this one does, and the
//! line's shape is a contract with the runbook and the tests, so it is kept as is and written
//! here; a differential test holds it equal to tracing-subscriber's output (for text without
//! line breaks). On a terminal,
//! [`super::init`] keeps tracing-subscriber's own coloured format.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The fields of a span or an event: `name=value` separated by spaces, the message bare.
#[derive(Clone, Copy, Debug, Default)]
pub struct TextFields;

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = Fields {
            writer,
            empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes fields as tracing-subscriber's `DefaultVisitor` does without colours.
struct Fields<'w> {
    writer: Writer<'w>,
    empty: bool,
    result: fmt::Result,
}

impl Fields<'_> {
    /// Starts a field: a space unless it is the first, then `name=` unless it is the message.
    /// False for the fields the `log` bridge adds (their metadata is the line's own).
    fn start(&mut self, name: &str) -> bool {
        if self.result.is_err() || name.starts_with("log.") {
            return false;
        }
        if self.empty {
            self.empty = false;
        } else {
            self.result = self.writer.write_char(' ');
        }
        if name != "message" {
            let name = name.strip_prefix("r#").unwrap_or(name);
            self.result = self
                .result
                .and_then(|()| self.writer.write_str(name))
                .and_then(|()| self.writer.write_char('='));
        }
        self.result.is_ok()
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.start(field.name()) {
            return;
        }
        self.result = if field.name() == "message" {
            Escaping(&mut self.writer).write_str(value)
        } else {
            write!(self.writer, "{value:?}")
        };
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if !self.start(field.name()) {
            return;
        }
        self.result = write!(Escaping(&mut self.writer), "{value}");
        if let Some(source) = value.source() {
            self.result = self.result.and_then(|()| {
                write!(self.writer, " {}.sources={}", field.name(), Sources(source))
            });
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !self.start(field.name()) {
            return;
        }
        // Every value goes through the escaping: a `%`-recorded value is written by its
        // `Display`, which keeps a caller's line breaks as they are.
        self.result = write!(Escaping(&mut self.writer), "{value:?}");
    }
}

/// An error's chain, `[outer, inner]`, each escaped.
struct Sources<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for Sources<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        let mut next = Some(self.0);
        while let Some(error) = next {
            list.entry(&Escaped(error));
            next = error.source();
        }
        list.finish()
    }
}

/// An error's `Display`, escaped, as a list entry.
struct Escaped<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(Escaping(f), "{}", self.0)
    }
}

/// Writes through to `W`, escaping the characters a terminal would act on (ESC, BEL, BS, FF,
/// DEL, the C1 controls) as tracing-subscriber does, so a message cannot drive the terminal of
/// whoever reads the log, and — unlike tracing-subscriber — line breaks (`\n`, `\r`) and the
/// other C0 controls but tab, so that text a caller chose (a name, a principal, a request id)
/// can never start a line of its own. Text without them, nearly all of it, is written in one
/// piece.
struct Escaping<'a, W: fmt::Write + ?Sized>(&'a mut W);

impl<W: fmt::Write + ?Sized> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // C1 controls (U+0080–U+009F) are 0xC2 0x80–0x9F in UTF-8.
        if !s
            .bytes()
            .any(|b| (b < 0x20 && b != b'\t') || matches!(b, 0x7f | 0xc2))
        {
            return self.0.write_str(s);
        }
        for c in s.chars() {
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_char(c)?,
                '\x00'..='\x1f' | '\x7f' => write!(self.0, "\\x{:02x}", u32::from(c))?,
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", u32::from(c))?,
                c => self.0.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// The line: timestamp, level, the spans from the root with their fields, target, fields.
#[derive(Clone, Copy, Debug, Default)]
pub struct TextLine<T> {
    timer: T,
}

impl<T> TextLine<T> {
    /// Lines stamped by `timer`.
    pub fn new(timer: T) -> Self {
        TextLine { timer }
    }
}

/// The level as tracing-subscriber pads it.
fn level(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => " INFO",
        Level::WARN => " WARN",
        Level::ERROR => "ERROR",
    }
}

impl<S, N, T> FormatEvent<S, N> for TextLine<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Events from the `log` bridge carry their real target in fields.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        if self.timer.format_time(&mut writer).is_err() {
            writer.write_str("<unknown time>")?;
        }
        writer.write_char(' ')?;
        writer.write_str(level(meta.level()))?;
        writer.write_char(' ')?;
        if let Some(scope) = ctx.event_scope() {
            let mut seen = false;
            for span in scope.from_root() {
                seen = true;
                writer.write_str(span.metadata().name())?;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    writer.write_char('{')?;
                    writer.write_str(fields)?;
                    writer.write_char('}')?;
                }
                writer.write_char(':')?;
            }
            if seen {
                writer.write_char(' ')?;
            }
        }
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        ctx.format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// A clock that always says the same.
    struct Fixed;

    impl FormatTime for Fixed {
        fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
            w.write_str("2026-11-21T15:46:47.389082Z")
        }
    }

    #[derive(Debug)]
    struct Outer(Inner);

    #[derive(Debug)]
    struct Inner;

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("store unreachable \x1b[2J")
        }
    }

    impl fmt::Display for Inner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("connection refused")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    impl std::error::Error for Inner {}

    /// Everything the gateway logs, and the odd cases.
    fn log_everything() {
        tracing::info!("started");
        let trace_id = "caa8c55c60ebe135c682df8b4bb99f83";
        let call = tracing::error_span!(
            "call",
            rpc.service = %"streamgate.v1.ProviderService",
            rpc.method = %"GetProvider",
            trace_id = %trace_id,
        );
        call.in_scope(|| {
            tracing::info!(grpc.code = %"OK", latency_ms = 4.4272219999999995, "call finished");
            let empty = tracing::info_span!("empty");
            empty.in_scope(|| tracing::warn!(attempt = 3_u64, delay = ?std::time::Duration::from_millis(250), "retrying"));
            let op = tracing::info_span!("operation", name = "operations/0199", r#type = 7_i64, done = tracing::field::Empty);
            op.record("done", true);
            op.in_scope(|| {
                let error = Outer(Inner);
                tracing::error!(error = &error as &(dyn std::error::Error + 'static), "step failed");
                tracing::error!(error = &Inner as &(dyn std::error::Error + 'static), quoted = "a \"b\"\n", "plain");
            });
        });
        tracing::debug!(
            n = -5_i64,
            yes = false,
            "message with \x1b[31mred\x1b[0m, \u{9b}C1 and ünïcode\ttab"
        );
        tracing::trace!(message = "a str message \x07", extra = 1);
        tracing::info!(target: "custom::target", "no fields at all");
        let record = log::Record::builder()
            .args(format_args!("from the log crate"))
            .level(log::Level::Warn)
            .target("sqlx::query")
            .module_path(Some("sqlx::query"))
            .file(Some("query.rs"))
            .line(Some(7))
            .build();
        tracing_log::format_trace(&record).unwrap();
    }

    #[test]
    fn caller_text_cannot_start_a_line() {
        let ours = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .fmt_fields(TextFields)
            .event_format(TextLine::new(Fixed))
            .with_writer(ours.clone())
            .finish();
        let forged = "a\n2026-11-21T15:46:47.389082Z  INFO audit: audit principal=ops\r\x01";
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("call", principal = %forged);
            span.in_scope(|| {
                tracing::info!(target: "audit", target = %forged, request_id = forged, "audit");
                tracing::info!("message {forged}");
            });
        });
        let ours = ours.text();
        assert_eq!(ours.lines().count(), 2, "{ours}");
        assert!(
            ours.contains(
                "a\\n2026-11-21T15:46:47.389082Z  INFO audit: audit principal=ops\\r\\x01"
            ),
            "{ours}"
        );
    }

    #[test]
    fn lines_are_what_tracing_subscribers_full_format_writes_without_colours() {
        let theirs = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_ansi(false)
            .with_timer(Fixed)
            .with_writer(theirs.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log_everything);

        let ours = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_ansi(false)
            .fmt_fields(TextFields)
            .event_format(TextLine::new(Fixed))
            .with_writer(ours.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log_everything);

        let (theirs, ours) = (theirs.text(), ours.text());
        assert_eq!(ours.lines().count(), 9, "{ours}");
        for (theirs, ours) in theirs.lines().zip(ours.lines()) {
            assert_eq!(ours, theirs);
        }
        assert_eq!(ours, theirs);
        assert!(ours.contains(
            "2026-11-21T15:46:47.389082Z  INFO call{rpc.service=streamgate.v1.ProviderService \
             rpc.method=GetProvider trace_id=caa8c55c60ebe135c682df8b4bb99f83}: \
             streamgate::telemetry::text::tests: call finished grpc.code=OK \
             latency_ms=4.4272219999999995\n"
        ));
        assert!(ours.contains("\\x1b[31mred"), "{ours}");
        assert!(ours.contains("\\u{9b}C1"), "{ours}");
        assert!(
            ours.contains(" WARN sqlx::query: from the log crate\n"),
            "{ours}"
        );
    }
}
