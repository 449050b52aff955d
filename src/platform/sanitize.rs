//! The one gate for text and ids that come from the platform.
//!
//! Whatever the platform (or a proxy in front of it) answers may end up in
//! logs, `status`, the database and receipts. [`PlatformText`] and
//! [`PlatformId`] can only be built here, through a [`Sanitizer`] holding the
//! API key, so the compiler keeps raw wire strings out of the rest of the
//! program. Text becomes one printable line (ANSI escape sequences and control
//! characters removed, whitespace collapsed), the key is redacted
//! ([`Secret::redact`]), and the length is capped. An id must be usable as a
//! URL path segment exactly as it came; one that is not is refused, never
//! repaired, because a repaired id names a different session.

use std::fmt;

use crate::escaped::needs_escape;
use crate::secret::Secret;

/// Longest platform message kept, in characters: room for any real
/// explanation, small enough for a log line, a database row and a receipt.
const MAX_TEXT: usize = 2000;
/// Longest excerpt kept of an answer that is not a message (a proxy's page).
const MAX_EXCERPT: usize = 200;
/// How much of a refused id or an odd value an error shows.
const MAX_SHOWN: usize = 40;
/// Longest id accepted, in bytes. Real ids are tens of characters; a much
/// longer one makes URLs that no HTTP stack builds or takes.
pub const MAX_ID_LEN: usize = 256;

/// Text that came from the platform, made safe to store, log and print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformText(String);

impl PlatformText {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether there is no text.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for PlatformText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<PlatformText> for String {
    fn from(t: PlatformText) -> String {
        t.0
    }
}

/// An id the platform handed out, checked to be usable as it is: ASCII
/// letters, digits and `-_.:`, at most [`MAX_ID_LEN`] bytes, not `.` or `..`,
/// not the key; a session id is not `start` either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformId(String);

impl PlatformId {
    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PlatformId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<PlatformId> for String {
    fn from(id: PlatformId) -> String {
        id.0
    }
}

/// Which id an answer carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// A session id.
    Session,
    /// A model id.
    Model,
    /// A dock status id.
    DockStatus,
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdKind::Session => "session id",
            IdKind::Model => "model id",
            IdKind::DockStatus => "dock status id",
        })
    }
}

/// An id that cannot be used; shows the id only sanitised and shortened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadId {
    /// Which id it was.
    pub kind: IdKind,
    shown: PlatformText,
    why: String,
}

impl fmt::Display for BadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unusable {} \"{}\": {}", self.kind, self.shown, self.why)
    }
}

/// Builds [`PlatformText`] and [`PlatformId`] from what the platform sent.
#[derive(Clone, Copy)]
pub struct Sanitizer<'a> {
    key: &'a Secret,
}

impl<'a> Sanitizer<'a> {
    /// A sanitizer that keeps `key` out of everything it builds.
    pub fn new(key: &'a Secret) -> Self {
        Sanitizer { key }
    }

    /// A message of the platform's (a FAILED reason, an error field).
    pub fn text(&self, raw: &str) -> PlatformText {
        self.clean(raw, MAX_TEXT)
    }

    /// A short excerpt of an answer body of any shape; HTML tags dropped.
    pub fn excerpt(&self, body: &[u8]) -> PlatformText {
        let text = String::from_utf8_lossy(body);
        let mut out = String::with_capacity(text.len().min(4 * MAX_TEXT));
        let mut in_tag = false;
        for ch in text.chars() {
            match ch {
                '<' => in_tag = true,
                '>' if in_tag => {
                    in_tag = false;
                    out.push(' ');
                }
                _ if in_tag => {}
                c => out.push(c),
            }
        }
        self.clean(&out, MAX_EXCERPT)
    }

    /// A value quoted in one of our messages (a refused id, an odd chunk
    /// number): shortened, with control characters shown escaped (`\n`,
    /// `\u{1b}`) so the reader sees why it was refused.
    pub fn short(&self, raw: &str) -> PlatformText {
        let redacted = self.key.redact(raw);
        let mut out = String::new();
        for c in redacted.chars() {
            if needs_escape(c) {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
            // Escapes need not be counted exactly; this bounds the work.
            if out.len() > 4 * MAX_SHOWN {
                break;
            }
        }
        PlatformText(truncate(&out, MAX_SHOWN))
    }

    /// Checks an id the platform returned (or one stored from an earlier
    /// answer) before it is used in a URL, stored or logged.
    pub fn id(&self, kind: IdKind, raw: &str) -> Result<PlatformId, BadId> {
        let why = if raw.is_empty() {
            "it is empty".to_string()
        } else if raw.len() > MAX_ID_LEN {
            format!(
                "it is {} bytes long; at most {MAX_ID_LEN} are accepted",
                raw.len()
            )
        } else if !raw.bytes().all(is_id_byte) {
            "it has characters other than ASCII letters, digits and - _ . :".to_string()
        } else if raw == "." || raw == ".." {
            // URL normalisation would drop it and the call would go to the
            // parent path.
            "it is a relative path segment".to_string()
        } else if kind == IdKind::Session && raw.eq_ignore_ascii_case("start") {
            // Chunks would go to the start-session endpoint.
            "it names the start-session endpoint".to_string()
        } else if self.key.redact(raw) != raw {
            "it contains the API key".to_string()
        } else {
            return Ok(PlatformId(raw.to_string()));
        };
        Err(BadId {
            kind,
            shown: self.short(raw),
            why,
        })
    }

    fn clean(&self, raw: &str, cap: usize) -> PlatformText {
        let line = one_line(raw);
        let redacted = self.key.redact(&line);
        PlatformText(truncate(&redacted, cap))
    }
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':')
}

/// `raw` as one printable line: ANSI escape sequences dropped, every other
/// control character a space, runs of whitespace one space.
fn one_line(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    let mut space = true;
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            match chars.peek() {
                // CSI: parameters up to a final byte in '@'..='~'.
                Some('[') => {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC (titles, hyperlinks): up to BEL or ESC \.
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' {
                            break;
                        }
                        if c == '\x1b' {
                            chars.next_if_eq(&'\\');
                            break;
                        }
                    }
                }
                _ => {}
            }
            continue;
        }
        if c.is_whitespace() || needs_escape(c) {
            if !space {
                out.push(' ');
                space = true;
            }
        } else {
            out.push(c);
            space = false;
        }
    }
    out.truncate(out.trim_end().len());
    out
}

fn truncate(s: &str, cap: usize) -> String {
    match s.char_indices().nth(cap) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "kg-sanitize-test-key";

    fn with<T>(f: impl FnOnce(Sanitizer) -> T) -> T {
        let key = Secret::new(KEY);
        f(Sanitizer::new(&key))
    }

    #[test]
    fn text_is_one_printable_line_without_the_key() {
        let t = with(|s| {
            s.text(&format!(
                "bad key {KEY}\r\n\x1b[31mred\x1b[0m \x1b]8;;http://x\x07link\x1b]8;;\x1b\\ \u{202e}rev\tend\x00"
            ))
        });
        assert_eq!(t.as_str(), "bad key [redacted] red link rev end");
    }

    #[test]
    fn text_is_capped() {
        let t = with(|s| s.text(&"é".repeat(10_000)));
        assert_eq!(t.as_str().chars().count(), MAX_TEXT + 1);
        assert!(t.as_str().ends_with('…'));
        let e = with(|s| s.excerpt("x".repeat(5000).as_bytes()));
        assert_eq!(e.as_str().chars().count(), MAX_EXCERPT + 1);
    }

    #[test]
    fn the_key_is_redacted_before_the_cap_cuts_it() {
        let raw = format!("{}{KEY}", "a".repeat(MAX_EXCERPT - 5));
        let e = with(|s| s.excerpt(raw.as_bytes()));
        assert!(!e.as_str().contains("kg-sa"), "{e}");
    }

    #[test]
    fn excerpts_drop_html_tags() {
        let e = with(|s| {
            s.excerpt(
                format!("<html><body><h1>502 Bad Gateway</h1>\n<p title=\"{KEY}\">nginx {KEY}</p>")
                    .as_bytes(),
            )
        });
        assert_eq!(e.as_str(), "502 Bad Gateway nginx [redacted]");
    }

    #[test]
    fn usable_ids_pass_unchanged() {
        for id in [
            "d-8",
            "cm-3_9",
            "ds:1.2",
            "...",
            "starting",
            "a".repeat(MAX_ID_LEN).as_str(),
        ] {
            assert_eq!(with(|s| s.id(IdKind::Session, id)).unwrap().as_str(), id);
        }
        assert_eq!(
            with(|s| s.id(IdKind::DockStatus, "start"))
                .unwrap()
                .as_str(),
            "start"
        );
    }

    #[test]
    fn unusable_ids_are_refused_and_shown_tamed() {
        let long = "x".repeat(100_000);
        for (id, why) in [
            ("", "empty"),
            ("..", "relative"),
            (".", "relative"),
            ("start", "start-session"),
            ("Start", "start-session"),
            ("a/b", "characters"),
            ("s 1", "characters"),
            ("s\n\x1b[2Jx", "characters"),
            ("é", "characters"),
            ("%2e%2e", "characters"),
            (long.as_str(), "100000 bytes"),
            (KEY, "API key"),
        ] {
            let e = with(|s| s.id(IdKind::Session, id)).unwrap_err();
            let shown = e.to_string();
            assert!(shown.starts_with("unusable session id"), "{shown}");
            assert!(shown.contains(why), "{id:?}: {shown}");
            assert!(!shown.contains(KEY), "{shown}");
            assert!(!shown.chars().any(char::is_control), "{shown:?}");
            assert!(shown.len() < 200, "{shown}");
        }
        let e = with(|s| s.id(IdKind::Session, "s\n\x1b[2J")).unwrap_err();
        assert!(e.to_string().contains(r#""s\n\u{1b}[2J""#), "{e}");
        let e = with(|s| s.id(IdKind::Model, "..")).unwrap_err();
        assert!(e.to_string().starts_with("unusable model id"), "{e}");
    }

    #[test]
    fn a_short_key_does_not_damage_platform_text() {
        let key = Secret::new("k");
        let s = Sanitizer::new(&key);
        assert_eq!(
            s.text("the API key was rejected").as_str(),
            "the API key was rejected"
        );
        assert_eq!(s.text("key k rejected").as_str(), "key [redacted] rejected");
        assert!(s.id(IdKind::Model, "k-1").is_ok());
        assert!(s.id(IdKind::Model, "k").is_err());
    }
}
