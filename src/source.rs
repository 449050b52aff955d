//! The source file of a job: its identity and positioned reads of its chunks.
//!
//! A file's identity is (device, inode, size, mtime): the same identity means
//! the same file, unchanged. [`open_regular`] is the one way a file taken
//! from a drop folder is opened: never through a symbolic link, never
//! blocking (a FIFO swapped in for a file would otherwise block `open` until
//! a writer came), and only if the opened descriptor is a regular file.
//! Every read checks the open file still has the identity the job was
//! planned with, so a file rewritten mid-upload is noticed.

use std::fs::{File, FileType, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What makes a file the same file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    /// The device the file is on; 0: not recorded (see [`FileIdentity::matches`]).
    pub dev: u64,
    /// The inode number.
    pub ino: u64,
    /// The size in bytes.
    pub size: u64,
    /// The modification time, in nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
}

impl FileIdentity {
    /// The identity `meta` describes.
    pub fn of(meta: &Metadata) -> Self {
        FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        }
    }

    /// Whether `seen` (the file as it is now) is the file this identity
    /// recorded. A device number of 0 means "not recorded": fleet mode
    /// keeps none, since a file on a network file system has a different
    /// one on each host (no mounted file system has device 0).
    pub fn matches(&self, seen: &FileIdentity) -> bool {
        (self.dev == 0 || self.dev == seen.dev)
            && (self.ino, self.size, self.mtime_ns) == (seen.ino, seen.size, seen.mtime_ns)
    }

    /// The identity of the file at `path`, not following a symbolic link.
    pub fn of_path(path: &Path) -> io::Result<Self> {
        Ok(Self::of(&std::fs::symlink_metadata(path)?))
    }
}

/// A source file that cannot be read as planned; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// An I/O error other than the file being gone.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Not a regular file (a FIFO, a device, a symbolic link, ...).
    #[error("{path}: not a regular file ({kind}); only regular files are imported")]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is instead, in words ("a FIFO").
        kind: &'static str,
    },
    /// The file no longer has the identity it was taken with.
    #[error(
        "{path}: the file changed since it was taken (size, modification time or inode differ)"
    )]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// The file is no longer there.
    #[error("{path}: the file disappeared before the import finished")]
    Gone {
        /// The file.
        path: PathBuf,
    },
    /// The file has no bytes to import.
    #[error("{path}: the file is empty; there is nothing to import")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A chunk read again on resume does not match the checksum recorded
    /// when it was acknowledged.
    #[error("{path}: chunk {index} changed since it was uploaded (its checksum differs)")]
    ChunkChanged {
        /// The file.
        path: PathBuf,
        /// The chunk's index.
        index: u64,
    },
}

impl SourceError {
    /// The error for `source` while reading `path`: [`SourceError::Gone`]
    /// when the file is not found, else [`SourceError::Io`].
    pub fn io(path: &Path, source: io::Error) -> Self {
        let path = path.to_path_buf();
        if source.kind() == io::ErrorKind::NotFound {
            return SourceError::Gone { path };
        }
        SourceError::Io { path, source }
    }
}

/// What a file that is not a regular file is, for error messages.
fn kind_of(t: FileType) -> &'static str {
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_dir() {
        "a folder"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "a special file"
    }
}

fn not_regular(path: &Path, t: FileType) -> SourceError {
    SourceError::NotRegular {
        path: path.to_path_buf(),
        kind: kind_of(t),
    }
}

/// Opens `path` read-only if it is a regular file, without blocking and
/// without following a symbolic link; returns it with its `fstat`.
///
/// The `lstat` first keeps special files from being opened at all (opening
/// a device can have effects); the name can still be swapped between the
/// two calls, so the open never blocks (`O_NONBLOCK`: a FIFO opens at once
/// instead of waiting for a writer) and the descriptor's own type decides.
/// `O_NONBLOCK` stays set: it has no effect on a regular file's reads.
pub fn open_regular(path: &Path) -> Result<(File, Metadata), SourceError> {
    let before = std::fs::symlink_metadata(path).map_err(|e| SourceError::io(path, e))?;
    if !before.file_type().is_file() {
        return Err(not_regular(path, before.file_type()));
    }
    open_checked(path)
}

/// The open and `fstat` of [`open_regular`], safe on whatever the name holds.
fn open_checked(path: &Path) -> Result<(File, Metadata), SourceError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            // A symbolic link (O_NOFOLLOW) or a socket swapped in since the lstat.
            Some(libc::ELOOP) => SourceError::NotRegular {
                path: path.to_path_buf(),
                kind: "a symbolic link",
            },
            Some(libc::ENXIO) => SourceError::NotRegular {
                path: path.to_path_buf(),
                kind: "a socket",
            },
            _ => SourceError::io(path, e),
        })?;
    let meta = file.metadata().map_err(|e| SourceError::io(path, e))?;
    if !meta.file_type().is_file() {
        return Err(not_regular(path, meta.file_type()));
    }
    Ok((file, meta))
}

/// An open source file whose identity is checked on every read.
pub struct SourceFile {
    file: File,
    path: PathBuf,
    identity: FileIdentity,
}

impl SourceFile {
    /// Opens `path` with [`open_regular`] and checks it still has
    /// `expected` identity.
    pub fn open(path: &Path, expected: &FileIdentity) -> Result<Self, SourceError> {
        let (file, meta) = open_regular(path)?;
        let src = SourceFile {
            file,
            path: path.to_path_buf(),
            identity: *expected,
        };
        src.check_meta(&meta)?;
        Ok(src)
    }

    fn check_meta(&self, meta: &Metadata) -> Result<(), SourceError> {
        if !self.identity.matches(&FileIdentity::of(meta)) {
            return Err(SourceError::Changed {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    /// Checks the open file and the name in its folder are still the file
    /// the job was planned with.
    pub fn check_unchanged(&self) -> Result<(), SourceError> {
        let meta = self
            .file
            .metadata()
            .map_err(|e| SourceError::io(&self.path, e))?;
        self.check_meta(&meta)?;
        match FileIdentity::of_path(&self.path) {
            Ok(id) if self.identity.matches(&id) => Ok(()),
            Ok(_) => Err(SourceError::Changed {
                path: self.path.clone(),
            }),
            Err(e) => Err(SourceError::io(&self.path, e)),
        }
    }

    /// Reads `buf.len()` bytes at `offset` with positioned reads (no shared
    /// cursor, so reads need no lock), then checks the file did not change.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), SourceError> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| SourceError::io(&self.path, e))?;
        let meta = self
            .file
            .metadata()
            .map_err(|e| SourceError::io(&self.path, e))?;
        self.check_meta(&meta)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn notices_a_change_between_reads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.tar");
        std::fs::write(&p, b"hello world").unwrap();
        let id = FileIdentity::of_path(&p).unwrap();
        let src = SourceFile::open(&p, &id).unwrap();
        let mut buf = [0u8; 5];
        src.read_exact_at(&mut buf, 6).unwrap();
        assert_eq!(&buf, b"world");
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"!").unwrap();
        drop(f);
        assert!(matches!(
            src.read_exact_at(&mut buf, 0),
            Err(SourceError::Changed { .. })
        ));
    }

    #[test]
    fn never_follows_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.tar");
        std::fs::write(&p, b"x").unwrap();
        let l = dir.path().join("l.tar");
        std::os::unix::fs::symlink(&p, &l).unwrap();
        let id = FileIdentity::of_path(&p).unwrap();
        assert!(matches!(
            SourceFile::open(&l, &id),
            Err(SourceError::NotRegular { .. })
        ));
    }

    /// Makes a FIFO at `path` (with mkfifo(1): this crate has no unsafe code).
    pub(crate) fn mkfifo(path: &Path) {
        let status = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .expect("mkfifo runs");
        assert!(status.success(), "mkfifo {}", path.display());
    }

    /// Runs `f` on a thread and fails the test if it has not returned in
    /// time: a blocking open must show as a failure, not a hung test.
    fn within_5s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("returned without blocking")
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.tar");
        std::fs::write(&p, b"data").unwrap();
        let id = FileIdentity::of_path(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        mkfifo(&p);
        let p2 = p.clone();
        let e = within_5s(move || SourceFile::open(&p2, &id).err());
        let e = e.expect("refused");
        assert!(
            matches!(e, SourceError::NotRegular { kind: "a FIFO", .. }),
            "{e}"
        );
        let m = e.to_string();
        assert!(
            m.contains("not a regular file") && m.contains("a.tar"),
            "{m}"
        );
        // A FIFO swapped in after the lstat: the open does not wait for a
        // writer, and the descriptor's own type refuses it.
        let p2 = p.clone();
        let e = within_5s(move || open_checked(&p2).err()).expect("refused");
        assert!(matches!(e, SourceError::NotRegular { .. }), "{e}");
    }

    #[test]
    fn a_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = open_regular(dir.path()).expect_err("a folder");
        assert!(
            matches!(
                e,
                SourceError::NotRegular {
                    kind: "a folder",
                    ..
                }
            ),
            "{e}"
        );
    }
}
