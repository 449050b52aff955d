//! Logging setup: `tracing` to stderr (journald under systemd), as text or
//! JSON, filtered by `telemetry.log_level`. Text lines escape control
//! characters in every field (see [`crate::escaped`]); JSON escapes them as
//! JSON does.

use std::io::Write;

use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{self, FormatFields};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Writes log lines to stderr, around a progress bar when one is drawn.
#[derive(Clone, Default)]
pub struct StderrWriter {
    bar: Option<indicatif::ProgressBar>,
}

impl StderrWriter {
    pub fn around(bar: indicatif::ProgressBar) -> Self {
        StderrWriter { bar: Some(bar) }
    }
}

pub struct LineWriter {
    bar: Option<indicatif::ProgressBar>,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &self.bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for StderrWriter {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            bar: self.bar.clone(),
        }
    }
}

/// Installs the global subscriber. `level` is an `EnvFilter` directive such
/// as `info` or `modelferry=debug`; a bad one falls back to `info`.
pub fn init(format: LogFormat, level: &str, writer: StderrWriter) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only on a terminal, and never when NO_COLOR asks so.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && !crate::config::no_color();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    let result = match format {
        LogFormat::Text => builder.fmt_fields(text_fields()).with_ansi(ansi).try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    // Already installed (a test calling twice): keep the first.
    let _ = result;
}

/// Fields of a text log line as the default formatter lays them out
/// (`message` bare, others `name=value`, space-separated), with control
/// characters escaped in every one: a value that quotes a file name, however
/// it was built, cannot break the line or send a terminal escape.
fn text_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    format::debug_fn(|w, field, value| {
        use std::fmt::Write as _;
        let mut w = crate::escaped::EscapingWriter(w);
        match field.name() {
            "message" => write!(w, "{value:?}"),
            name => write!(w, "{name}={value:?}"),
        }
    })
    .delimited(" ")
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects what the formatter writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn text_lines_escape_control_characters_in_every_field() {
        let buf = Buffer::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(text_fields())
            .with_ansi(false)
            .with_writer(move || buf.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("job", file = "a\nb.tar");
            let _g = span.enter();
            let error = "/drop/new\nline.tar: gone";
            tracing::warn!(error = %error, count = 2, "failed\x1b[31m");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.contains('\x1b'), "{text}");
        assert!(
            text.contains(r"failed\u{1b}[31m error=/drop/new\nline.tar: gone count=2"),
            "{text}"
        );
        assert!(text.contains(r#"job{file="a\nb.tar"}"#), "{text}");
    }
}
