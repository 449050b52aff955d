//! `cargo bench --bench throughput -- [OPTIONS]`: how fast modelferry
//! uploads, at what CPU and memory cost, against the practical ceiling of
//! the wire and a naive client; how fast it resumes and starts. The numbers
//! and how to read them: README.md, "Performance".
//!
//! The parent process generates the test files, starts the emulator as its
//! own process (the release binary `modelferry emulator --discard`), and runs
//! every row in a child process of its own (this binary again, with the
//! hidden `--row`), so each row's CPU time and peak RSS are its own. It
//! reports and does not assert: a missed target prints MISS and the exit
//! status stays 0. Something that breaks (an upload that fails, a child
//! that dies, an emulator that does not start) exits 1.
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_methods)]

mod clients;
mod e2e;
mod emulator;
mod measure;
mod opts;
mod preflight;
mod restart;
mod startup;
mod store_ops;
mod table;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

use clients::ChildLaunch;
use emulator::{EmulatorProc, Launch};
use opts::{human_size, Opts, Plan, RowKind};
use table::{Client, Group, Results, Row};

/// The release binary cargo built for this benchmark.
const BIN: &str = env!("CARGO_BIN_EXE_modelferry");

fn main() -> ExitCode {
    let opts = Opts::parse();
    let result = match opts.row {
        Some(kind) => clients::child_main(kind, &opts),
        None => Plan::from_opts(&opts).and_then(|plan| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(run(plan))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("throughput: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes a valid tar of exactly `size` bytes to `path`, in 8 MiB writes:
/// one member of pseudo-random bytes from `seed`, the end-of-archive
/// marker, zero padding to `size`. Pre-flight accepts it, and different
/// seeds are different content (dedupe imports each).
fn generate(path: &Path, size: u64, seed: u64) -> anyhow::Result<()> {
    anyhow::ensure!(size >= 2048, "a test file is at least 2 KiB");
    let data = (size - 512 - 1024) / 512 * 512;
    let mut h = tar::Header::new_gnu();
    h.set_path("model/weights.bin")?;
    h.set_size(data);
    h.set_mode(0o644);
    h.set_cksum();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut buf = vec![0u8; 8 << 20];
    let mut f = File::create(path).with_context(|| path.display().to_string())?;
    f.write_all(h.as_bytes())?;
    let mut left = data;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    // The end marker and the padding are zeros.
    f.write_all(&vec![0u8; (size - 512 - data) as usize])?;
    f.sync_all()?;
    Ok(())
}

fn test_file(dir: &Path, size: u64, seed: u64) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("bench-{}.tar", human_size(size).replace(' ', "")));
    if !path.exists() {
        let t0 = Instant::now();
        generate(&path, size, seed)?;
        println!(
            "generated {} ({}) in {:.1} s",
            path.display(),
            human_size(size),
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(path)
}

/// CPU seconds of this process and its waited-for children.
fn own_cpu() -> f64 {
    measure::cpu_secs() + measure::children_cpu_secs()
}

/// Runs one row `plan.repeat` times; keeps the run with the median MB/s
/// (and the highest peak RSS of all runs).
async fn row(
    plan: &Plan,
    emu: &EmulatorProc,
    group: Group,
    client: Client,
    file: &Path,
    dir: &Path,
    launch: &ChildLaunch,
) -> anyhow::Result<Row> {
    let (kind, workers) = match client {
        Client::Wire => (RowKind::Wire, plan.concurrency),
        Client::Naive => (RowKind::Naive, 1),
        Client::Modelferry(p) => (RowKind::Modelferry, p),
    };
    let mut runs = Vec::new();
    for _ in 0..plan.repeat {
        measure::wait_quiet(plan.settle).await;
        let (emu0, busy0, own0) = (emu.cpu_secs(), measure::machine_busy_secs(), own_cpu());
        let t0 = Instant::now();
        let r =
            clients::run_child(kind, &emu.url, file, plan.chunk_size, workers, dir, launch).await?;
        let wall = t0.elapsed().as_secs_f64();
        let emu_cpu = emu0.zip(emu.cpu_secs()).map(|(a, b)| b - a);
        // CPU the rest of the machine used meanwhile, as a share of all
        // CPUs: a busy machine shows here, not as a mystery in MB/s.
        let other = busy0
            .zip(measure::machine_busy_secs())
            .zip(emu_cpu)
            .map(|((a, b), e)| {
                let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
                ((b - a - e - (own_cpu() - own0)) / (wall * cpus as f64)).max(0.0)
            });
        emu.check_session(&r.session_id, r.chunks, r.bytes)
            .await
            .context("the emulator did not get the whole file")?;
        runs.push((r, emu_cpu, other));
    }
    let peak = runs.iter().map(|(r, ..)| r.peak_rss_kib).max().unwrap_or(0);
    runs.sort_by(|a, b| a.0.mb_per_s().total_cmp(&b.0.mb_per_s()));
    let (mut result, emu_cpu, other) = runs.swap_remove(runs.len() / 2);
    result.peak_rss_kib = peak;
    let gib = result.bytes as f64 / (1u64 << 30) as f64;
    let row = Row {
        group,
        client,
        emu_cpu_per_gib: emu_cpu.map(|c| c / gib),
        other_cpu_share: other,
        result,
    };
    println!(
        "  {:<34} {:>8.1} MB/s  {:>5.2} CPU s/GiB  peak RSS {:>6.1} MiB",
        row.label(plan),
        row.result.mb_per_s(),
        row.result.cpu_per_gib(),
        row.result.peak_rss_kib as f64 / 1024.0
    );
    Ok(row)
}

/// The wire ceiling, the naive client and modelferry at each
/// parallel_chunks, against one emulator with `latency`.
async fn group(
    plan: &Plan,
    group: Group,
    latency: Duration,
    file: &Path,
    dir: &Path,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let emu = EmulatorProc::start(Path::new(BIN), latency, dir, &format!("{group:?}")).await?;
    println!(
        "{group:?} rows ({}, emulator at {}):",
        human_size(std::fs::metadata(file)?.len()),
        emu.url
    );
    let mut clients = vec![Client::Wire, Client::Naive];
    clients.extend(plan.parallel.iter().map(|&p| Client::Modelferry(p)));
    for c in clients {
        let launch = ChildLaunch::default();
        rows.push(row(plan, &emu, group, c, file, dir, &launch).await?);
    }
    emu.stop().await;
    Ok(())
}

/// Whether `taskset` can pin processes to CPUs 0 and 1 here.
fn can_pin() -> Result<(), String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        return Err(format!("{cpus} CPU: nothing to pin apart"));
    }
    match std::process::Command::new("taskset")
        .args(["-c", "1", "true"])
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("taskset -c 1 failed ({s})")),
        Err(e) => Err(format!("no taskset ({e})")),
    }
}

/// The wire ceiling and modelferry at parallel_chunks=4 on CPU 0 against
/// an emulator on CPU 1 that does not hash: the client's own ceiling.
async fn pinned(plan: &Plan, file: &Path, dir: &Path, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let launch = Launch {
        cpu: Some("1".into()),
        no_hash: true,
        import_polls: 0,
    };
    let emu =
        EmulatorProc::start_with(Path::new(BIN), Duration::ZERO, dir, "pinned", &launch).await?;
    println!("Pinned rows (client on CPU 0, emulator on CPU 1 without hashing):");
    let child = ChildLaunch {
        cpu: Some("0".into()),
        max_rate: 0,
    };
    for c in [Client::Wire, Client::Modelferry(4)] {
        rows.push(row(plan, &emu, Group::Pinned, c, file, dir, &child).await?);
    }
    emu.stop().await;
    Ok(())
}

/// CPU seconds per GiB of one sha2 SHA-256 pass over `file` (the hashing
/// only, on one thread; the reads are not counted).
fn sha_pass(file: &Path) -> anyhow::Result<f64> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = File::open(file)?;
    let mut buf = vec![0u8; 8 << 20];
    let mut h = sha2::Sha256::new();
    let (mut cpu, mut bytes) = (0.0, 0u64);
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let c0 = measure::thread_cpu_secs();
        h.update(&buf[..n]);
        cpu += measure::thread_cpu_secs() - c0;
        bytes += n as u64;
    }
    std::hint::black_box(h.finalize());
    Ok(cpu / (bytes as f64 / (1u64 << 30) as f64))
}

async fn run(plan: Plan) -> anyhow::Result<()> {
    let started = Instant::now();
    let bin = PathBuf::from(BIN);
    let root = match &plan.dir {
        Some(d) => tempfile::Builder::new()
            .prefix("modelferry-bench-")
            .tempdir_in(d)?,
        None => tempfile::Builder::new()
            .prefix("modelferry-bench-")
            .tempdir()?,
    };
    let dir = root.path();
    println!(
        "modelferry throughput benchmark{}",
        if plan.quick { " (--quick)" } else { "" }
    );
    println!("machine: {}", measure::machine());
    println!("binary: {BIN}");
    let load = measure::load_average();
    println!(
        "load average at start: {load:.2}{}",
        if load > 0.5 {
            " (the machine is not idle: expect noise; the `busy` column shows what else ran)"
        } else {
            ""
        }
    );
    println!("scratch: {}", dir.display());
    println!(
        "chunk_size {}; loopback file {}; WAN file {} with +{} ms per request; {} run(s) per row, median shown",
        human_size(plan.chunk_size),
        human_size(plan.size),
        human_size(plan.wan_size),
        plan.latency.as_millis(),
        plan.repeat
    );
    println!(
        "before each run: wait up to {} s for other processes to leave the CPUs (under 10% busy)",
        plan.settle.as_secs()
    );
    println!(
        "The test files are read from the page cache (generated just before, never evicted \
         on this machine): no disk reads are measured. MB = 10^6 bytes."
    );

    let file = test_file(dir, plan.size, 1)?;
    let mut rows = Vec::new();
    if plan.throughput {
        let wan_file = test_file(dir, plan.wan_size, 2)?;
        let lo = Duration::ZERO;
        group(&plan, Group::Loopback, lo, &file, dir, &mut rows).await?;
        group(&plan, Group::Wan, plan.latency, &wan_file, dir, &mut rows).await?;
    }

    if plan.throughput && plan.rss_size > 0 {
        let big = test_file(dir, plan.rss_size, 3)?;
        let emu = EmulatorProc::start(&bin, Duration::ZERO, dir, "rss").await?;
        println!("RSS row ({}):", human_size(plan.rss_size));
        let launch = ChildLaunch::default();
        rows.push(
            row(
                &plan,
                &emu,
                Group::Rss,
                Client::Modelferry(4),
                &big,
                dir,
                &launch,
            )
            .await?,
        );
        emu.stop().await;
        std::fs::remove_file(&big)?;
    }

    let mut pinned_skipped = None;
    let mut sha = None;
    if plan.throughput {
        match can_pin() {
            Ok(()) => pinned(&plan, &file, dir, &mut rows).await?,
            Err(why) => {
                println!("Pinned rows skipped: {why}");
                pinned_skipped = Some(why);
            }
        }
        let f = file.clone();
        let s = tokio::task::spawn_blocking(move || sha_pass(&f)).await??;
        println!("one sha2 SHA-256 pass over the loopback file: {s:.2} CPU s/GiB");
        sha = Some(s);

        // 10 s (quick: 2 s) worth at max_rate.
        let rate_file = test_file(dir, plan.max_rate * plan.rate_secs, 4)?;
        let emu = EmulatorProc::start(&bin, Duration::ZERO, dir, "max-rate").await?;
        println!("max_rate row ({}/s):", human_size(plan.max_rate));
        let launch = ChildLaunch {
            cpu: None,
            max_rate: plan.max_rate,
        };
        let r = row(
            &plan,
            &emu,
            Group::MaxRate,
            Client::Modelferry(4),
            &rate_file,
            dir,
            &launch,
        );
        rows.push(r.await?);
        emu.stop().await;
    }

    let mut e2e = None;
    if plan.throughput {
        let e2e_file = test_file(dir, plan.e2e_size, 5)?;
        let launch = Launch {
            cpu: None,
            no_hash: false,
            import_polls: 1,
        };
        let emu = EmulatorProc::start_with(&bin, plan.latency, dir, "e2e", &launch).await?;
        println!(
            "end to end ({}, +{} ms, SUCCESS on the second poll):",
            human_size(plan.e2e_size),
            plan.latency.as_millis()
        );
        let edir = dir.join("e2e");
        std::fs::create_dir_all(&edir)?;
        measure::wait_quiet(plan.settle).await;
        let r = e2e::measure(&bin, &emu, &e2e_file, plan.chunk_size, &edir)
            .await
            .context("end-to-end measurement")?;
        println!(
            "  upload {:.2} s, sequential client {:.2} s ({:.2}×)",
            r.upload_secs,
            r.sequential_secs,
            r.speedup()
        );
        e2e = Some(r);
        emu.stop().await;
    }

    let mut results = Results {
        rows,
        restart: None,
        startup: None,
        preflight: None,
        sha_pass: sha,
        e2e,
        pinned_skipped,
    };
    if plan.preflight {
        println!(
            "pre-flight (a sparse 32 GiB tar; a {} gzip archive):",
            human_size(plan.gzip_size)
        );
        measure::wait_quiet(plan.settle).await;
        let p = preflight::measure(dir, plan.gzip_size)
            .await
            .context("pre-flight measurement")?;
        results.preflight = Some(p);
    }
    if plan.restart_startup {
        let emu = EmulatorProc::start(&bin, Duration::ZERO, dir, "restart").await?;
        println!(
            "restart of an interrupted upload ({}):",
            human_size(plan.size)
        );
        let rdir = dir.join("restart");
        std::fs::create_dir_all(&rdir)?;
        // A failed upload there is a broken run, not a missed target.
        let restart = restart::measure(&bin, &emu, &file, plan.chunk_size, &rdir, plan.settle)
            .await
            .context("restart measurement")?;
        results.restart = Some(Ok(restart));

        println!("startup with {} finished jobs:", plan.jobs);
        let sdir = dir.join("startup");
        std::fs::create_dir_all(&sdir)?;
        measure::wait_quiet(plan.settle).await;
        let startup = startup::measure(
            &bin,
            &emu,
            &sdir,
            plan.jobs,
            plan.job_chunks,
            plan.chunk_size,
        )
        .await
        .context("startup measurement")?;
        results.startup = Some(Ok(startup));
        emu.stop().await;
    }

    println!("store operations, each {} times:", plan.jobs.min(2000));
    let store_ops = store_ops::measure(dir, plan.jobs.min(2000))
        .await
        .context("store operations")?;

    println!();
    println!(
        "== Results ({:.0} s in all)",
        started.elapsed().as_secs_f64()
    );
    print!("{}", results.table(&plan));
    println!();
    print!("{}", results.timings(&plan));
    println!("store operations (claim a job; acknowledge a chunk with its hash checkpoint):");
    for line in &store_ops {
        println!("{line}");
    }
    println!();
    println!("== Targets (reported, not asserted)");
    let (targets, missed) = results.targets(&plan);
    print!("{targets}");
    println!(
        "{}",
        if missed == 0 {
            "every measured target met".to_string()
        } else {
            format!("{missed} target(s) missed")
        }
    );
    Ok(())
}
