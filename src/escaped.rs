//! How file names, paths and other text from outside are shown in logs and
//! human output.
//!
//! A file name may hold any byte but `/` and NUL: a newline in one would
//! forge a log line, an escape sequence would drive the terminal reading the
//! output. [`Escaped`] shows control characters, Unicode bidirectional
//! controls and zero-width characters as Rust-style escapes (`\n`,
//! `\u{1b}`, `\u{202e}`, `\u{200b}`) and bytes that
//! are not UTF-8 as `\xff`; everything else, spaces and non-ASCII letters
//! included, is shown as it is. Its output holds no character it would
//! escape, so escaping a message that already quotes an escaped name changes
//! nothing: every path can be escaped where it is shown, and every message
//! again where it is printed, without double escapes. (Backslashes are
//! shown as they are, to keep that property: a name holding a literal `\n`
//! shows like one holding a newline.)
//!
//! The text log formatter (see `telemetry`) applies the same escaping to
//! every field, so a value built elsewhere (an error quoting a path) cannot
//! break a log line either.

use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A path, file name or message, shown escaped by its `Display`.
#[derive(Clone, Copy)]
pub struct Escaped<'a>(&'a [u8]);

impl<'a> Escaped<'a> {
    /// A path or file name (any bytes).
    pub fn path(path: &'a Path) -> Self {
        Escaped(path.as_os_str().as_bytes())
    }

    /// Text: a name already converted, or a message quoting one.
    pub fn str(text: &'a str) -> Self {
        Escaped(text.as_bytes())
    }
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            write_str(f, chunk.valid())?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Writes `text` to `out` with what [`Escaped`] escapes escaped.
pub(crate) fn write_str<W: fmt::Write + ?Sized>(out: &mut W, text: &str) -> fmt::Result {
    let mut rest = text;
    while let Some(at) = rest.find(needs_escape) {
        out.write_str(&rest[..at])?;
        // `find` answered the start of a char.
        let c = rest[at..]
            .chars()
            .next()
            .expect("a char at a char boundary");
        write!(out, "{}", c.escape_default())?;
        rest = &rest[at + c.len_utf8()..];
    }
    out.write_str(rest)
}

/// Control characters (C0, DEL, C1) and the invisible characters that
/// reorder or hide text on a terminal: bidi controls, zero-width characters
/// and the byte order mark (a name could otherwise show as another). The
/// one rule for text from outside: [`Escaped`] escapes these, and the
/// platform's text is cleaned of them (`platform::sanitize`).
pub(crate) fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}'
        )
}

/// A `fmt::Write` that escapes what passes through it, for formatters that
/// assemble a line from pieces (the log formatter).
pub(crate) struct EscapingWriter<'a, W: fmt::Write + ?Sized>(pub &'a mut W);

impl<W: fmt::Write + ?Sized> fmt::Write for EscapingWriter<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_str(self.0, s)
    }

    fn write_char(&mut self, c: char) -> fmt::Result {
        if needs_escape(c) {
            write!(self.0, "{}", c.escape_default())
        } else {
            self.0.write_char(c)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::fmt::Write as _;

    fn shown(bytes: &[u8]) -> String {
        Escaped::path(Path::new(OsStr::from_bytes(bytes))).to_string()
    }

    #[test]
    fn escapes_control_characters_and_bidi_controls() {
        assert_eq!(shown(b"new\nline.tar"), r"new\nline.tar");
        assert_eq!(shown(b"red\x1b[31m.tar"), r"red\u{1b}[31m.tar");
        assert_eq!(shown(b"a\tb\rc\x7f"), r"a\tb\rc\u{7f}");
        assert_eq!(
            Escaped::str("rev\u{202e}rat.tar").to_string(),
            r"rev\u{202e}rat.tar"
        );
        assert_eq!(Escaped::str("c1\u{85}").to_string(), r"c1\u{85}");
        // Zero-width characters and the byte order mark hide in a name too.
        assert_eq!(
            Escaped::str("a\u{200b}b\u{2060}c\u{feff}.tar").to_string(),
            r"a\u{200b}b\u{2060}c\u{feff}.tar"
        );
    }

    #[test]
    fn leaves_ordinary_names_alone() {
        for name in [
            "my model (v2).tar",
            "modèle_é.tar",
            "a\\b 'q' \"d\".tar",
            "模型.tar",
        ] {
            assert_eq!(Escaped::str(name).to_string(), name);
        }
    }

    #[test]
    fn shows_bytes_that_are_not_utf8_as_hex() {
        assert_eq!(shown(b"bad\xff\xfe.tar"), r"bad\xff\xfe.tar");
        assert_eq!(shown(b"\xc3"), r"\xc3");
    }

    #[test]
    fn escaping_twice_changes_nothing() {
        for bytes in [&b"new\nline\x1b[0m\xff.tar"[..], b"plain.tar"] {
            let once = shown(bytes);
            assert_eq!(Escaped::str(&once).to_string(), once);
        }
    }

    #[test]
    fn the_writer_escapes_pieces_as_they_pass() {
        let mut out = String::new();
        let mut w = EscapingWriter(&mut out);
        w.write_str("path=/d/new\n").unwrap();
        w.write_char('\u{1b}').unwrap();
        w.write_char('x').unwrap();
        assert_eq!(out, r"path=/d/new\n\u{1b}x");
    }
}
