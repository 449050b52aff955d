//! `modelferry check`: every problem `run` would meet, found without
//! changing anything: the configuration (types included), the drop, done
//! and failed folders, the state folder being writable, the API key.

use std::io::ErrorKind;
use std::path::Path;

use super::{folders, read, Config};

impl Config {
    /// Reads `path` as `run` would and looks at everything `run` needs.
    /// Returns the configuration when it could be read at all, and every
    /// problem found (empty: `run` would start).
    pub fn check(path: &Path) -> (Option<Config>, Vec<String>) {
        let loaded = match read(path, None) {
            Ok(loaded) => loaded,
            Err(e) => return (None, vec![e.to_string()]),
        };
        let mut problems = loaded.problems;
        let config = loaded.config;
        problems.extend(folders::run_problems(&config.watch, loaded.watch_given));
        for (i, w) in config.watch.iter().enumerate() {
            for (key, dir) in [("done_dir", &w.done_dir), ("failed_dir", &w.failed_dir)] {
                if let Err(e) = writable(dir) {
                    problems.push(format!("watch[{i}].{key}: {e}"));
                }
            }
        }
        if let Err(e) = writable(&config.state.dir) {
            problems.push(format!("state.dir: {e}"));
        } else {
            let db = config.database_path();
            if let Err(e) = db_writable(&db) {
                problems.push(format!("state.dir: {}: {e}", db.display()));
            }
        }
        if !config.platform.emulate {
            if config.platform.base_url.is_none() {
                problems.push("platform.base_url: missing (or set platform.emulate = true)".into());
            }
            if let Err(e) = config.load_api_key() {
                problems.push(e.to_string());
            }
        }
        // Each problem names its key; the file is named once, by the caller.
        (Some(config), problems)
    }
}

/// Whether files can be made in `dir`, or `dir` made where it is missing
/// (as `run` makes it): the nearest folder that exists must take a new file.
fn writable(dir: &Path) -> Result<(), String> {
    let mut at = dir;
    loop {
        match std::fs::metadata(at) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => return Err(format!("{} is not a folder", at.display())),
            Err(e) if e.kind() == ErrorKind::NotFound => match at.parent() {
                Some(parent) => at = parent,
                None => return Err(format!("{}: {e}", dir.display())),
            },
            Err(e) => return Err(format!("cannot use {}: {e}", at.display())),
        }
    }
    // A file made and removed at once: the one sure test of permissions
    // (ACLs, read-only mounts, another owner).
    match tempfile::Builder::new()
        .prefix(".modelferry-check")
        .tempfile_in(at)
    {
        Ok(_) => Ok(()),
        Err(e) if at == dir => Err(format!("{} is not writable: {e}", dir.display())),
        Err(e) => Err(format!(
            "{} does not exist and cannot be made in {}: {e}",
            dir.display(),
            at.display()
        )),
    }
}

/// An existing database must be writable; a missing one is made by `run`.
fn db_writable(db: &Path) -> Result<(), String> {
    match std::fs::OpenOptions::new().append(true).open(db) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot write it: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_problem_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.toml");
        let blocker = dir.path().join("blocker");
        std::fs::write(&blocker, b"").unwrap();
        std::fs::write(
            &file,
            format!(
                "[platform]\nbase_url = \"http://127.0.0.1:1\"\napi_key_file = \"{d}/no-key\"\n\
                 [upload]\nparallel_chunks = \"four\"\n\
                 [state]\ndir = \"{d}/blocker/state\"\n\
                 [[watch]]\ndir = \"{d}/missing\"\ndone_dir = \"{d}/done\"\nfailed_dir = \"{d}/failed\"\n",
                d = dir.path().display()
            ),
        )
        .unwrap();
        let (config, problems) = Config::check(&file);
        assert!(config.is_some());
        let all = problems.join("\n");
        for key in [
            "upload.parallel_chunks",
            "watch[0].dir",
            "state.dir",
            "no-key",
        ] {
            assert!(all.contains(key), "{key} not in:\n{all}");
        }
    }

    #[test]
    fn a_folder_that_can_be_made_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(writable(&dir.path().join("a/b")), Ok(()));
        assert_eq!(writable(dir.path()), Ok(()));
    }
}
