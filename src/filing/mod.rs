//! Filing finished files: receipts, and moves that never overwrite.
//!
//! This module owns the on-disk side of filing: choosing a free name in
//! `done_dir`/`failed_dir`, writing `NAME.receipt.json` or `NAME.error.json`
//! atomically, moving the tarball there (across filesystems too) and deleting
//! it. The daemon records the destination it chose before acting and may
//! repeat any step after a crash, so every operation is idempotent: a repeat
//! finds the work done or finishes it. None replaces a file it did not write.
//! Every name made from a file's name comes from [`names::derived_name`], so
//! it fits in `NAME_MAX` however long the file's name is. Errors name the
//! paths involved.

mod names;
mod of_job;

use std::fmt::Display;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use names::{derived_name, Derive, NAME_MAX};

/// `NAME.receipt.json`: what the platform imported.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SuccessReceipt {
    /// The platform's model id for the import.
    pub model_id: String,
    /// The dock status id that reported SUCCESS.
    pub dock_status_id: String,
    /// The last import session the file was uploaded through.
    pub session_id: String,
    /// The file's size in bytes.
    pub size: u64,
    /// Lowercase hex SHA-256 of the whole file.
    pub sha256: String,
    /// Chunks the file was cut into.
    pub chunks: u64,
    /// Always `"SUCCESS"`.
    pub status: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: String,
    /// The file's name in its drop folder, whole even where the receipt's
    /// own name had to be shortened.
    pub file: String,
    /// The job's id.
    pub job_id: i64,
    /// A duplicate (dedupe): the earlier job that imported the same bytes;
    /// `model_id` is that import's. Absent for a file uploaded itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<i64>,
}

/// `NAME.error.json`: why the import failed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorReceipt {
    /// What went wrong, in words.
    pub error: String,
    /// The step that failed (a [`Stage`](crate::job::Stage) name).
    pub stage: String,
    /// The platform's HTTP status with the failure, if it answered.
    pub http_status: Option<u16>,
    /// The platform's message with the failure, if it gave one.
    pub platform_message: Option<String>,
    /// The platform's model id, if a session had given one.
    pub model_id: Option<String>,
    /// The file's name in its drop folder.
    pub file: String,
    /// The job's id.
    pub job_id: i64,
    /// RFC 3339.
    pub failed_at: String,
}

const RECEIPT_SUFFIX: &str = ".receipt.json";
const ERROR_SUFFIX: &str = ".error.json";
const COPY_TEMP_SUFFIX: &str = ".modelferry-copy.tmp";
/// Gives up looking for a free name after this many suffixes.
const MAX_SUFFIX: u32 = 100_000;

/// An io::Error of the same kind that says what was being done to which path.
fn context(e: io::Error, what: impl Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// A destination path for `name` in `dir` such that neither `dir/NAME'` nor
/// its receipt nor its error receipt exists: `name` itself if free, else a
/// suffix before the extension chain: `m.tar.gz` -> `m-1.tar.gz`,
/// `m-2.tar.gz`, ... (shortened where needed, see [`derived_name`]). Never
/// returns a path that exists.
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
    for n in 0..=MAX_SUFFIX {
        let dest = if n == 0 {
            dir.join(name)
        } else {
            let infix = format!("-{n}");
            let numbered = Derive {
                infix: &infix,
                ..Derive::default()
            };
            dir.join(derived_name(name, &numbered))
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

/// The path beside `path` named [`derived_name`] of its name.
fn derived_path(path: &Path, d: &Derive) -> PathBuf {
    // Names reach filing as UTF-8 (the drop-folder watcher takes no other).
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    folder_of(path).join(derived_name(&name, d))
}

/// `dest` + `.receipt.json`, shortened where needed.
pub fn receipt_path(dest: &Path) -> PathBuf {
    let receipt = Derive {
        suffix: RECEIPT_SUFFIX,
        ..Derive::default()
    };
    derived_path(dest, &receipt)
}

/// `dest` + `.error.json`, shortened where needed.
pub fn error_path(dest: &Path) -> PathBuf {
    let error = Derive {
        suffix: ERROR_SUFFIX,
        ..Derive::default()
    };
    derived_path(dest, &error)
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
    // O_DIRECTORY: whatever took the folder's name (a FIFO) is refused, not waited on.
    let result = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NONBLOCK)
        .open(dir)
        .and_then(|d| d.sync_all());
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
    let (tmp, mut file) = create_temp_beside(path).map_err(|e| {
        context(
            e,
            format_args!("writing {}: creating a temporary file", path.display()),
        )
    })?;
    let written = file
        .write_all(&bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(context(e, format_args!("writing {}", path.display())));
    }
    sync_dir(dir)
}

/// A new file beside `path` named `.NAME.XXXXXXXX.tmp` (shortened where
/// needed): hidden and `.tmp`, so never taken for a model even in a drop
/// folder; a random part so concurrent writers never share one.
fn create_temp_beside(path: &Path) -> io::Result<(PathBuf, File)> {
    let mut last = None;
    for _ in 0..16 {
        let tag = format!(".{:08x}.tmp", fastrand::u32(..));
        let tmp = derived_path(
            path,
            &Derive {
                prefix: ".",
                suffix: &tag,
                ..Derive::default()
            },
        );
        // Like any new file: 0666 less the umask.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::ErrorKind::AlreadyExists.into()))
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
    let copy = Derive {
        prefix: ".",
        suffix: COPY_TEMP_SUFFIX,
        ..Derive::default()
    };
    derived_path(dst, &copy)
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
        // Never blocks on a FIFO swapped in for the file, and copies only
        // the file that was looked at.
        let (mut input, opened) = crate::source::open_regular(src)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        if (opened.dev(), opened.ino()) != (src_meta.dev(), src_meta.ino()) {
            return Err(io::Error::other(format!(
                "{} was replaced by another file",
                src.display()
            )));
        }
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
