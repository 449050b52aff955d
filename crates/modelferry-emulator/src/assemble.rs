//! The import behind a complete call: concatenate the chunks in order into
//! `<data_dir>/models/<modelId>.tar`, hash it while writing, then check it is
//! a tar archive the way the platform validates imports. Runs on a blocking
//! thread tracked by the emulator, so stopping the server waits for it.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::persist::{self, Outcome};
use super::state::Emulator;
use super::wire::ImportStatus;

/// Starts the assembly of a completed session in the background.
pub(crate) fn spawn(emu: &Arc<Emulator>, session_id: String) {
    let emu2 = Arc::clone(emu);
    emu.tracker.spawn_blocking(move || run(&emu2, &session_id));
}

fn run(emu: &Emulator, session_id: &str) {
    let (Some(dir), Some((model_id, total))) = (&emu.data_dir, emu.assembly_input(session_id))
    else {
        return;
    };
    let outcome = match concatenate(dir, session_id, &model_id, total) {
        Ok((size, sha256)) => {
            let (status, message) = match validate_tar(&persist::model_path(dir, &model_id)) {
                Ok(()) => (ImportStatus::Success, None),
                Err(why) => (
                    ImportStatus::Failed,
                    Some(format!("invalid model archive: {why}")),
                ),
            };
            Outcome {
                status,
                message,
                assembled_size: Some(size),
                assembled_sha256: Some(sha256),
            }
        }
        Err(err) => Outcome {
            status: ImportStatus::Failed,
            message: Some(format!("import failed: cannot assemble the chunks: {err}")),
            assembled_size: None,
            assembled_sha256: None,
        },
    };
    emu.finish_import(session_id, outcome);
}

/// Writes chunks `0..total` in order into the model file; answers its size
/// and sha256 (hex).
fn concatenate(
    dir: &Path,
    session_id: &str,
    model_id: &str,
    total: u64,
) -> io::Result<(u64, String)> {
    let dest = persist::model_path(dir, model_id);
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    let tmp = dest.with_extension("tar.tmp");
    let mut out = File::create(&tmp)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    for n in 0..total {
        let mut chunk = File::open(persist::chunk_path(dir, session_id, n))?;
        loop {
            let read = chunk.read(&mut buf)?;
            if read == 0 {
                break;
            }
            hasher.update(&buf[..read]);
            out.write_all(&buf[..read])?;
            size += read as u64;
        }
    }
    out.flush()?;
    drop(out);
    fs::rename(&tmp, &dest)?;
    Ok((size, hex::encode(hasher.finalize())))
}

/// Reads the archive through: every header must parse, every entry's data
/// must be all there, and there must be at least one entry. A gzip file
/// (by its magic bytes) is inflated first, its CRC checked: the platform
/// imports `.tar.gz` too.
pub(crate) fn validate_tar(path: &Path) -> Result<(), String> {
    let mut file = BufReader::new(File::open(path).map_err(|e| e.to_string())?);
    let gzip = io::BufRead::fill_buf(&mut file)
        .map_err(|e| e.to_string())?
        .starts_with(&[0x1f, 0x8b]);
    if gzip {
        let inflated = flate2::bufread::MultiGzDecoder::new(file);
        return entries(tar::Archive::new(BufReader::new(inflated)))
            .map_err(|e| format!("gzip archive: {e}"));
    }
    entries(tar::Archive::new(file))
}

fn entries<R: io::Read>(mut archive: tar::Archive<R>) -> Result<(), String> {
    let mut count = 0u64;
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| format!("entry {count}: {e}"))?;
        let name = entry
            .path()
            .map_err(|e| format!("entry {count}: bad path: {e}"))?
            .display()
            .to_string();
        let declared = entry.size();
        let read = io::copy(&mut entry, &mut io::sink()).map_err(|e| format!("{name}: {e}"))?;
        if read != declared {
            return Err(format!("{name}: truncated ({read} of {declared} bytes)"));
        }
        count += 1;
    }
    if count == 0 {
        return Err("the archive has no entries".to_owned());
    }
    // Read what follows the end marker too: a gzip stream's CRC and
    // length are checked at its very end.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_bytes(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn check(bytes: &[u8]) -> Result<(), String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.tar");
        fs::write(&p, bytes).unwrap();
        validate_tar(&p)
    }

    #[test]
    fn accepts_a_real_archive() {
        let data = vec![7u8; 3000];
        check(&tar_bytes(&[
            ("config.json", b"{}"),
            ("weights.bin", &data),
        ]))
        .unwrap();
    }

    #[test]
    fn refuses_garbage_empty_and_truncated_archives() {
        assert!(check(&[0x5a; 2048]).is_err());
        assert!(check(&tar_bytes(&[])).unwrap_err().contains("no entries"));
        assert!(check(b"").unwrap_err().contains("no entries"));
        let data = vec![7u8; 3000];
        let full = tar_bytes(&[("weights.bin", &data)]);
        let err = check(&full[..1500]).unwrap_err();
        assert!(err.contains("weights.bin"), "{err}");
    }

    #[test]
    fn inflates_a_gzip_archive_and_checks_its_crc() {
        use std::io::Write;
        let data = vec![7u8; 3000];
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&tar_bytes(&[("weights.bin", &data)])).unwrap();
        let mut gz = e.finish().unwrap();
        check(&gz).unwrap();
        let n = gz.len();
        gz[n - 6] ^= 1;
        assert!(check(&gz).unwrap_err().contains("gzip archive"));
    }
}
