//! The tar corpus builder shared by pre-flight's unit tests and the
//! integration tests (included there with `#[path]`): archives made byte by
//! byte, where a writer would refuse to make them. Depends only on `tar` and
//! `flate2`, so it compiles in either place.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;

/// A raw ustar header: fields as given, never validated (a writer would
/// refuse `..` or absolute names).
pub fn header(name: &[u8], kind: u8, size: u64, link: &[u8]) -> [u8; 512] {
    let mut h = ::tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    h.set_entry_type(::tar::EntryType::new(kind));
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    *h.as_bytes()
}

/// Zeros up to the next 512-byte block.
pub fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(512) {
        out.push(0);
    }
}

/// One member: name, type byte, data, link target.
pub type Member<'a> = (&'a [u8], u8, &'a [u8], &'a [u8]);

/// An archive of `members`, with the end-of-archive marker.
pub fn archive(members: &[Member]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, data, link) in members {
        out.extend_from_slice(&header(name, *kind, data.len() as u64, link));
        out.extend_from_slice(data);
        pad(&mut out);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// `bytes`, gzip-compressed (one member).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A PAX record: `LEN key=value\n`, LEN counting itself.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = 3 + key.len() + value.len();
    let mut len = body + 1;
    while len.to_string().len() + body != len {
        len += 1;
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}
