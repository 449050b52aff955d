//! The source file of a job: its identity and positioned reads of its chunks.
//!
//! A file's identity is (device, inode, size, mtime): the same identity means
//! the same file, unchanged. Files are opened without following symbolic
//! links, and every read checks the open file still has the identity the job
//! was planned with, so a file rewritten mid-upload is noticed.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What makes a file the same file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
}

impl FileIdentity {
    pub fn of(meta: &Metadata) -> Self {
        FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        }
    }

    /// The identity of the file at `path`, not following a symbolic link.
    pub fn of_path(path: &Path) -> io::Result<Self> {
        Ok(Self::of(&std::fs::symlink_metadata(path)?))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a regular file")]
    NotRegular { path: PathBuf },
    #[error(
        "{path}: the file changed since it was taken (size, modification time or inode differ)"
    )]
    Changed { path: PathBuf },
    #[error("{path}: the file disappeared before the import finished")]
    Gone { path: PathBuf },
    #[error("{path}: the file is empty; there is nothing to import")]
    Empty { path: PathBuf },
    #[error("{path}: chunk {index} changed since it was uploaded (its sha256 differs)")]
    ChunkChanged { path: PathBuf, index: u64 },
}

impl SourceError {
    pub fn io(path: &Path, source: io::Error) -> Self {
        let path = path.to_path_buf();
        if source.kind() == io::ErrorKind::NotFound {
            return SourceError::Gone { path };
        }
        SourceError::Io { path, source }
    }
}

/// An open source file whose identity is checked on every read.
pub struct SourceFile {
    file: File,
    path: PathBuf,
    identity: FileIdentity,
}

impl SourceFile {
    /// Opens `path` (never through a symbolic link) and checks it still has
    /// `expected` identity.
    pub fn open(path: &Path, expected: &FileIdentity) -> Result<Self, SourceError> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| SourceError::io(path, e))?;
        let meta = file.metadata().map_err(|e| SourceError::io(path, e))?;
        if !meta.file_type().is_file() {
            return Err(SourceError::NotRegular {
                path: path.to_path_buf(),
            });
        }
        let src = SourceFile {
            file,
            path: path.to_path_buf(),
            identity: *expected,
        };
        src.check_meta(&meta)?;
        Ok(src)
    }

    fn check_meta(&self, meta: &Metadata) -> Result<(), SourceError> {
        if FileIdentity::of(meta) != self.identity {
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
            Ok(id) if id == self.identity => Ok(()),
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
mod tests {
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
        assert!(SourceFile::open(&l, &id).is_err());
    }
}
