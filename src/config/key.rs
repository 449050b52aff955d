//! Finding the secrets: the API key (`MODELFERRY_API_KEY`, else the systemd
//! credential `api-key`, else `platform.api_key_file`) and, in fleet mode,
//! the database password (the systemd credential `db-password`, else
//! `state.password_file`). A secret file is read only if it is a regular
//! file, and only its first few KiB: a path such as `/dev/zero` or a FIFO by
//! mistake must give an error, not fill memory or hang.

use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::{Config, ConfigError, API_KEY_CREDENTIAL, API_KEY_ENV, DB_PASSWORD_CREDENTIAL};
use crate::secret::Secret;

/// The most a key file may hold: keys are well under 100 bytes, and 4 KiB
/// leaves room for any token format plus trailing whitespace.
const MAX_KEY_FILE: u64 = 4096;

impl Config {
    /// Finds the API key: `MODELFERRY_API_KEY`, else the systemd credential
    /// `api-key`, else `platform.api_key_file`.
    pub fn load_api_key(&self) -> Result<Secret, ConfigError> {
        if let Ok(v) = std::env::var(API_KEY_ENV) {
            let s = Secret::new(v);
            if !s.is_empty() {
                return Ok(s);
            }
        }
        if let Some(p) = credential(API_KEY_CREDENTIAL) {
            return read_key_file(&p, || {
                format!("the systemd credential \"{API_KEY_CREDENTIAL}\"")
            });
        }
        if let Some(p) = &self.platform.api_key_file {
            return read_key_file(p, || {
                format!("platform.api_key_file in {}", self.source.display())
            });
        }
        Err(ConfigError::MissingApiKey {
            file: self.source.clone(),
        })
    }

    /// The fleet database's password: the systemd credential `db-password`,
    /// else `state.password_file`; `None` when neither is given (the
    /// database then authenticates otherwise, e.g. by certificate).
    pub fn load_db_password(&self) -> Result<Option<Secret>, ConfigError> {
        let (path, origin) = match (
            credential(DB_PASSWORD_CREDENTIAL),
            &self.state.password_file,
        ) {
            (Some(p), _) => (
                p,
                format!("the systemd credential \"{DB_PASSWORD_CREDENTIAL}\""),
            ),
            (None, Some(p)) => (
                p.clone(),
                format!("state.password_file in {}", self.source.display()),
            ),
            (None, None) => return Ok(None),
        };
        read_secret_file(&path, Secret::PASSWORD, |detail| {
            ConfigError::PasswordFile {
                path: path.clone(),
                origin: origin.clone(),
                detail,
            }
        })
        .map(Some)
    }
}

/// The file of systemd credential `name`, if the service was given it.
fn credential(name: &str) -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY")?;
    let p = Path::new(&dir).join(name);
    p.symlink_metadata().is_ok().then_some(p)
}

/// Reads the key from `path`; `origin` says where that path came from.
fn read_key_file(path: &Path, origin: impl Fn() -> String) -> Result<Secret, ConfigError> {
    read_secret_file(path, "API key", |detail| ConfigError::ApiKeyFile {
        path: path.to_path_buf(),
        origin: origin(),
        detail,
    })
}

/// Reads a secret (`what`: "API key", "database password") from `path`;
/// `err` makes the error naming the file (never its content).
fn read_secret_file(
    path: &Path,
    what: &str,
    err: impl Fn(String) -> ConfigError,
) -> Result<Secret, ConfigError> {
    // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused
    // below like every file that is not regular.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| err(e.to_string()))?;
    let meta = file.metadata().map_err(|e| err(e.to_string()))?;
    if !meta.is_file() {
        return Err(err("not a regular file".into()));
    }
    let mut text = Vec::new();
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut text)
        .map_err(|e| err(e.to_string()))?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(err(format!(
            "larger than {MAX_KEY_FILE} bytes; it should hold only the {what}"
        )));
    }
    let text = String::from_utf8(text).map_err(|_| err("not UTF-8 text".into()))?;
    if meta.permissions().mode() & 0o004 != 0 {
        tracing::warn!(path = %path.display(), "the {what} file is readable by every user; chmod 600 it (or use LoadCredential=)");
    }
    let s = Secret::new(text);
    if s.is_empty() {
        return Err(err("the file is empty".into()));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(path: &Path) -> String {
        read_key_file(path, || "platform.api_key_file in /etc/m.toml".into())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn reads_a_small_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "kg-abc\n").unwrap();
        let s = read_key_file(&key, String::new).unwrap();
        assert_eq!(s.expose(), "kg-abc");
    }

    #[test]
    fn refuses_devices_fifos_folders_and_large_files() {
        let m = message(Path::new("/dev/zero"));
        assert!(
            m.contains("/dev/zero") && m.contains("not a regular file"),
            "{m}"
        );
        assert!(m.contains("platform.api_key_file in /etc/m.toml"), "{m}");
        let dir = tempfile::tempdir().unwrap();
        let m = message(dir.path());
        assert!(m.contains("not a regular file"), "{m}");
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success(), "mkfifo");
        let m = message(&fifo);
        assert!(m.contains("not a regular file"), "{m}");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'k'; 1 << 20]).unwrap();
        let m = message(&big);
        assert!(
            m.contains("larger than 4096 bytes") && m.contains("big"),
            "{m}"
        );
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert!(message(&empty).contains("empty"));
    }
}
