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
mod emulator;
mod measure;
mod opts;
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

use emulator::EmulatorProc;
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

/// Writes `size` pseudo-random bytes to `path` in 8 MiB writes.
fn generate(path: &Path, size: u64, seed: u64) -> anyhow::Result<()> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut buf = vec![0u8; 8 << 20];
    let mut f = File::create(path).with_context(|| path.display().to_string())?;
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
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
        let r = clients::run_child(kind, &emu.url, file, plan.chunk_size, workers, dir).await?;
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
        rows.push(row(plan, &emu, group, c, file, dir).await?);
    }
    emu.stop().await;
    Ok(())
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
        rows.push(row(&plan, &emu, Group::Rss, Client::Modelferry(4), &big, dir).await?);
        emu.stop().await;
        std::fs::remove_file(&big)?;
    }

    let mut results = Results {
        rows,
        restart: None,
        startup: None,
    };
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
