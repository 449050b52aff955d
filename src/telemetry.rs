//! Logging setup: `tracing` to stderr (journald under systemd), as text or
//! JSON, filtered by `telemetry.log_level`.

use std::io::Write;

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
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    let result = match format {
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    // Already installed (a test calling twice): keep the first.
    let _ = result;
}
