//! The API key as a value that cannot leak by accident.
//!
//! `Secret` prints `[redacted]` through `Debug` and `Display`; the only way to
//! the text is `expose()`, which the platform client calls when it builds the
//! `x-api-key` header. Loading the key (env, systemd credential, key file) lives
//! in `config`, the only module that reads the environment.
//!
//! Hand-written rather than the `secrecy` crate: this is the whole of it (a
//! redacting `Debug`/`Display`, an explicit `expose`, and trimming a key
//! file's newline, which `secrecy` would leave to every caller), tested
//! below. `secrecy`'s remaining gain, zeroizing on drop, buys little here:
//! the key is copied into every request's header value, which is not.

use std::fmt;

/// A secret string (the platform API key).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a key. Surrounding whitespace (a trailing newline in a key file)
    /// is not part of the key.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into().trim().to_string())
    }

    /// The key itself: only for the request header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
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
}
