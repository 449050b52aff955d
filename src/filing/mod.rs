//! Filing finished files: receipts, and moves that never overwrite.
//!
//! This module owns the on-disk side of filing: choosing a free name in
//! `done_dir`/`failed_dir`, writing `NAME.receipt.json` or `NAME.error.json`
//! atomically, moving the tarball there (across filesystems too) and deleting
//! it. The daemon records the destination it chose before acting and may
//! repeat any step after a crash, so every operation is idempotent: a repeat
//! finds the work done or finishes it. None replaces a file it did not write.
//! Errors name the paths involved.

use std::fmt::Display;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `NAME.receipt.json`: what the platform imported.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SuccessReceipt {
    pub model_id: String,
    pub dock_status_id: String,
    pub session_id: String,
    pub size: u64,
    pub sha256: String,
    pub chunks: u64,
    /// Always `"SUCCESS"`.
    pub status: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: String,
    /// The file's name in its drop folder.
    pub file: String,
    pub job_id: i64,
}

/// `NAME.error.json`: why the import failed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorReceipt {
    pub error: String,
    pub stage: String,
    pub http_status: Option<u16>,
    pub platform_message: Option<String>,
    pub model_id: Option<String>,
    /// The file's name in its drop folder.
    pub file: String,
    pub job_id: i64,
    /// RFC 3339.
    pub failed_at: String,
}

const RECEIPT_SUFFIX: &str = ".receipt.json";
const ERROR_SUFFIX: &str = ".error.json";
/// Gives up looking for a free name after this many suffixes.
const MAX_SUFFIX: u32 = 100_000;

/// An io::Error of the same kind that says what was being done to which path.
fn context(e: io::Error, what: impl Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// A destination path for `name` in `dir` such that neither `dir/NAME'` nor
/// `dir/NAME'.receipt.json` nor `dir/NAME'.error.json` exists: `name` itself
/// if free, else a suffix before the extension chain: `m.tar.gz` ->
/// `m-1.tar.gz`, `m-2.tar.gz`, ... Never returns a path that exists.
pub fn free_destination(dir: &Path, name: &str) -> io::Result<PathBuf> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{name:?} is not a plain file name (choosing a name in {})",
                dir.display()
            ),
        ));
    }
    let (stem, extension) = split_extension(name);
    for n in 0..=MAX_SUFFIX {
        let dest = if n == 0 {
            dir.join(name)
        } else {
            dir.join(format!("{stem}-{n}{extension}"))
        };
        if !taken(&dest)? && !taken(&receipt_path(&dest))? && !taken(&error_path(&dest))? {
            return Ok(dest);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "no free name for {name} in {} after {MAX_SUFFIX} tries",
            dir.display()
        ),
    ))
}

/// Splits off the extension chain a suffix goes before: the last extension,
/// with `.tar` ahead of it (`m.tar.gz`, `m.tar.zst`). Only those, so dots in
/// a versioned name stay put: `llama-3.1-8b.tar.gz` -> `llama-3.1-8b-1.tar.gz`.
fn split_extension(name: &str) -> (&str, &str) {
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

/// Whether anything (even a dangling symbolic link) has this name.
fn taken(path: &Path) -> io::Result<bool> {
    lstat(path).map(|m| m.is_some())
}

fn lstat(path: &Path) -> io::Result<Option<Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(context(e, format_args!("checking {}", path.display()))),
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `dest` + `.receipt.json`.
pub fn receipt_path(dest: &Path) -> PathBuf {
    with_suffix(dest, RECEIPT_SUFFIX)
}

/// `dest` + `.error.json`.
pub fn error_path(dest: &Path) -> PathBuf {
    with_suffix(dest, ERROR_SUFFIX)
}

/// The folder a path is in (`.` for a bare name).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes a folder's entries (a rename, a new or removed name) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    let result = File::open(dir).and_then(|d| d.sync_all());
    match result {
        // Some filesystems cannot fsync a folder; they make no promise to keep.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOTSUP)) => Ok(()),
        other => other.map_err(|e| context(e, format_args!("syncing folder {}", dir.display()))),
    }
}

/// Writes JSON atomically: temp file in the same folder, write, fsync,
/// rename, fsync the folder. Replaces `path` if it exists (the caller only
/// passes paths it chose and recorded).
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let dir = folder_of(path);
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("encoding {}: {e}", path.display()),
        )
    })?;
    bytes.push(b'\n');
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    // Hidden and `.tmp`: never taken for a model even in a drop folder.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".tmp")
        // Like any new file: 0666 less the umask (tempfile's default is 0600).
        .permissions(fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(|e| {
            context(
                e,
                format_args!("writing {}: creating a temporary file", path.display()),
            )
        })?;
    tmp.write_all(&bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| context(e, format_args!("writing {}", path.display())))?;
    tmp.persist(path)
        .map_err(|e| context(e.error, format_args!("writing {}", path.display())))?;
    sync_dir(dir)
}

/// Moves `src` to `dst`: rename; across filesystems (EXDEV) copy to a temp
/// name in dst's folder, fsync, rename into place, fsync folder, then remove
/// src. Never overwrites an existing `dst` that is not the result of this
/// same move: if `src` is gone and `dst` exists, treat as already done (Ok);
/// if both exist, and it is a crash leftover of this move, finish by removing
/// src; otherwise error AlreadyExists. Creates `dst`'s folder if missing.
pub fn move_file(src: &Path, dst: &Path) -> io::Result<()> {
    let what = format!("moving {} to {}", src.display(), dst.display());
    let dst_dir = folder_of(dst);
    fs::create_dir_all(dst_dir)
        .map_err(|e| context(e, format_args!("{what}: creating {}", dst_dir.display())))?;
    let Some(src_meta) = lstat(src)? else {
        if taken(dst)? {
            return Ok(()); // Moved before a crash.
        }
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{what}: neither exists"),
        ));
    };
    if let Some(dst_meta) = lstat(dst)? {
        return finish_or_refuse(src, &src_meta, dst, &dst_meta, &what);
    }
    match place(src, dst) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Something took the name since we looked.
            return match lstat(dst)? {
                Some(dst_meta) => finish_or_refuse(src, &src_meta, dst, &dst_meta, &what),
                None => Err(context(e, &what)),
            };
        }
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            return copy_across(src, &src_meta, dst, &what);
        }
        Err(e) => return Err(context(e, &what)),
    }
    sync_dir(dst_dir)?;
    sync_dir(folder_of(src))
}

/// Puts `from` at `to` unless `to` exists (then AlreadyExists). A hard link
/// then unlink makes the no-overwrite check atomic; where hard links are not
/// possible (filesystems without them, `protected_hardlinks` on a file
/// owned by someone else) a rename after a check does, with a small window.
fn place(from: &Path, to: &Path) -> io::Result<()> {
    match fs::hard_link(from, to) {
        Ok(()) => fs::remove_file(from),
        Err(e)
            if e.kind() == io::ErrorKind::AlreadyExists
                || e.raw_os_error() == Some(libc::EXDEV) =>
        {
            Err(e)
        }
        Err(_) => {
            if taken(to)? {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            fs::rename(from, to)
        }
    }
}

/// Both `src` and `dst` exist. `dst` is this move's own leftover when it is
/// `src` itself (a crash between link and unlink) or a finished copy of it
/// (same size and modification time, which [`copy_across`] preserves): then
/// removing `src` finishes the move. Anything else is someone else's file.
fn finish_or_refuse(
    src: &Path,
    src_meta: &Metadata,
    dst: &Path,
    dst_meta: &Metadata,
    what: &str,
) -> io::Result<()> {
    let same_inode = src_meta.dev() == dst_meta.dev() && src_meta.ino() == dst_meta.ino();
    let copied = src_meta.file_type().is_file()
        && dst_meta.file_type().is_file()
        && src_meta.size() == dst_meta.size()
        && src_meta.mtime() == dst_meta.mtime()
        && src_meta.mtime_nsec() == dst_meta.mtime_nsec();
    if !(same_inode || copied) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{what}: {} already exists and is another file; not overwriting it",
                dst.display()
            ),
        ));
    }
    remove_file(src).map_err(|e| context(e, what))?;
    sync_dir(folder_of(dst))
}

/// The temporary name a copy is made under before it takes `dst`'s name.
/// Fixed, so a retry after a crash replaces its own leftover.
fn copy_temp_path(dst: &Path) -> PathBuf {
    let name = dst
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    folder_of(dst).join(format!(".{name}.modelferry-copy.tmp"))
}

/// The move across filesystems: copy to a temporary name beside `dst`
/// (keeping permissions and modification time), fsync, put it in place
/// without overwriting, fsync the folder, then remove `src`.
fn copy_across(src: &Path, src_meta: &Metadata, dst: &Path, what: &str) -> io::Result<()> {
    if !src_meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what}: not a regular file; cannot copy it"),
        ));
    }
    let tmp = copy_temp_path(dst);
    remove_file(&tmp)?;
    let copy = || -> io::Result<()> {
        let mut input = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(src)?;
        let mut output = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        let copied = io::copy(&mut input, &mut output)?;
        if copied != src_meta.size() {
            return Err(io::Error::other(format!(
                "{} changed while it was copied ({} bytes, expected {})",
                src.display(),
                copied,
                src_meta.size()
            )));
        }
        output.set_permissions(src_meta.permissions())?;
        output.set_modified(src_meta.modified()?)?;
        output.sync_all()
    };
    if let Err(e) = copy() {
        let _ = fs::remove_file(&tmp);
        return Err(context(
            e,
            format_args!("{what}: copying to {}", tmp.display()),
        ));
    }
    if let Err(e) = place(&tmp, dst) {
        let _ = fs::remove_file(&tmp);
        if e.kind() == io::ErrorKind::AlreadyExists {
            if let Some(dst_meta) = lstat(dst)? {
                return finish_or_refuse(src, src_meta, dst, &dst_meta, what);
            }
        }
        return Err(context(e, what));
    }
    sync_dir(folder_of(dst))?;
    remove_file(src).map_err(|e| context(e, what))
}

/// Deletes `path`; Ok if already gone.
pub fn remove_file(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(folder_of(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(context(e, format_args!("removing {}", path.display()))),
    }
}

#[cfg(test)]
mod tests;
