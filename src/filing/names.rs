//! Names derived from a file's name: the receipt, the error receipt, a
//! `-N` name for a taken one, temporary names. [`derived_name`] is the only
//! place such a name is built, so each fits in `NAME_MAX` bytes however long
//! the file's own name is.

use sha2::{Digest, Sha256};

/// The longest file name, in bytes, that Linux filesystems accept.
pub const NAME_MAX: usize = 255;

/// Hex digits of the name's sha256 that a shortened name carries.
const HASH_HEX: usize = 8;

/// What is added to a name to derive another from it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Derive<'a> {
    /// Before the name (`.` for a hidden temporary name).
    pub prefix: &'a str,
    /// Before the name's extension chain (`-1` in `m-1.tar.gz`).
    pub infix: &'a str,
    /// After the name (`.receipt.json`).
    pub suffix: &'a str,
}

/// `prefix` + stem + `infix` + extension chain + `suffix`, where `name` is
/// stem + extension chain (see [`split_extension`]).
///
/// When that is longer than [`NAME_MAX`], the stem is cut on a UTF-8
/// character boundary and `~` and the first 8 hex digits of the sha256 of the
/// whole `name` follow what is kept, so the result still starts like `name`,
/// keeps its extension chain and the affixes whole, and two long names that
/// start alike still derive different names. Pure: the same arguments always
/// give the same name, which a retry after a crash relies on. Never
/// guarantees the name is free; callers check.
pub fn derived_name(name: &str, d: &Derive) -> String {
    let (stem, ext) = split_extension(name);
    let full = d.prefix.len() + stem.len() + d.infix.len() + ext.len() + d.suffix.len();
    if full <= NAME_MAX {
        return format!("{}{stem}{}{ext}{}", d.prefix, d.infix, d.suffix);
    }
    let hash = &hex::encode(Sha256::digest(name.as_bytes()))[..HASH_HEX];
    let fixed = d.prefix.len() + 1 + HASH_HEX + d.infix.len() + d.suffix.len();
    // An extension too long to keep is cut along with the rest of the name.
    let (stem, ext) = if fixed + ext.len() < NAME_MAX {
        (stem, ext)
    } else {
        (name, "")
    };
    let room = NAME_MAX.saturating_sub(fixed + ext.len());
    let kept = &stem[..floor_char_boundary(stem, room)];
    format!("{}{kept}~{hash}{}{ext}{}", d.prefix, d.infix, d.suffix)
}

/// The largest index `<= at` that is a char boundary of `s`.
fn floor_char_boundary(s: &str, at: usize) -> usize {
    if at >= s.len() {
        return s.len();
    }
    (0..=at).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0)
}

/// Splits off the extension chain a suffix goes before: the last extension,
/// with `.tar` ahead of it (`m.tar.gz`, `m.tar.zst`). Only those, so dots in
/// a versioned name stay put: `llama-3.1-8b.tar.gz` -> `llama-3.1-8b-1.tar.gz`.
pub fn split_extension(name: &str) -> (&str, &str) {
    let Some(dot) = name.rfind('.').filter(|&i| i > 0 && i + 1 < name.len()) else {
        return (name, "");
    };
    let stem = &name[..dot];
    if let Some(inner) = stem.rfind('.').filter(|&i| i > 0) {
        if stem[inner..].eq_ignore_ascii_case(".tar") {
            return name.split_at(inner);
        }
    }
    name.split_at(dot)
}
