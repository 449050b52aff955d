//! Pre-flight's cost: the check of a sparse 32 GiB tar (headers only, so
//! milliseconds whatever the size), and the CPU that verifying a gzip
//! archive's whole stream (inflate, CRC, tar headers) costs per GiB. Both
//! call the library's `preflight::check_file` in this process, as
//! `upload --dry-run` does.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use flate2::write::GzEncoder;
use flate2::Compression;

use modelferry::preflight::{check_file, Depth};
use modelferry::source::FileIdentity;

use crate::measure;

/// Timed checks of the sparse tar (after one untimed warm-up).
const RUNS: usize = 5;

pub struct PreflightResult {
    pub sparse_size: u64,
    /// Median and slowest check of the sparse tar.
    pub sparse_median: Duration,
    pub sparse_max: Duration,
    /// The gzip file: its size, the tar inside, and the check's CPU seconds
    /// and wall seconds.
    pub gzip_bytes: u64,
    pub tar_bytes: u64,
    pub gzip_cpu_secs: f64,
    pub gzip_secs: f64,
}

impl PreflightResult {
    /// CPU seconds per GiB of the gzip file.
    pub fn cpu_per_gib(&self) -> f64 {
        self.gzip_cpu_secs / (self.gzip_bytes as f64 / (1u64 << 30) as f64)
    }
}

/// A tar of exactly `size` bytes (one member of `size - 1536` bytes, end
/// marker) written as a sparse file: only the header is on disk.
fn sparse_tar(path: &Path, size: u64) -> anyhow::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_path("model/weights.bin")?;
    h.set_size(size - 512 - 1024);
    h.set_mode(0o644);
    h.set_cksum();
    let mut f = File::create(path)?;
    f.set_len(size)?;
    f.write_all(h.as_bytes())?;
    Ok(())
}

/// A gzip-compressed tar of one member of `size` bytes of low-entropy
/// random data (6 bits a byte), so inflate does real Huffman decoding as it
/// would on model weights, not stored blocks.
fn gzip_tar(path: &Path, size: u64, seed: u64) -> anyhow::Result<u64> {
    let file = BufWriter::new(File::create(path)?);
    let mut gz = GzEncoder::new(file, Compression::fast());
    let mut h = tar::Header::new_gnu();
    h.set_path("model/weights.bin")?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    gz.write_all(h.as_bytes())?;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut buf = vec![0u8; 8 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        buf[..n].iter_mut().for_each(|b| *b = rng.u8(..64));
        gz.write_all(&buf[..n])?;
        left -= n as u64;
    }
    let pad = (512 - size % 512) % 512;
    gz.write_all(&vec![0u8; pad as usize + 1024])?;
    gz.finish()?.into_inner()?.sync_all()?;
    Ok(512 + size + pad + 1024)
}

pub async fn measure(dir: &Path, gzip_size: u64) -> anyhow::Result<PreflightResult> {
    let sparse = dir.join("sparse-32GiB.tar");
    let sparse_size: u64 = 32 << 30;
    sparse_tar(&sparse, sparse_size).context("writing the sparse tar")?;
    let tgz = dir.join("preflight.tar.gz");
    let t0 = Instant::now();
    let tar_bytes = gzip_tar(&tgz, gzip_size, 4).context("writing the gzip archive")?;
    let gzip_bytes = std::fs::metadata(&tgz)?.len();
    println!(
        "  generated {} ({:.0} MiB, {:.0} MiB inflated) in {:.1} s",
        tgz.display(),
        gzip_bytes as f64 / (1u64 << 20) as f64,
        tar_bytes as f64 / (1u64 << 20) as f64,
        t0.elapsed().as_secs_f64()
    );
    let (s, g) = (sparse.clone(), tgz.clone());
    let result = tokio::task::spawn_blocking(move || -> anyhow::Result<PreflightResult> {
        let id = FileIdentity::of_path(&s)?;
        let mut runs = Vec::new();
        for i in 0..=RUNS {
            let t = Instant::now();
            check_file(&s, &id, Depth::Full, &|| false).context("the sparse tar")?;
            if i > 0 {
                runs.push(t.elapsed());
            }
        }
        runs.sort();
        let id = FileIdentity::of_path(&g)?;
        let (cpu0, t) = (measure::cpu_secs(), Instant::now());
        check_file(&g, &id, Depth::Full, &|| false).context("the gzip archive")?;
        Ok(PreflightResult {
            sparse_size,
            sparse_median: runs[runs.len() / 2],
            sparse_max: runs[runs.len() - 1],
            gzip_bytes,
            tar_bytes,
            gzip_cpu_secs: measure::cpu_secs() - cpu0,
            gzip_secs: t.elapsed().as_secs_f64(),
        })
    })
    .await??;
    std::fs::remove_file(&sparse)?;
    std::fs::remove_file(&tgz)?;
    Ok(result)
}
