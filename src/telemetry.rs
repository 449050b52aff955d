//! Logging setup: `tracing` to stderr, as text or JSON, filtered by
//! `telemetry.log_level`. Text lines escape control characters in every
//! field (see [`crate::escaped`]); JSON escapes them as JSON does.
//!
//! When stderr is the journal (systemd documents the test: the device and
//! inode of stderr equal `$JOURNAL_STREAM`; the variable alone is inherited
//! by children whose stderr may be elsewhere), each line starts with its
//! syslog priority (`<3>` error … `<7>` debug) so `journalctl -p warning`
//! filters by level, and the timestamp is left to the journal.

use std::io::Write;
use std::sync::OnceLock;

use tracing::{Level, Metadata};
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{self, FormatFields};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Whether `journal_stream` (`$JOURNAL_STREAM`, "DEVICE:INODE") names the
/// file `stderr` (its device and inode) is.
pub fn is_journal(journal_stream: Option<&str>, stderr: Option<(u64, u64)>) -> bool {
    let (Some(stream), Some((dev, ino))) = (journal_stream, stderr) else {
        return false;
    };
    let Some((d, i)) = stream.trim().split_once(':') else {
        return false;
    };
    d.parse::<u64>().ok() == Some(dev) && i.parse::<u64>().ok() == Some(ino)
}

/// Whether this process's stderr is connected to the journal (decided once).
pub fn stderr_is_journal() -> bool {
    static JOURNAL: OnceLock<bool> = OnceLock::new();
    *JOURNAL.get_or_init(|| {
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        let stderr = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .and_then(|fd| std::fs::File::from(fd).metadata().ok())
            .map(|m| (m.dev(), m.ino()));
        // Not configuration: systemd's word on where stderr goes.
        #[allow(clippy::disallowed_methods)]
        let stream = std::env::var("JOURNAL_STREAM").ok();
        is_journal(stream.as_deref(), stderr)
    })
}

/// The syslog priority prefix for `level` ("<4>" for a warning).
pub fn priority_prefix(level: Level) -> &'static str {
    match level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        Level::DEBUG | Level::TRACE => "<7>",
    }
}

/// Prints `message` on stderr, at error priority in the journal (every line
/// of it, so `journalctl -p err` shows why the process stopped).
pub fn eprint_error(message: &str) {
    eprint_at(Level::ERROR, message);
}

/// Prints `message` (a line of a command's own output on stderr, not a log
/// event) with the priority `level` when stderr is the journal, plain
/// otherwise, so such lines filter with `journalctl -p` like log lines.
pub fn eprint_at(level: Level, message: &str) {
    let line = format!("{}\n", message.trim_end());
    let out = if stderr_is_journal() {
        prefixed(priority_prefix(level), line.as_bytes())
    } else {
        line.into_bytes()
    };
    let _ = std::io::stderr().write_all(&out);
}

/// Writes log lines to stderr, around a progress bar when one is drawn,
/// with the priority prefix when stderr is the journal.
#[derive(Clone, Default)]
pub struct StderrWriter {
    bar: Option<indicatif::ProgressBar>,
    journal: bool,
}

impl StderrWriter {
    /// A writer that prints each line with `bar` cleared, so lines and the bar
    /// do not tear each other (a bar is drawn on a terminal only, never the
    /// journal).
    pub fn around(bar: indicatif::ProgressBar) -> Self {
        StderrWriter {
            bar: Some(bar),
            journal: false,
        }
    }
}

/// One write of log output to stderr, made by [`StderrWriter`].
pub struct LineWriter {
    bar: Option<indicatif::ProgressBar>,
    prefix: Option<&'static str>,
}

/// `buf` with `prefix` before each of its lines.
fn prefixed(prefix: &str, buf: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(buf.len() + prefix.len());
    let mut line_start = true;
    for &b in buf {
        if line_start {
            out.extend_from_slice(prefix.as_bytes());
        }
        out.push(b);
        line_start = b == b'\n';
    }
    out
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = match self.prefix {
            Some(p) => std::borrow::Cow::Owned(prefixed(p, buf)),
            None => std::borrow::Cow::Borrowed(buf),
        };
        match &self.bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(&line))?,
            None => std::io::stderr().write_all(&line)?,
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
            prefix: None,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        LineWriter {
            bar: self.bar.clone(),
            prefix: self.journal.then(|| priority_prefix(*meta.level())),
        }
    }
}

/// Installs the global subscriber. `level` is an `EnvFilter` directive such
/// as `info` or `modelferry=debug`; a bad one falls back to `info`.
pub fn init(format: LogFormat, level: &str, writer: StderrWriter) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let journal = stderr_is_journal();
    let writer = StderrWriter { journal, ..writer };
    // Colour only on a terminal, and never when NO_COLOR asks so.
    let ansi = !journal
        && std::io::IsTerminal::is_terminal(&std::io::stderr())
        && !crate::config::no_color();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    let result = match (format, journal) {
        // The journal stamps each line itself.
        (LogFormat::Text, true) => builder
            .fmt_fields(text_fields())
            .with_ansi(false)
            .without_time()
            .try_init(),
        (LogFormat::Text, false) => builder.fmt_fields(text_fields()).with_ansi(ansi).try_init(),
        (LogFormat::Json, _) => builder
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

    #[test]
    fn the_journal_only_when_stderr_is_the_named_stream() {
        assert!(is_journal(Some("8:1234"), Some((8, 1234))));
        assert!(is_journal(Some("8:1234\n"), Some((8, 1234))));
        // Inherited from a service, but stderr was redirected elsewhere.
        assert!(!is_journal(Some("8:1234"), Some((8, 99))));
        assert!(!is_journal(Some("9:1234"), Some((8, 1234))));
        assert!(!is_journal(None, Some((8, 1234))));
        assert!(!is_journal(Some("8:1234"), None));
        assert!(!is_journal(Some("garbage"), Some((8, 1234))));
        assert!(!is_journal(Some(""), Some((0, 0))));
    }

    #[test]
    fn every_line_of_an_event_carries_its_priority() {
        assert_eq!(priority_prefix(Level::WARN), "<4>");
        assert_eq!(priority_prefix(Level::ERROR), "<3>");
        assert_eq!(prefixed("<4>", b"a\nb\n"), b"<4>a\n<4>b\n");
        assert_eq!(prefixed("<6>", b"one"), b"<6>one");
    }

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
