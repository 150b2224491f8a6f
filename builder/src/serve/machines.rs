//! What each machine is doing, from its events: the step, how far the
//! install is, how long it has taken, how it failed. `GET /machines`, the
//! status page and the terminal table all show this one view.

use imgforge_plan::{steps, Event, State};
use serde::Serialize;

use super::store::EventLog;

/// One machine's install as its latest boot reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MachineView {
    pub machine: String,
    /// The boot whose first event arrived last.
    pub boot: String,
    /// How many boots of it have reported.
    pub boots: usize,
    /// The step and state of the boot's highest seq.
    pub step: String,
    pub state: State,
    /// The step's own progress, 0 to 100.
    pub percent: Option<f64>,
    /// The step's place in `plan::steps::INSTALLER` (from 0), when it is one of them.
    pub step_index: Option<usize>,
    /// How many installer steps there are.
    pub step_count: usize,
    /// How far the whole install is, 0 to 100, from the step's place and
    /// its percent (100 once the install is done).
    pub progress: Option<f64>,
    /// `running`, `succeeded` (`install` or `firstboot` done) or `failed`.
    pub outcome: Outcome,
    /// When the server received the boot's first and last events (seconds since the Unix epoch).
    pub first_event: f64,
    pub last_event: f64,
    /// Seconds since the last event arrived.
    pub last_event_age_s: f64,
    /// Seconds from the first event until now, or until the last event once it has ended.
    pub elapsed_s: f64,
    /// How many events of the boot arrived.
    pub events: usize,
    /// Seqs of the boot that have not arrived though later ones have.
    pub gaps: Vec<u64>,
    pub failure: Option<Failure>,
    /// Each step the boot reported, in order, with its times by the machine's clock.
    pub timeline: Vec<StepSpan>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Running,
    Succeeded,
    Failed,
}

/// The `failed` event's account of what went wrong.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    pub step: String,
    pub message: Option<String>,
    pub error: Vec<String>,
    pub log_tail: Vec<String>,
}

/// One step of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepSpan {
    pub step: String,
    /// The state of its latest event.
    pub state: State,
    /// The machine's `ts` of its `started` event, else where the step
    /// before it ended.
    pub started: f64,
    /// The `ts` of its `done` or `failed` event.
    pub ended: Option<f64>,
    pub seconds: Option<f64>,
}

/// Every machine, by name.
pub fn machine_views(log: &EventLog, now: f64) -> Vec<MachineView> {
    log.machines()
        .filter_map(|(machine, boots)| {
            let boot_id = boots.last()?;
            let boot = log.boot(machine, boot_id)?;
            let events: Vec<(f64, &Event)> = boot
                .seqs
                .values()
                .map(|&i| {
                    let s = log.stored(i);
                    (s.received, &s.event)
                })
                .collect();
            let gaps = boot.missing.iter().copied().collect();
            view(machine, boot_id, boots.len(), &events, gaps, now)
        })
        .collect()
}

/// The view of one boot from its events in seq order, each with the time
/// the server received it.
pub fn view(
    machine: &str,
    boot: &str,
    boots: usize,
    events: &[(f64, &Event)],
    gaps: Vec<u64>,
    now: f64,
) -> Option<MachineView> {
    let (_, last) = events.last()?;
    let first_event = events.iter().map(|(r, _)| *r).fold(f64::INFINITY, f64::min);
    let last_event = events
        .iter()
        .map(|(r, _)| *r)
        .fold(f64::NEG_INFINITY, f64::max);
    let succeeded = matches!(last.step.as_str(), steps::INSTALL | steps::FIRSTBOOT)
        && last.state == State::Done;
    let outcome = if last.state == State::Failed {
        Outcome::Failed
    } else if succeeded {
        Outcome::Succeeded
    } else {
        Outcome::Running
    };
    let step_index = steps::INSTALLER.iter().position(|s| *s == last.step);
    let step_count = steps::INSTALLER.len();
    let percent = match last.state {
        State::Done => Some(100.0),
        _ => last.percent,
    };
    let progress = if succeeded || last.step == steps::INSTALL {
        Some(100.0)
    } else {
        step_index.map(|i| {
            let within = percent.unwrap_or(0.0).clamp(0.0, 100.0) / 100.0;
            ((i as f64 + within) / step_count as f64 * 1000.0).round() / 10.0
        })
    };
    let failure = events
        .iter()
        .rev()
        .map(|(_, e)| e)
        .find(|e| e.state == State::Failed)
        .filter(|_| outcome == Outcome::Failed)
        .map(|e| Failure {
            step: e.step.clone(),
            message: e.message.clone(),
            error: e.error.clone(),
            log_tail: e.log_tail.clone(),
        });
    let ended_at = if outcome == Outcome::Running {
        now
    } else {
        last_event
    };
    Some(MachineView {
        machine: machine.to_owned(),
        boot: boot.to_owned(),
        boots,
        step: last.step.clone(),
        state: last.state,
        percent,
        step_index,
        step_count,
        progress,
        outcome,
        first_event,
        last_event,
        last_event_age_s: round_ms((now - last_event).max(0.0)),
        elapsed_s: round_ms((ended_at - first_event).max(0.0)),
        events: events.len(),
        gaps,
        failure,
        timeline: timeline(events.iter().map(|(_, e)| *e)),
    })
}

fn round_ms(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

/// The steps in the order their events came (by seq).
fn timeline<'a>(events: impl Iterator<Item = &'a Event>) -> Vec<StepSpan> {
    let mut spans: Vec<StepSpan> = Vec::new();
    for e in events {
        let ends = matches!(e.state, State::Done | State::Failed);
        if let Some(span) = spans.last_mut().filter(|s| s.step == e.step) {
            span.state = e.state;
            if ends {
                span.ended = Some(e.ts);
                span.seconds = Some(round_ms((e.ts - span.started).max(0.0)));
            }
            continue;
        }
        // A step that reports only its end began where the one before it ended.
        let started = match (e.state, spans.last().and_then(|s| s.ended)) {
            (State::Started | State::Progress, _) | (_, None) => e.ts,
            (_, Some(previous_end)) => previous_end,
        };
        spans.push(StepSpan {
            step: e.step.clone(),
            state: e.state,
            started,
            ended: ends.then_some(e.ts),
            seconds: ends.then(|| round_ms((e.ts - started).max(0.0))),
        });
    }
    spans
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ev(seq: u64, ts: f64, step: &str, state: State, percent: Option<f64>) -> Event {
        let mut e = Event::new(seq, ts, step, state);
        e.percent = percent;
        e
    }

    #[test]
    fn a_running_install_shows_its_step_progress_and_timeline() {
        let events = [
            ev(1, 100.0, steps::AGENT, State::Started, None),
            ev(2, 101.0, steps::MODULES, State::Done, None),
            ev(3, 103.0, steps::PAYLOAD, State::Done, None),
            ev(4, 110.0, steps::SELECT_DISK, State::Done, None),
            ev(5, 111.0, steps::PARTITION, State::Started, None),
            ev(6, 112.5, steps::PARTITION, State::Done, None),
            ev(7, 113.0, steps::ROOT_TREE, State::Started, None),
            ev(8, 120.0, steps::ROOT_TREE, State::Progress, Some(40.0)),
        ];
        let with_times: Vec<(f64, &Event)> = events.iter().map(|e| (e.ts + 1000.0, e)).collect();
        let v = view("hv-01", "b1", 1, &with_times, vec![], 1130.0).unwrap();
        assert_eq!((v.step.as_str(), v.state), ("root-tree", State::Progress));
        assert_eq!(v.step_index, Some(9));
        assert_eq!(
            v.progress,
            Some(((9.0 + 0.4) / 13.0 * 1000.0_f64).round() / 10.0)
        );
        assert_eq!(v.outcome, Outcome::Running);
        assert_eq!((v.elapsed_s, v.last_event_age_s), (30.0, 10.0));
        let steps: Vec<(&str, f64, Option<f64>)> = v
            .timeline
            .iter()
            .map(|s| (s.step.as_str(), s.started, s.seconds))
            .collect();
        assert_eq!(
            steps,
            [
                ("agent", 100.0, None),
                ("modules", 101.0, Some(0.0)),
                ("payload", 101.0, Some(2.0)),
                ("select-disk", 103.0, Some(7.0)),
                ("partition", 111.0, Some(1.5)),
                ("root-tree", 113.0, None),
            ]
        );
    }

    #[test]
    fn a_failure_carries_its_error_and_log_lines_and_stops_the_clock() {
        let mut failed = ev(3, 105.0, steps::PARTITION, State::Failed, None);
        failed.error = vec![
            "writing GPT to /dev/vda".into(),
            "Input/output error".into(),
        ];
        failed.log_tail = vec!["step partition".into(), "sgdisk: error".into()];
        let events = [
            ev(1, 100.0, steps::AGENT, State::Started, None),
            ev(2, 101.0, steps::PARTITION, State::Started, None),
            failed,
        ];
        let with_times: Vec<(f64, &Event)> = events.iter().map(|e| (e.ts, e)).collect();
        let v = view("m", "b", 2, &with_times, vec![], 500.0).unwrap();
        assert_eq!(v.outcome, Outcome::Failed);
        assert_eq!(
            v.elapsed_s, 5.0,
            "a failed install's time stops at its last event"
        );
        let f = v.failure.unwrap();
        assert_eq!(f.step, "partition");
        assert_eq!(f.log_tail, ["step partition", "sgdisk: error"]);
        assert_eq!(v.timeline[1].seconds, Some(4.0));
    }

    #[test]
    fn install_done_is_the_whole_way() {
        let events = [ev(12, 100.0, steps::INSTALL, State::Done, None)];
        let with_times: Vec<(f64, &Event)> = events.iter().map(|e| (e.ts, e)).collect();
        let v = view("m", "b", 1, &with_times, vec![3], 200.0).unwrap();
        assert_eq!((v.outcome, v.progress), (Outcome::Succeeded, Some(100.0)));
        assert_eq!(v.gaps, [3]);
        assert_eq!(v.step_index, None);
    }
}
