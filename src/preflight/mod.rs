//! Pre-flight: is this file a tar archive the platform can import?
//!
//! Checked before any session starts ([`check_file`]): a `.tar` by walking
//! its 512-byte headers with positioned reads, never reading member data, so
//! the cost follows the number of members, not the size (a 32 GiB tar with
//! one member is two reads); a `.tar.gz`/`.tgz` by its gzip header and the
//! tar headers in its first MiB ([`Depth::Quick`]), or its whole stream
//! ([`Depth::Full`], `upload --dry-run`). What a gzip archive's whole stream
//! holds (its CRC, its length, every tar header) is checked as the upload
//! reads it, by a [`StreamVerifier`] offered each chunk in file order.
//!
//! Rejected: not a tar, a truncated tar, a bad header checksum, a member
//! path that is absolute or contains `..`, device and FIFO members, links
//! that point outside the archive, an archive without a regular file, and
//! for gzip a bad header, a corrupt or truncated deflate stream, or a CRC or
//! length that does not match. A [`Rejection`] names the member and why.
//!
//! Files: `tar` (the header checker, the seeking walk and the stream walk),
//! `gzip` (gzip framing and inflate), `stream` (the verifier the upload
//! pipeline offers chunks to).

mod gzip;
mod stream;
mod tar;

#[cfg(test)]
mod corpus;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::source::{FileIdentity, SourceError, SourceFile};

pub use stream::StreamVerifier;

/// Bytes of a gzip archive inflated by the quick check before a session.
const QUICK_GZIP: u64 = 1 << 20;
/// Bytes read at a time when a whole gzip file is checked.
const READ: usize = 1 << 20;

/// Why pre-flight refused an archive: the member (when one is to blame) and
/// the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The member to blame, when one is (its name as the archive gives it).
    pub member: Option<String>,
    /// What is wrong, in words.
    pub reason: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.member {
            Some(m) => write!(f, "member \"{}\": {}", m.escape_debug(), self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for Rejection {}

/// What a pre-flight check found in an archive it accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Members seen (GNU long-name and PAX records not counted).
    pub members: u64,
    /// Regular files among the members.
    pub regular_files: u64,
    /// Gzip members, for a gzip archive whose whole stream was checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gzip_members: Option<u32>,
    /// Only the start of a gzip archive was checked; the rest is checked
    /// as the upload reads it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

/// Why pre-flight refused an archive, or that it could not finish.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// The archive is not one the platform can import.
    #[error("pre-flight rejected the archive: {0}")]
    Rejected(Rejection),
    /// The file could not be read; nothing is known about the archive.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The check was stopped before it finished.
    #[error("pre-flight check interrupted")]
    Stopped,
}

impl From<Rejection> for PreflightError {
    fn from(r: Rejection) -> Self {
        PreflightError::Rejected(r)
    }
}

impl From<tar::WalkError> for PreflightError {
    fn from(e: tar::WalkError) -> Self {
        match e {
            tar::WalkError::Rejected(r) => PreflightError::Rejected(r),
            tar::WalkError::Source(e) => PreflightError::Source(e),
        }
    }
}

/// How an archive is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A tar archive.
    Tar,
    /// A gzip-compressed tar archive.
    Gzip,
}

impl Format {
    /// The format of a file named `name` whose first bytes are `magic`:
    /// the name decides for `.tar`, `.tar.gz` and `.tgz` (so a mismatch is
    /// reported against the name), the content for any other name.
    pub fn of(name: &str, magic: &[u8]) -> Format {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
            Format::Gzip
        } else if lower.ends_with(".tar") || !magic.starts_with(&[0x1f, 0x8b]) {
            Format::Tar
        } else {
            Format::Gzip
        }
    }

    /// The format of the open `src` named `name`.
    fn detect(src: &SourceFile, name: &str, size: u64) -> Result<Format, SourceError> {
        let mut magic = [0u8; 2];
        if size >= 2 {
            src.read_exact_at(&mut magic, 0)?;
        }
        Ok(Format::of(name, &magic))
    }
}

/// How much of a gzip archive [`check_file`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// The header and the first MiB (before a session starts).
    Quick,
    /// All of it (`upload --dry-run`).
    Full,
}

/// Checks the archive at `path`, which must still have `identity`
/// (opened through [`SourceFile`]: never a link, never blocking, regular
/// files only). `stop` is asked between reads of a long check.
pub fn check_file(
    path: &Path,
    identity: &FileIdentity,
    depth: Depth,
    stop: &dyn Fn() -> bool,
) -> Result<(Format, Summary), PreflightError> {
    let src = SourceFile::open(path, identity)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let size = identity.size;
    let format = Format::detect(&src, &name, size)?;
    let summary = match format {
        Format::Tar => tar::walk_file(&src, size)?,
        Format::Gzip => {
            let limit = match depth {
                Depth::Quick => size.min(QUICK_GZIP),
                Depth::Full => size,
            };
            let mut gz = gzip::GzipStream::default();
            feed_range(&src, &mut gz, 0, limit, stop)?;
            if limit == size {
                gz.finish()?
            } else {
                Summary {
                    partial: true,
                    ..Summary::default()
                }
            }
        }
    };
    Ok((format, summary))
}

/// Pushes bytes `[from, to)` of `src` into `gz`.
fn feed_range(
    src: &SourceFile,
    gz: &mut gzip::GzipStream,
    from: u64,
    to: u64,
    stop: &dyn Fn() -> bool,
) -> Result<(), PreflightError> {
    let mut buf = vec![0u8; READ.min((to - from) as usize)];
    let mut at = from;
    while at < to {
        if stop() {
            return Err(PreflightError::Stopped);
        }
        let n = (to - at).min(buf.len() as u64) as usize;
        src.read_exact_at(&mut buf[..n], at)?;
        gz.push(&buf[..n])?;
        at += n as u64;
    }
    Ok(())
}
