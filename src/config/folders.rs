//! What `run` needs of the `[[watch]]` folders beyond their keys: drop folders
//! that exist, and folders that do not overlap. A drop folder watched twice
//! would give one file two jobs; a `done_dir` or `failed_dir` that is (or is
//! inside) a drop folder, or a drop folder inside one of them, would feed
//! filed tarballs back in. Paths are compared with symbolic links resolved.

use std::path::{Component, Path, PathBuf};

use super::WatchConfig;

/// Every problem `run` has with these folders; `given` is the number of
/// `[[watch]]` entries in the file (some may have been invalid).
pub(super) fn run_problems(watch: &[WatchConfig], given: usize) -> Vec<String> {
    let mut problems = Vec::new();
    if given == 0 {
        problems.push("watch: at least one [[watch]] folder is needed by `run`".to_string());
    }
    for (i, w) in watch.iter().enumerate() {
        match std::fs::metadata(&w.dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => problems.push(format!(
                "watch[{i}].dir: {} is not a folder",
                w.dir.display()
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => problems.push(format!(
                "watch[{i}].dir: {} is not an existing folder",
                w.dir.display()
            )),
            Err(e) => problems.push(format!(
                "watch[{i}].dir: cannot use {}: {e}",
                w.dir.display()
            )),
        }
    }
    problems.extend(overlaps(watch));
    problems
}

/// The overlapping folders among `watch`, each problem naming both keys.
fn overlaps(watch: &[WatchConfig]) -> Vec<String> {
    let resolved: Vec<[PathBuf; 3]> = watch
        .iter()
        .map(|w| {
            [
                resolve(&w.dir),
                resolve(&w.done_dir),
                resolve(&w.failed_dir),
            ]
        })
        .collect();
    let mut problems = Vec::new();
    for (i, [dir, ..]) in resolved.iter().enumerate() {
        for (j, [other, ..]) in resolved.iter().enumerate().skip(i + 1) {
            if dir == other {
                problems.push(format!(
                    "watch[{i}].dir and watch[{j}].dir are the same folder ({}): each file would be taken twice",
                    dir.display()
                ));
            }
        }
        for (j, [_, done, failed]) in resolved.iter().enumerate() {
            for (key, out) in [("done_dir", done), ("failed_dir", failed)] {
                if out == dir {
                    problems.push(format!(
                        "watch[{j}].{key} is the same folder as watch[{i}].dir ({}): filed tarballs would be taken again",
                        dir.display()
                    ));
                } else if out.starts_with(dir) {
                    problems.push(format!(
                        "watch[{j}].{key} ({}) is inside watch[{i}].dir ({}): keep filed tarballs out of drop folders",
                        out.display(),
                        dir.display()
                    ));
                } else if dir.starts_with(out) {
                    problems.push(format!(
                        "watch[{i}].dir ({}) is inside watch[{j}].{key} ({}): keep drop folders out of filing folders",
                        dir.display(),
                        out.display()
                    ));
                }
            }
        }
    }
    problems
}

/// `p` (absolute) with symbolic links resolved as far as it exists, and
/// `.`/`..` removed from the part that does not exist yet (a `done_dir` is
/// created on first use).
fn resolve(p: &Path) -> PathBuf {
    let mut existing = p;
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            let mut out = real;
            for c in rest.iter().rev() {
                match c {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::Normal(n) => out.push(n),
                    _ => {}
                }
            }
            return out;
        }
        match (existing.parent(), existing.components().next_back()) {
            (Some(parent), Some(last)) => {
                rest.push(last);
                existing = parent;
            }
            // Nothing of it exists (not even `/`): compare it as written.
            _ => return p.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dir: &Path, done: &Path, failed: &Path) -> WatchConfig {
        WatchConfig {
            dir: dir.to_path_buf(),
            done_dir: done.to_path_buf(),
            failed_dir: failed.to_path_buf(),
            file_context: "model".into(),
            is_adapter: false,
            include: Vec::new(),
            stable_for: std::time::Duration::from_secs(1),
            after_success: super::super::AfterSuccess::Move,
            poll_only: false,
        }
    }

    #[test]
    fn separate_folders_pass() {
        let t = tempfile::tempdir().unwrap();
        let p = |n: &str| t.path().join(n);
        std::fs::create_dir(p("a")).unwrap();
        std::fs::create_dir(p("b")).unwrap();
        // A shared done/failed folder is fine; it is not watched.
        let w = [
            entry(&p("a"), &p("done"), &p("failed")),
            entry(&p("b"), &p("done"), &p("failed")),
        ];
        assert_eq!(run_problems(&w, 2), Vec::<String>::new());
    }

    #[test]
    fn overlaps_are_found_through_links_and_dots() {
        let t = tempfile::tempdir().unwrap();
        let p = |n: &str| t.path().join(n);
        std::fs::create_dir(p("a")).unwrap();
        std::fs::create_dir(p("out")).unwrap();
        std::os::unix::fs::symlink(p("a"), p("link")).unwrap();
        let w = [
            entry(&p("a"), &p("link/../a/x/../done"), &p("f")),
            entry(&p("link"), &p("d2"), &p("out")),
            entry(&p("out/new/in"), &p("d3"), &p("f3")),
        ];
        let got = overlaps(&w).join("\n");
        assert!(
            got.contains("watch[0].dir and watch[1].dir are the same folder"),
            "{got}"
        );
        assert!(got.contains("watch[0].done_dir ("), "{got}");
        assert!(got.contains("is inside watch[0].dir"), "{got}");
        assert!(
            got.contains("watch[2].dir (") && got.contains("inside watch[1].failed_dir"),
            "{got}"
        );
        let same = [entry(&p("a"), &p("link"), &p("f"))];
        let got = overlaps(&same).join("\n");
        assert!(
            got.contains("watch[0].done_dir is the same folder as watch[0].dir"),
            "{got}"
        );
    }
}
