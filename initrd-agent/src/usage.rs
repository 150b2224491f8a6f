//! What the installer uses of the machine, for its events: when the agent
//! started (the kernel's uptime as its `main` began), and the most memory
//! the machine had in use during the install, sampled in the background.
//!
//! "In use" is MemTotal − MemAvailable from /proc/meminfo: the memory the
//! kernel could not hand to a new program without swapping. It counts the
//! initrd's own files (tmpfs cannot be reclaimed) and every program's
//! memory, and leaves out the page cache the copy and dpkg fill, which the
//! kernel drops when memory is short.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often the sampler reads /proc/meminfo. dpkg's and mkinitramfs's
/// programs live for seconds; a short peak between two samples is missed.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// The largest MemTotal − MemAvailable seen, in KiB (0 before a sample).
static PEAK_USED_KIB: AtomicU64 = AtomicU64::new(0);
static TOTAL_KIB: AtomicU64 = AtomicU64::new(0);

/// MemTotal and MemAvailable, in KiB, from the text of /proc/meminfo.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
        })
    };
    Some((field("MemTotal")?, field("MemAvailable")?))
}

/// Seconds since boot: the first field of /proc/uptime.
pub fn parse_uptime(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// The kernel's uptime now, in seconds.
pub fn uptime_s() -> Option<f64> {
    parse_uptime(&std::fs::read_to_string("/proc/uptime").ok()?)
}

/// The kernel's uptime now, by the clock /proc/uptime reads: usable before
/// /proc is mounted. (Not the process's start time in /proc/self/stat: PID
/// 1 exists from early in the kernel's start, long before it runs /init.)
pub fn boot_clock_s() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

fn sample() {
    let Some((total, available)) = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_meminfo(&t))
    else {
        return;
    };
    TOTAL_KIB.store(total, Ordering::Relaxed);
    PEAK_USED_KIB.fetch_max(total.saturating_sub(available), Ordering::Relaxed);
}

/// Starts sampling memory in use for the rest of the agent's life.
pub fn start_sampling() {
    sample();
    let spawned = std::thread::Builder::new()
        .name("meminfo".into())
        .spawn(|| loop {
            std::thread::sleep(SAMPLE_EVERY);
            sample();
        });
    if let Err(e) = spawned {
        tracing::info!("sampling memory in use: {e}");
    }
}

/// The machine's memory and the most of it in use so far, for an event's
/// data: `{"total_mib": …, "peak_used_mib": …}`; None before any sample.
pub fn memory_data() -> Option<serde_json::Value> {
    sample();
    let total = TOTAL_KIB.load(Ordering::Relaxed);
    let peak = PEAK_USED_KIB.load(Ordering::Relaxed);
    (total > 0).then(|| {
        serde_json::json!({
            "total_mib": mib(total),
            "peak_used_mib": mib(peak),
        })
    })
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_gives_total_and_available_in_kib() {
        let text = "MemTotal:        1004436 kB\nMemFree:          612000 kB\n\
                    MemAvailable:     801234 kB\nBuffers:            1234 kB\n";
        assert_eq!(parse_meminfo(text), Some((1004436, 801234)));
        // An older kernel without MemAvailable: no figure rather than a wrong one.
        assert_eq!(parse_meminfo("MemTotal: 1004436 kB\nMemFree: 5 kB\n"), None);
        // A field whose name only starts the same is not taken for it.
        assert_eq!(
            parse_meminfo("MemTotalX: 1 kB\nMemTotal: 2 kB\nMemAvailable: 1 kB\n"),
            Some((2, 1))
        );
    }

    #[test]
    fn the_boot_clock_is_the_uptime_and_the_peak_is_within_the_total() {
        // /proc/uptime is read to hundredths, after the clock.
        let clock = boot_clock_s();
        let uptime = uptime_s().unwrap();
        assert!(
            clock > 0.0 && (clock - uptime).abs() < 0.5,
            "{clock} {uptime}"
        );
        start_sampling();
        let data = memory_data().unwrap();
        let total = data["total_mib"].as_f64().unwrap();
        let peak = data["peak_used_mib"].as_f64().unwrap();
        assert!(peak > 0.0 && peak <= total, "{data}");
    }
}
