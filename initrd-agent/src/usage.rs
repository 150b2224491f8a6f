//! What the installer uses of the machine, for its events: when the agent
//! started (kernel uptime), and the most memory the machine had in use
//! during the install, sampled in the background.
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

/// When the process started, in clock ticks since boot: field 22 of
/// /proc/self/stat. The second field (the command name, in parentheses)
/// may hold spaces and parentheses itself, so fields count from the last ')'.
pub fn parse_start_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first one after the name; 22 is the 20th.
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Seconds since boot: the first field of /proc/uptime.
pub fn parse_uptime(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// The kernel's uptime now, in seconds.
pub fn uptime_s() -> Option<f64> {
    parse_uptime(&std::fs::read_to_string("/proc/uptime").ok()?)
}

/// The kernel's uptime when this process started, in seconds.
pub fn process_started_s() -> Option<f64> {
    let ticks = parse_start_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    let per_second = rustix::param::clock_ticks_per_second();
    (per_second > 0).then(|| ticks as f64 / per_second as f64)
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
    fn start_time_is_field_22_counted_after_the_command_name() {
        // A name with a space and a parenthesis, as a program may call itself.
        let stat = "1 (init (x) y) S 0 1 1 0 -1 4194560 3470 0 10 0 2 5 0 0 20 0 1 0 305 \
                    21585920 700 18446744073709551615 1 1 0 0 0 0 0 4096 1260 0 0 0 17 1 0 0";
        assert_eq!(parse_start_ticks(stat), Some(305));
        assert_eq!(parse_start_ticks("1 (init) S 0 1"), None);
        assert_eq!(parse_start_ticks(""), None);
    }

    #[test]
    fn this_process_started_before_now_and_its_peak_is_within_the_total() {
        let started = process_started_s().unwrap();
        let now = uptime_s().unwrap();
        assert!(started > 0.0 && started <= now, "{started} {now}");
        start_sampling();
        let data = memory_data().unwrap();
        let total = data["total_mib"].as_f64().unwrap();
        let peak = data["peak_used_mib"].as_f64().unwrap();
        assert!(peak > 0.0 && peak <= total, "{data}");
    }
}
