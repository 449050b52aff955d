//! The API key as a value that cannot leak by accident.
//!
//! `Secret` prints `[redacted]` through `Debug` and `Display`; the only way to
//! the text is `expose()`, which the platform client calls when it builds the
//! `x-api-key` header. [`Secret::redact`] removes the key from text someone
//! else wrote (the platform's answers). Loading the key (env, systemd
//! credential, key file) lives in `config`, the only module that reads the
//! environment.
//!
//! Hand-written rather than the `secrecy` crate: this is the whole of it (a
//! redacting `Debug`/`Display`, an explicit `expose`, redaction of echoes,
//! and trimming a key file's newline), tested below. `secrecy`'s remaining
//! gain, zeroizing on drop, buys little here: the key is copied into every
//! request's header value, which is not.

use std::borrow::Cow;
use std::fmt;

/// What replaces the key in redacted text.
pub const REDACTED: &str = "[redacted]";

/// Keys of at least this many characters are redacted wherever they occur.
/// A shorter key is redacted only where it stands as a whole token: a key
/// `k` must not turn "key" into "[redacted]ey". Eight characters are long
/// enough not to occur inside ordinary words by chance; a shorter key is
/// weak anyway, and an echo of it ("invalid key abc1") is still caught.
pub const SUBSTRING_REDACTION_MIN: usize = 8;

/// A secret string (the platform API key).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// What the database password is called in messages about its file.
    pub const PASSWORD: &'static str = "database password";

    /// Wraps a key. Surrounding whitespace (a trailing newline in a key file)
    /// is not part of the key.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into().trim().to_string())
    }

    /// The key itself: only for the request header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty (blank once trimmed).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `text` with the key replaced by [`REDACTED`]: every occurrence of a
    /// key of [`SUBSTRING_REDACTION_MIN`] characters or more, and only
    /// whole-token occurrences of a shorter one. Only for text from outside;
    /// our own messages never contain the key in the first place.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let key = self.0.as_str();
        if key.is_empty() || !text.contains(key) {
            return Cow::Borrowed(text);
        }
        let anywhere = key.chars().count() >= SUBSTRING_REDACTION_MIN;
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        for (at, _) in text.match_indices(key) {
            let end = at + key.len();
            let whole = !text[..at].chars().next_back().is_some_and(is_word)
                && !text[end..].chars().next().is_some_and(is_word);
            if anywhere || whole {
                out.push_str(&text[copied..at]);
                out.push_str(REDACTED);
                copied = end;
            }
        }
        out.push_str(&text[copied..]);
        Cow::Owned(out)
    }
}

/// Characters that continue a token: a short key next to one of these is
/// part of a longer word, not an echo of the key.
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("kg-very-secret\n");
        assert_eq!(s.expose(), "kg-very-secret");
        assert!(!format!("{s:?}").contains("very-secret"));
        assert!(!format!("{s}").contains("very-secret"));
        assert!(!format!("{:#?}", Some(&s)).contains("very-secret"));
    }

    #[test]
    fn a_long_key_is_redacted_wherever_it_occurs() {
        let s = Secret::new("kg-0123456789");
        assert_eq!(
            s.redact("bad key kg-0123456789, xkg-0123456789x"),
            "bad key [redacted], x[redacted]x"
        );
        assert_eq!(s.redact("nothing here"), "nothing here");
    }

    #[test]
    fn a_short_key_is_redacted_only_as_a_whole_token() {
        let s = Secret::new("k");
        assert_eq!(
            s.redact("the API key was rejected"),
            "the API key was rejected"
        );
        assert_eq!(s.redact("key=k; k."), "key=[redacted]; [redacted].");
        assert_eq!(s.redact("k"), "[redacted]");
        let s = Secret::new("abc1");
        assert_eq!(s.redact("abc12 abc1-x abc1"), "abc12 abc1-x [redacted]");
        assert_eq!(Secret::new("").redact("text"), "text");
    }
}
