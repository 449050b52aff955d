//! The benchmark's options: clap flags as typed, then [`Plan`], the sizes
//! and counts one run uses once `--quick` and the defaults are applied.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

#[derive(Debug, Parser)]
#[command(
    name = "throughput",
    about = "Upload throughput, CPU, memory, restart and startup of modelferry against the \
emulator on loopback. Run as: cargo bench --bench throughput -- [OPTIONS]"
)]
pub struct Opts {
    /// Small sizes for CI (64 MiB loopback, 32 MiB WAN, no 4 GiB RSS row, 1,000 jobs).
    #[arg(long)]
    pub quick: bool,
    /// Size of the loopback test file [default: 1GiB; --quick: 64MiB].
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub size: Option<u64>,
    /// Size of the test file of the WAN rows [default: 256MiB; --quick: 32MiB].
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub wan_size: Option<u64>,
    /// Latency the emulator adds to every request in the WAN rows.
    #[arg(long, value_parser = parse_duration, default_value = "50ms")]
    pub latency: Duration,
    /// Chunk size of every client.
    #[arg(long, value_parser = parse_size, default_value = "8MiB", value_name = "SIZE")]
    pub chunk_size: u64,
    /// modelferry's parallel_chunks values, one row each.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub parallel: Vec<usize>,
    /// Requests in flight of the wire-ceiling client.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// File size of the peak-RSS row (modelferry, parallel_chunks 4); 0 skips
    /// it [default: 4GiB; --quick: 0].
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub rss_size: Option<u64>,
    /// Finished jobs in the state database of the startup measurement
    /// [default: 10000; --quick: 1000].
    #[arg(long)]
    pub jobs: Option<u64>,
    /// Acknowledged chunks per finished job in that database [default: 16; --quick: 4].
    #[arg(long)]
    pub job_chunks: Option<u64>,
    /// Runs of each throughput row; the run with the median MB/s is shown
    /// [default: 3; --quick: 1].
    #[arg(long)]
    pub repeat: Option<usize>,
    /// Before each run, wait up to this long for other processes to leave
    /// the CPUs alone (under 10% busy) [default: 30s; --quick: 2s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub settle: Option<Duration>,
    /// Where test files and state folders go (a temporary folder is made in it).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Skip the restart and startup measurements.
    #[arg(long)]
    pub no_restart_startup: bool,
    /// Skip the throughput and RSS rows (restart and startup only).
    #[arg(long)]
    pub no_throughput: bool,
    /// Tar bytes inside the gzip archive whose verification CPU is measured
    /// [default: 1GiB; --quick: 64MiB].
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub gzip_size: Option<u64>,
    /// Skip the pre-flight measurements.
    #[arg(long)]
    pub no_preflight: bool,
    /// upload.max_rate of the rate-limit row; its file is 10 s worth
    /// [default: 8MiB; --quick: the same, 2 s worth].
    #[arg(long, value_parser = parse_size, value_name = "RATE")]
    pub max_rate: Option<u64>,
    /// File of the end-to-end row (`upload` vs a sequential client at
    /// +latency) [default: 1GiB; --quick: 32MiB].
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub e2e_size: Option<u64>,

    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    pub bench: bool,
    /// Internal: run one row in this process and print its result as JSON.
    #[arg(long, hide = true, value_enum)]
    pub row: Option<RowKind>,
    /// Internal (--row): the emulator's base URL.
    #[arg(long, hide = true)]
    pub url: Option<String>,
    /// Internal (--row): the test file.
    #[arg(long, hide = true)]
    pub file: Option<PathBuf>,
    /// Internal (--row): requests in flight (parallel_chunks for modelferry).
    #[arg(long, hide = true, default_value_t = 4)]
    pub workers: usize,
    /// Internal (--row modelferry): upload.max_rate, bytes per second.
    #[arg(long, hide = true, default_value_t = 0)]
    pub row_max_rate: u64,
}

/// The client a row runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RowKind {
    /// Minimal reqwest loop: N requests in flight, no hashing, no state.
    Wire,
    /// One chunk at a time, a new client (and connection) per chunk.
    Naive,
    /// modelferry's engine with a real state database.
    Modelferry,
}

/// What one run measures, defaults applied.
#[derive(Debug, Clone)]
pub struct Plan {
    pub quick: bool,
    pub size: u64,
    pub wan_size: u64,
    pub latency: Duration,
    pub chunk_size: u64,
    pub parallel: Vec<usize>,
    pub concurrency: usize,
    pub rss_size: u64,
    pub jobs: u64,
    pub job_chunks: u64,
    pub repeat: usize,
    pub dir: Option<PathBuf>,
    pub restart_startup: bool,
    pub throughput: bool,
    pub settle: Duration,
    pub preflight: bool,
    pub gzip_size: u64,
    pub max_rate: u64,
    /// Seconds of the rate-limit row's upload.
    pub rate_secs: u64,
    pub e2e_size: u64,
}

impl Plan {
    pub fn from_opts(o: &Opts) -> anyhow::Result<Plan> {
        let q = o.quick;
        let plan = Plan {
            quick: q,
            size: o.size.unwrap_or(if q { 64 * MIB } else { GIB }),
            wan_size: o.wan_size.unwrap_or(if q { 32 * MIB } else { 256 * MIB }),
            latency: o.latency,
            chunk_size: o.chunk_size,
            parallel: o.parallel.clone(),
            concurrency: o.concurrency,
            rss_size: o.rss_size.unwrap_or(if q { 0 } else { 4 * GIB }),
            jobs: o.jobs.unwrap_or(if q { 1_000 } else { 10_000 }),
            job_chunks: o.job_chunks.unwrap_or(if q { 4 } else { 16 }),
            repeat: o.repeat.unwrap_or(if q { 1 } else { 3 }).max(1),
            dir: o.dir.clone(),
            restart_startup: !o.no_restart_startup,
            throughput: !o.no_throughput,
            preflight: !o.no_preflight,
            gzip_size: o.gzip_size.unwrap_or(if q { 64 * MIB } else { GIB }),
            settle: o
                .settle
                .unwrap_or(Duration::from_secs(if q { 2 } else { 30 })),
            max_rate: o.max_rate.unwrap_or(8 * MIB),
            rate_secs: if q { 2 } else { 10 },
            e2e_size: o.e2e_size.unwrap_or(if q { 32 * MIB } else { GIB }),
        };
        anyhow::ensure!(plan.max_rate >= MIB, "--max-rate must be at least 1MiB");
        anyhow::ensure!(
            (1024..=GIB).contains(&plan.chunk_size),
            "--chunk-size must be between 1KiB and 1GiB"
        );
        anyhow::ensure!(
            plan.size > 0 && plan.wan_size > 0,
            "--size and --wan-size must be above 0"
        );
        anyhow::ensure!(
            plan.concurrency > 0 && plan.parallel.iter().all(|&p| p > 0),
            "--concurrency and --parallel must be at least 1"
        );
        anyhow::ensure!(plan.jobs > 0, "--jobs must be at least 1");
        Ok(plan)
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(s)
        .map_err(|e| format!("{s:?} is not a size like \"256MiB\" ({e})"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like \"50ms\" ({e})"))
}

/// `1 GiB`, `1.50 GiB`, `256 MiB`, `512 KiB`.
pub fn human_size(bytes: u64) -> String {
    if bytes >= GIB && bytes / GIB * GIB == bytes {
        format!("{} GiB", bytes / GIB)
    } else if bytes >= GIB {
        format!("{:.2} GiB", bytes as f64 / GIB as f64)
    } else if bytes >= MIB {
        format!("{:.0} MiB", bytes as f64 / MIB as f64)
    } else {
        format!("{:.0} KiB", bytes as f64 / 1024.0)
    }
}
