//! The tar side of pre-flight: one header checker, driven two ways.
//!
//! [`Checker`] judges one 512-byte header at a time (checksum, member path,
//! member type, link target) and says how many bytes of data follow and
//! whether they must be read (GNU long names, PAX records) or may be
//! skipped. [`walk_file`] drives it over a `.tar` on disk with positioned
//! reads, jumping over member data, so its cost is per member, not per byte:
//! a 32 GiB tar with one member is two reads. [`StreamWalker`] drives it over
//! a byte stream that cannot seek (a gzip archive's inflated bytes).
//! Header fields are read through the `tar` crate's [`tar::Header`] (octal
//! and GNU base-256 sizes, the ustar prefix); the walk is ours, since the
//! crate's `Archive` stops at the first error without saying which member,
//! and does not check links or types.

use super::{Rejection, Summary};
use crate::source::{SourceError, SourceFile};

pub(super) const BLOCK: usize = 512;
/// The largest GNU long name or PAX record block read into memory. Real
/// ones are a few hundred bytes; this bounds what a hostile archive costs.
const MAX_EXTENSION: u64 = 1 << 20;

/// What follows a header that [`Checker::header`] accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// A zero block: the end-of-archive marker.
    End,
    /// `size` bytes of data (then padding to a block). `read` says the data
    /// must be handed to [`Checker::extension`]; `sparse_blocks` says GNU
    /// sparse extension headers come first.
    Data {
        size: u64,
        read: Option<Extension>,
        sparse_blocks: bool,
    },
}

/// Header data that describes the next member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Extension {
    GnuLongName,
    GnuLongLink,
    Pax,
}

/// Judges headers in archive order; counts what it saw.
#[derive(Debug, Default)]
pub(super) struct Checker {
    summary: Summary,
    /// The member being read (for messages), once its header was accepted.
    current: Option<String>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax_path: Option<Vec<u8>>,
    pax_link: Option<Vec<u8>>,
    pax_size: Option<u64>,
}

fn name_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether a GNU sparse header (or extension block) says another one follows.
pub(super) fn sparse_continues(block: &[u8; BLOCK], first: bool) -> bool {
    block[if first { 482 } else { 504 }] != 0
}

/// The sum of a header's bytes with its checksum field taken as spaces,
/// unsigned (POSIX) and signed (some old writers).
fn checksums(block: &[u8; BLOCK]) -> (u32, i32) {
    let mut unsigned = 0u32;
    let mut signed = 0i32;
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u32::from(b);
        signed += i32::from(b as i8);
    }
    (unsigned, signed)
}

/// Why a member path is refused, if it is.
fn path_problem(path: &[u8]) -> Option<&'static str> {
    if path.is_empty() {
        return Some("its name is empty");
    }
    if path.starts_with(b"/") {
        return Some("its path is absolute");
    }
    if path.split(|&c| c == b'/').any(|c| c == b"..") {
        return Some("its path contains \"..\"");
    }
    None
}

/// Whether a symbolic link at `member` pointing to `target` stays inside
/// the archive (taken lexically: the archive's own root is the limit).
fn link_stays_inside(member: &[u8], target: &[u8]) -> bool {
    if target.starts_with(b"/") {
        return false;
    }
    let real = |c: &&[u8]| !c.is_empty() && *c != b".";
    let mut depth: i64 = member
        .split(|&c| c == b'/')
        .filter(real)
        .count()
        .saturating_sub(1) as i64;
    for c in target.split(|&c| c == b'/').filter(real) {
        depth += if c == b".." { -1 } else { 1 };
        if depth < 0 {
            return false;
        }
    }
    true
}

impl Checker {
    fn reject(&self, reason: impl Into<String>) -> Rejection {
        Rejection {
            member: self.current.clone(),
            reason: reason.into(),
        }
    }

    fn reject_member(name: &[u8], reason: impl Into<String>) -> Rejection {
        Rejection {
            member: Some(name_of(name)),
            reason: reason.into(),
        }
    }

    /// The member whose data is being read, for a caller's message.
    pub(super) fn current(&self) -> Option<&str> {
        self.current.as_deref()
    }

    /// Judges the header at `offset`.
    pub(super) fn header(&mut self, block: &[u8; BLOCK], offset: u64) -> Result<Step, Rejection> {
        if block.iter().all(|&b| b == 0) {
            return Ok(Step::End);
        }
        let header = tar::Header::from_byte_slice(block);
        let (unsigned, signed) = checksums(block);
        let stored = header.cksum().ok();
        if stored != Some(unsigned) && stored.map(|s| s as i32) != Some(signed) {
            if offset == 0 {
                let what = if block.starts_with(&[0x1f, 0x8b]) {
                    "not a tar archive: it is gzip-compressed (name it .tar.gz)"
                } else {
                    "not a tar archive: the first 512-byte header's checksum does not match"
                };
                return Err(Rejection {
                    member: None,
                    reason: what.into(),
                });
            }
            let after = match &self.current {
                Some(m) => format!(" (after member \"{}\")", m.escape_debug()),
                None => String::new(),
            };
            return Err(Rejection {
                member: None,
                reason: format!(
                    "the header at byte {offset}{after} has a bad checksum: the archive is corrupt"
                ),
            });
        }
        let size = match self.pax_size.take() {
            Some(s) => s,
            None => header
                .entry_size()
                .map_err(|e| self.reject(format!("the header at byte {offset}: {e}")))?,
        };
        let kind = block[156];
        let extension = match kind {
            b'L' => Some(Extension::GnuLongName),
            b'K' => Some(Extension::GnuLongLink),
            b'x' => Some(Extension::Pax),
            _ => None,
        };
        if let Some(ext) = extension {
            if size > MAX_EXTENSION {
                return Err(self.reject(format!(
                    "the header at byte {offset} announces {size} bytes of names or PAX records (more than {MAX_EXTENSION})"
                )));
            }
            return Ok(Step::Data {
                size,
                read: Some(ext),
                sparse_blocks: false,
            });
        }
        if matches!(kind, b'g' | b'V') {
            // PAX global records and a GNU volume label describe no member.
            return Ok(Step::Data {
                size,
                read: None,
                sparse_blocks: false,
            });
        }
        let path = self
            .long_name
            .take()
            .or_else(|| self.pax_path.take())
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let link = self
            .long_link
            .take()
            .or_else(|| self.pax_link.take())
            .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
        self.current = Some(name_of(&path));
        self.summary.members += 1;
        if let Some(why) = path_problem(&path) {
            return Err(Self::reject_member(&path, why));
        }
        match kind {
            b'0' | b'\0' | b'7' | b'S' => self.summary.regular_files += 1,
            b'3' => return Err(Self::reject_member(&path, "it is a character device")),
            b'4' => return Err(Self::reject_member(&path, "it is a block device")),
            b'6' => return Err(Self::reject_member(&path, "it is a FIFO")),
            b'M' => {
                return Err(Self::reject_member(
                    &path,
                    "it continues a multi-volume archive",
                ))
            }
            b'1' => {
                let target = link.unwrap_or_default();
                if let Some(why) = path_problem(&target) {
                    return Err(Self::reject_member(
                        &path,
                        format!(
                            "it is a hard link to \"{}\", outside the archive ({why})",
                            name_of(&target).escape_debug()
                        ),
                    ));
                }
            }
            b'2' => {
                let target = link.unwrap_or_default();
                if !link_stays_inside(&path, &target) {
                    return Err(Self::reject_member(
                        &path,
                        format!(
                            "it is a symbolic link to \"{}\", which points outside the archive",
                            name_of(&target).escape_debug()
                        ),
                    ));
                }
            }
            // Folders, and types a reader takes as regular files or ignores.
            _ => {}
        }
        Ok(Step::Data {
            size,
            read: None,
            sparse_blocks: kind == b'S' && sparse_continues(block, true),
        })
    }

    /// Takes the data of a GNU long name or link, or of PAX records.
    pub(super) fn extension(&mut self, ext: Extension, data: &[u8]) -> Result<(), Rejection> {
        // GNU names end at their first NUL.
        let until_nul = |d: &[u8]| d.split(|&b| b == 0).next().unwrap_or_default().to_vec();
        match ext {
            Extension::GnuLongName => self.long_name = Some(until_nul(data)),
            Extension::GnuLongLink => self.long_link = Some(until_nul(data)),
            Extension::Pax => {
                for record in tar::PaxExtensions::new(data) {
                    let record = record
                        .map_err(|e| self.reject(format!("a PAX record cannot be read: {e}")))?;
                    match record.key() {
                        Ok("path") => self.pax_path = Some(record.value_bytes().to_vec()),
                        Ok("linkpath") => self.pax_link = Some(record.value_bytes().to_vec()),
                        Ok("size") => {
                            let size = record
                                .value()
                                .ok()
                                .and_then(|v| v.trim().parse().ok())
                                .ok_or_else(|| self.reject("a PAX size record is not a number"))?;
                            self.pax_size = Some(size);
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// The end-of-archive marker was reached: the archive's verdict.
    pub(super) fn finish(self) -> Result<Summary, Rejection> {
        if self.summary.regular_files == 0 {
            return Err(Rejection {
                member: None,
                reason: "the archive has no regular file".into(),
            });
        }
        Ok(self.summary)
    }
}

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK as u64) * BLOCK as u64
}

/// An error of [`walk_file`].
#[derive(Debug)]
pub(super) enum WalkError {
    Rejected(Rejection),
    Source(SourceError),
}

impl From<Rejection> for WalkError {
    fn from(r: Rejection) -> Self {
        WalkError::Rejected(r)
    }
}

impl From<SourceError> for WalkError {
    fn from(e: SourceError) -> Self {
        WalkError::Source(e)
    }
}

fn truncated(checker: &Checker, what: &str) -> WalkError {
    WalkError::Rejected(checker.reject(format!("{what}: the archive is truncated")))
}

/// Walks the tar `src` of `len` bytes header by header, reading headers and
/// extension records only.
pub(super) fn walk_file(src: &SourceFile, len: u64) -> Result<Summary, WalkError> {
    let mut checker = Checker::default();
    let mut block = [0u8; BLOCK];
    let mut pos = 0u64;
    let read_block = |block: &mut [u8; BLOCK], pos: u64, checker: &Checker| {
        if pos + BLOCK as u64 > len {
            let what = if checker.current().is_some() {
                "the file ends before the end-of-archive marker"
            } else {
                "not a tar archive: shorter than one 512-byte header"
            };
            return Err(truncated(checker, what));
        }
        src.read_exact_at(block, pos).map_err(WalkError::Source)
    };
    loop {
        read_block(&mut block, pos, &checker)?;
        let step = checker.header(&block, pos)?;
        pos += BLOCK as u64;
        let Step::Data {
            size,
            read,
            sparse_blocks,
        } = step
        else {
            return Ok(checker.finish()?);
        };
        if sparse_blocks {
            loop {
                read_block(&mut block, pos, &checker)?;
                pos += BLOCK as u64;
                if !sparse_continues(&block, false) {
                    break;
                }
            }
        }
        if pos.saturating_add(size) > len {
            return Err(truncated(
                &checker,
                &format!("its {size} bytes of data go past the end of the file ({len} bytes)"),
            ));
        }
        if let Some(ext) = read {
            let mut data = vec![0u8; size as usize];
            src.read_exact_at(&mut data, pos)?;
            checker.extension(ext, &data)?;
        }
        pos += padded(size);
    }
}

/// Where a [`StreamWalker`] is in the archive.
#[derive(Debug)]
enum State {
    /// Collecting a header block.
    Header,
    /// Collecting a GNU sparse extension block.
    Sparse { size: u64 },
    /// Collecting extension data, then skipping `pad` bytes.
    Extension {
        ext: Extension,
        want: usize,
        pad: u64,
    },
    /// Skipping member data and padding.
    Skip(u64),
    /// After the end-of-archive marker: the rest is ignored.
    Ended,
}

/// Checks a tar archive fed as a byte stream, in order.
#[derive(Debug)]
pub(crate) struct StreamWalker {
    checker: Checker,
    state: State,
    buf: Vec<u8>,
    /// Bytes of the stream taken so far.
    pos: u64,
}

impl Default for StreamWalker {
    fn default() -> Self {
        StreamWalker {
            checker: Checker::default(),
            state: State::Header,
            buf: Vec::with_capacity(BLOCK),
            pos: 0,
        }
    }
}

impl StreamWalker {
    /// Takes the next bytes of the archive.
    pub(crate) fn push(&mut self, mut data: &[u8]) -> Result<(), Rejection> {
        while !data.is_empty() {
            match self.state {
                State::Ended => return Ok(()),
                State::Skip(n) => {
                    let take = n.min(data.len() as u64);
                    data = &data[take as usize..];
                    self.pos += take;
                    self.state = if take == n {
                        State::Header
                    } else {
                        State::Skip(n - take)
                    };
                }
                State::Header | State::Sparse { .. } | State::Extension { .. } => {
                    let want = match self.state {
                        State::Extension { want, .. } => want,
                        _ => BLOCK,
                    };
                    let take = (want - self.buf.len()).min(data.len());
                    self.buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    self.pos += take as u64;
                    if self.buf.len() == want {
                        self.complete()?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A header, sparse block or extension record is complete in `buf`.
    fn complete(&mut self) -> Result<(), Rejection> {
        let buf = std::mem::take(&mut self.buf);
        self.state = match self.state {
            State::Header => {
                let block: &[u8; BLOCK] = buf[..].try_into().expect("a whole block was collected");
                let offset = self.pos - BLOCK as u64;
                match self.checker.header(block, offset)? {
                    Step::End => State::Ended,
                    Step::Data {
                        size,
                        sparse_blocks: true,
                        ..
                    } => State::Sparse { size },
                    Step::Data {
                        size,
                        read: Some(ext),
                        ..
                    } => State::Extension {
                        ext,
                        want: size as usize,
                        pad: padded(size) - size,
                    },
                    Step::Data { size, .. } => State::Skip(padded(size)),
                }
            }
            State::Sparse { size } => {
                let block: &[u8; BLOCK] = buf[..].try_into().expect("a whole block was collected");
                if sparse_continues(block, false) {
                    State::Sparse { size }
                } else {
                    State::Skip(padded(size))
                }
            }
            State::Extension { ext, pad, .. } => {
                self.checker.extension(ext, &buf)?;
                State::Skip(pad)
            }
            State::Skip(_) | State::Ended => unreachable!("no block is collected here"),
        };
        if matches!(self.state, State::Skip(0)) {
            self.state = State::Header;
        }
        self.buf = buf;
        self.buf.clear();
        Ok(())
    }

    /// The stream ended: the archive's verdict.
    pub(crate) fn finish(self) -> Result<Summary, Rejection> {
        match self.state {
            State::Ended => self.checker.finish(),
            State::Header if self.checker.current().is_none() => Err(Rejection {
                member: None,
                reason: "not a tar archive: shorter than one 512-byte header".into(),
            }),
            State::Header => Err(self.checker.reject(
                "the stream ends before the end-of-archive marker: the archive is truncated",
            )),
            _ => Err(self
                .checker
                .reject("the stream ends inside this member: the archive is truncated")),
        }
    }
}
