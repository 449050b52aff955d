//! Per-process measurements: CPU time from getrusage, peak RSS from
//! /proc/self/status, another process's CPU from /proc/PID/stat, and the
//! JSON line a row's child process prints for the parent.

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// One row's result, as its child process reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RowResult {
    /// Bytes of chunks sent in the measured window.
    pub bytes: u64,
    /// Wall-clock seconds of the window: the first chunk request to the last
    /// acknowledgement (session start, complete and polling excluded).
    pub secs: f64,
    /// User + system CPU seconds of the client process in the window.
    pub cpu_secs: f64,
    /// Peak resident set (VmHWM) of the client process, KiB.
    pub peak_rss_kib: u64,
    /// Wall-clock seconds of the whole import (modelferry: session start to
    /// SUCCESS); equal to `secs` for the other clients.
    pub total_secs: f64,
    /// CPU seconds of the whole import (modelferry: session start to
    /// SUCCESS, the file hash finished after the last acknowledgement
    /// included); equal to `cpu_secs` for the other clients.
    #[serde(default)]
    pub total_cpu_secs: f64,
    pub session_id: String,
    pub chunks: u64,
}

impl RowResult {
    /// A client without an import phase (wire ceiling, naive): the whole run
    /// is the chunk window. Reads the process's peak RSS now.
    pub fn chunks_only(bytes: u64, window: (f64, f64), session_id: String, chunks: u64) -> Self {
        let (secs, cpu_secs) = window;
        RowResult {
            bytes,
            secs,
            cpu_secs,
            peak_rss_kib: peak_rss_kib(),
            total_secs: secs,
            total_cpu_secs: cpu_secs,
            session_id,
            chunks,
        }
    }

    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.secs
    }

    pub fn cpu_per_gib(&self) -> f64 {
        self.cpu_secs / (self.bytes as f64 / (1u64 << 30) as f64)
    }

    /// CPU of the whole import per GiB.
    pub fn total_cpu_per_gib(&self) -> f64 {
        self.total_cpu_secs / (self.bytes as f64 / (1u64 << 30) as f64)
    }
}

/// User + system CPU seconds of this process so far.
#[allow(unsafe_code)] // getrusage(2) has no std equivalent.
pub fn cpu_secs() -> f64 {
    // SAFETY: getrusage only writes the struct it is given, which is a
    // plain C struct for which all-zero bytes are a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer to a rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// User + system CPU seconds of the calling thread so far.
#[allow(unsafe_code)] // getrusage(2) has no std equivalent.
pub fn thread_cpu_secs() -> f64 {
    // SAFETY: as in cpu_secs.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_THREAD with a valid pointer to a rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    if rc != 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// User + system CPU seconds of this process's children that were waited
/// for (rows, emulators, runs of the binary) so far.
#[allow(unsafe_code)] // getrusage(2) has no std equivalent.
pub fn children_cpu_secs() -> f64 {
    // SAFETY: as in cpu_secs.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_CHILDREN with a valid pointer to a rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    if rc != 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU seconds the whole machine spent busy so far (all CPUs, from /proc/stat).
pub fn machine_busy_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)? + f.get(7)?;
    Some(busy / clk_tck()?)
}

#[allow(unsafe_code)] // sysconf(3) has no std equivalent.
fn clk_tck() -> Option<f64> {
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (tck > 0).then_some(tck as f64)
}

/// Waits (at most `limit`) until the rest of the machine has used under 10%
/// of the CPUs for half a second; returns the share seen last. Between rows
/// the benchmark's own processes are idle, so what is busy is someone else.
pub async fn wait_quiet(limit: std::time::Duration) -> Option<f64> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let deadline = Instant::now() + limit;
    loop {
        let a = machine_busy_secs()?;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let share = (machine_busy_secs()? - a) / (0.5 * cpus);
        if share < 0.1 || Instant::now() >= deadline {
            return Some(share);
        }
    }
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Peak resident set size of this process (VmHWM), KiB.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU seconds of process `pid` so far (from /proc/PID/stat).
pub fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clk_tck()?)
}

/// The start of a measured window: wall clock and CPU.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    pub at: Instant,
    pub cpu: f64,
}

impl Mark {
    pub fn now() -> Mark {
        Mark {
            at: Instant::now(),
            cpu: cpu_secs(),
        }
    }

    /// Seconds and CPU seconds from `self` to `end`.
    pub fn until(&self, end: &Mark) -> (f64, f64) {
        (
            end.at.duration_since(self.at).as_secs_f64(),
            end.cpu - self.cpu,
        )
    }
}

/// The machine, for the output's header.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let sha = if cpuinfo.contains(" sha_ni") {
        ", SHA-NI"
    } else {
        ""
    };
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpus} CPUs ({model}{sha}), {:.1} GiB memory, Linux {}",
        mem_kib as f64 / (1u64 << 20) as f64,
        kernel.trim()
    )
}
