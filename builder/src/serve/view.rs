//! The terminal's view of `imgforge serve`: a table of the machines,
//! redrawn when an event arrives (and every second, for the ages).

use super::machines::{MachineView, Outcome};

/// The table: a header line, then one row per machine.
pub fn table(views: &[MachineView], header: &str) -> String {
    let mut rows: Vec<[String; 6]> = vec![[
        "MACHINE".into(),
        "STEP".into(),
        "PROGRESS".into(),
        "LAST".into(),
        "ELAPSED".into(),
        "STATE".into(),
    ]];
    for v in views {
        let step = match v.step_index {
            Some(i) => format!("[{}/{}] {}", i + 1, v.step_count, v.step),
            None => v.step.clone(),
        };
        let progress = match v.progress {
            Some(p) => format!("{} {:>5.1}%", bar(p, 20), p),
            None => "-".into(),
        };
        let mut state = match (&v.outcome, &v.failure) {
            (Outcome::Failed, Some(f)) => {
                let why = f
                    .error
                    .first()
                    .or(f.message.as_ref())
                    .map_or("", String::as_str);
                format!("FAILED in {}: {why}", f.step)
            }
            (Outcome::Failed, None) => "FAILED".into(),
            (Outcome::Succeeded, _) => "done".into(),
            (Outcome::Running, _) => format!("{:?}", v.state).to_lowercase(),
        };
        if !v.gaps.is_empty() {
            state.push_str(&format!(" (missing seq {})", list(&v.gaps)));
        }
        rows.push([
            clean(&v.machine, 32),
            clean(&step, 32),
            progress,
            format!("{} ago", duration(v.last_event_age_s)),
            duration(v.elapsed_s),
            clean(&state, 120),
        ]);
    }
    let mut widths = [0usize; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = format!("{}\n\n", clean(header, 200));
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if views.is_empty() {
        out.push_str("(no machine has reported yet)\n");
    }
    out
}

fn bar(percent: f64, width: usize) -> String {
    let filled = ((percent.clamp(0.0, 100.0) / 100.0) * width as f64).round() as usize;
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

fn list(seqs: &[u64]) -> String {
    let shown: Vec<String> = seqs.iter().take(5).map(u64::to_string).collect();
    let more = if seqs.len() > 5 { ", …" } else { "" };
    format!("{}{more}", shown.join(", "))
}

/// Text from the network, fit for a terminal: control characters (escape
/// sequences) become spaces, long text is cut.
fn clean(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if text.chars().count() > max {
        out.pop();
        out.push('…');
    }
    out
}

/// `42s`, `3m05s`, `1h02m`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::serve::machines::{view, Failure};
    use imgforge_plan::{steps, Event, State};

    #[test]
    fn the_table_has_a_row_per_machine_and_no_escape_sequences() {
        let running = Event::new(8, 120.0, steps::ROOT_TREE, State::Progress);
        let mut a = view("hv-01", "b", 1, &[(1120.0, &running)], vec![4], 1130.0).unwrap();
        a.progress = Some(50.0);
        let failed = Event::new(3, 105.0, steps::PARTITION, State::Failed);
        let mut b = view(
            "hv-02\u{1b}[2J",
            "b",
            1,
            &[(1000.0, &failed)],
            vec![],
            1130.0,
        )
        .unwrap();
        b.failure = Some(Failure {
            step: "partition".into(),
            message: None,
            error: vec!["writing GPT to /dev/vda".into()],
            log_tail: vec![],
        });
        let text = table(&[a, b], "imgforge serve on http://127.0.0.1:8080/");
        assert!(!text.contains('\u{1b}'), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[2].starts_with("MACHINE"), "{text}");
        assert!(
            lines[3].contains("[10/13] root-tree")
                && lines[3].contains("[##########..........]  50.0%"),
            "{text}"
        );
        assert!(
            lines[3].contains("10s ago") && lines[3].contains("missing seq 4"),
            "{text}"
        );
        assert!(
            lines[4].contains("FAILED in partition: writing GPT to /dev/vda"),
            "{text}"
        );
        assert!(table(&[], "h").contains("no machine has reported yet"));
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration(4.4), "4s");
        assert_eq!(duration(185.0), "3m05s");
        assert_eq!(duration(3720.0), "1h02m");
    }
}
