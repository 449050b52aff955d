//! The gzip side of pre-flight: a push decoder that checks a gzip file's
//! framing (RFC 1952 header, CRC-32 and length trailer, one member or
//! several) and inflates its deflate stream into a tar
//! [`StreamWalker`](super::tar::StreamWalker).
//!
//! Bytes are pushed in file order, in pieces of any size, so the same
//! decoder serves the quick check before a session (the first bytes), the
//! check as chunks stream through the upload, and `upload --dry-run` (the
//! whole file). The framing is ours and the inflate is `flate2`'s raw
//! [`Decompress`] with the `rust_backend` (miniz_oxide): pure Rust, no C
//! zlib to build or ship in the package, and it is what `flate2` picks by
//! default; the benchmark reports what the check costs per GiB.

use flate2::{Crc, Decompress, FlushDecompress, Status};

use super::tar::StreamWalker;
use super::{Rejection, Summary};

/// The longest gzip header taken (a file name and comment included); real
/// ones are tens of bytes, and this bounds what a hostile one costs.
const MAX_HEADER: usize = 64 * 1024;
/// Inflated bytes handed to the tar walker at a time.
const OUT: usize = 64 * 1024;

const FHCRC: u8 = 1 << 1;
const FEXTRA: u8 = 1 << 2;
const FNAME: u8 = 1 << 3;
const FCOMMENT: u8 = 1 << 4;

fn rejected(reason: impl Into<String>) -> Rejection {
    Rejection {
        member: None,
        reason: reason.into(),
    }
}

/// The length of the gzip member header at the start of `buf`: `Ok(None)`
/// while more bytes are needed.
pub(super) fn header_len(buf: &[u8]) -> Result<Option<usize>, Rejection> {
    if buf.first().is_some_and(|&b| b != 0x1f) || buf.get(1).is_some_and(|&b| b != 0x8b) {
        return Err(rejected(
            "not a gzip file: it does not start with the gzip magic bytes",
        ));
    }
    if buf.len() < 10 {
        return Ok(None);
    }
    if buf[2] != 8 {
        return Err(rejected(format!(
            "gzip header: compression method {} is not deflate",
            buf[2]
        )));
    }
    let flags = buf[3];
    if flags & 0xe0 != 0 {
        return Err(rejected("gzip header: reserved flag bits are set"));
    }
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let Some(len) = buf.get(at..at + 2) else {
            return Ok(None);
        };
        at += 2 + u16::from_le_bytes([len[0], len[1]]) as usize;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            match buf
                .get(at..)
                .and_then(|rest| rest.iter().position(|&b| b == 0))
            {
                Some(nul) => at += nul + 1,
                None => return Ok(None),
            }
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    Ok((buf.len() >= at).then_some(at))
}

#[derive(Debug)]
enum State {
    /// Collecting a member's header (the first, or one after a trailer).
    Header,
    Deflate,
    /// Collecting the 8-byte trailer.
    Trailer,
    /// A member is complete; only another member (or zero padding) may follow.
    Between,
}

/// Checks a gzip-compressed tar archive pushed in file order.
pub(crate) struct GzipStream {
    state: State,
    buf: Vec<u8>,
    inflate: Decompress,
    crc: Crc,
    out: Vec<u8>,
    tar: StreamWalker,
    /// Compressed bytes taken so far.
    pos: u64,
    members: u32,
}

impl Default for GzipStream {
    fn default() -> Self {
        GzipStream {
            state: State::Header,
            buf: Vec::new(),
            inflate: Decompress::new(false),
            crc: Crc::new(),
            out: vec![0; OUT],
            tar: StreamWalker::default(),
            pos: 0,
            members: 0,
        }
    }
}

impl GzipStream {
    /// Bytes of the file taken so far.
    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    /// Takes the next bytes of the file.
    pub(crate) fn push(&mut self, mut data: &[u8]) -> Result<(), Rejection> {
        while !data.is_empty() {
            let before = data.len();
            match self.state {
                State::Header => {
                    let take = data.len().min(MAX_HEADER + 1 - self.buf.len());
                    let old = self.buf.len();
                    self.buf.extend_from_slice(&data[..take]);
                    match header_len(&self.buf)? {
                        Some(len) => {
                            data = &data[len - old..];
                            self.buf.clear();
                            self.state = State::Deflate;
                        }
                        None if self.buf.len() > MAX_HEADER => {
                            return Err(rejected(format!(
                                "gzip header: longer than {MAX_HEADER} bytes"
                            )))
                        }
                        None => data = &data[take..],
                    }
                }
                State::Deflate => data = self.inflate_some(data)?,
                State::Trailer => {
                    let take = (8 - self.buf.len()).min(data.len());
                    self.buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.buf.len() == 8 {
                        self.check_trailer()?;
                    }
                }
                State::Between => {
                    if data[0] == 0x1f {
                        self.state = State::Header;
                    } else if data.iter().all(|&b| b == 0) {
                        // Zero padding after the last member (tape blocking).
                        data = &[];
                    } else {
                        return Err(rejected(format!(
                            "unexpected bytes after the end of the gzip stream (at byte {})",
                            self.pos
                        )));
                    }
                }
            }
            self.pos += (before - data.len()) as u64;
        }
        Ok(())
    }

    /// Inflates from `data` until it is used up or the member's deflate
    /// stream ends; returns what is left.
    fn inflate_some<'a>(&mut self, mut data: &'a [u8]) -> Result<&'a [u8], Rejection> {
        let start = self.pos;
        loop {
            let (in0, out0) = (self.inflate.total_in(), self.inflate.total_out());
            let status = self
                .inflate
                .decompress(data, &mut self.out, FlushDecompress::None)
                .map_err(|e| {
                    rejected(format!(
                        "the gzip stream is corrupt (deflate error after byte {start}: {e})"
                    ))
                })?;
            let used = (self.inflate.total_in() - in0) as usize;
            let made = (self.inflate.total_out() - out0) as usize;
            data = &data[used..];
            self.crc.update(&self.out[..made]);
            self.tar.push(&self.out[..made])?;
            if status == Status::StreamEnd {
                self.state = State::Trailer;
                return Ok(data);
            }
            // Stop when the input is used up and the output drained, or
            // when nothing moves (more input is needed).
            if (used == 0 && made == 0) || (data.is_empty() && made < self.out.len()) {
                return Ok(data);
            }
        }
    }

    fn check_trailer(&mut self) -> Result<(), Rejection> {
        let crc = u32::from_le_bytes(self.buf[..4].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(self.buf[4..8].try_into().expect("4 bytes"));
        if crc != self.crc.sum() {
            return Err(rejected(format!(
                "the gzip stream is corrupt: its CRC-32 is {:08x}, the data's is {:08x}",
                crc,
                self.crc.sum()
            )));
        }
        if len != self.crc.amount() {
            return Err(rejected(format!(
                "the gzip stream is corrupt: it says {len} bytes (mod 2^32), the data is {}",
                self.crc.amount()
            )));
        }
        self.members += 1;
        self.buf.clear();
        self.inflate.reset(false);
        self.crc.reset();
        self.state = State::Between;
        Ok(())
    }

    /// The file ended: its verdict (gzip framing, then the tar inside).
    pub(crate) fn finish(self) -> Result<Summary, Rejection> {
        match self.state {
            State::Between => {}
            State::Header if self.members == 0 && self.pos == 0 => {
                return Err(rejected("not a gzip file: it is empty"))
            }
            _ => {
                return Err(rejected(format!(
                    "the gzip stream is truncated: the file ends at byte {} inside it",
                    self.pos
                )))
            }
        }
        let mut summary = self.tar.finish()?;
        summary.gzip_members = Some(self.members);
        Ok(summary)
    }
}
