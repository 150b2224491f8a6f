//! The event log of `imgforge serve`: installer events received over HTTP,
//! one JSON line each (`{"n":…,"received":…,"event":{…}}`), appended and
//! synced to disk before the sender hears that they arrived. An event is
//! named by (`machine`, `boot`, `seq`): the same event sent twice is kept
//! once. Seqs a boot skipped are its gaps until they arrive. On start the
//! log is read back, so dedupe and `n` go on where they stopped; a last
//! line cut short by a crash was never acknowledged and is cut away.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use imgforge_plan::{Event, EVENT_VERSION};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// How far past the highest seq of its boot an event may jump: an
/// installer sends about fifty events, and every seq skipped is held as a gap.
pub const MAX_SEQ_JUMP: u64 = 10_000;
/// The longest `machine` or `boot` accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// One line of the log file.
#[derive(Debug, Serialize, Deserialize)]
struct LogLine {
    n: u64,
    received: f64,
    event: Box<RawValue>,
}

/// One event in the log.
#[derive(Debug)]
pub struct Stored {
    /// The server's number for it: 1, 2, 3, … in the order they were stored.
    pub n: u64,
    /// When the server stored it (seconds since the Unix epoch).
    pub received: f64,
    /// The event as it was sent, compact, its known fields in the order
    /// the installer writes them, then any this version does not know.
    pub raw: Box<RawValue>,
    pub event: Event,
    pub machine: String,
    pub boot: String,
    /// The seqs of its boot that had not arrived when it did and that it
    /// jumped over.
    gap_at_arrival: Vec<u64>,
}

/// What `GET /events` and the stream show of one stored event.
#[derive(Debug, Serialize)]
pub struct RecordView<'a> {
    pub n: u64,
    pub received: f64,
    pub event: &'a RawValue,
    /// The seqs before this one of its boot that are still missing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gap_before: Vec<u64>,
}

/// The seqs of one boot of one machine.
#[derive(Debug, Default)]
pub struct Boot {
    /// Seq to index in the log's records.
    pub seqs: BTreeMap<u64, usize>,
    /// Seqs below the highest one that have not arrived.
    pub missing: BTreeSet<u64>,
}

impl Boot {
    fn max_seq(&self) -> u64 {
        self.seqs.keys().next_back().copied().unwrap_or(0)
    }
}

/// What became of one event of a POST.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum Outcome {
    /// Stored now, as record `n`.
    Stored { n: u64 },
    /// Stored before (as record `n`); not stored again.
    Duplicate { n: u64 },
}

/// Why a POST's events were not stored.
#[derive(Debug)]
pub enum AppendError {
    /// The events are not acceptable (400): nothing was stored.
    Invalid(String),
    /// The disk failed (503): nothing was acknowledged.
    Storage(String),
}

/// The log file and everything read from it.
pub struct EventLog {
    path: PathBuf,
    file: File,
    /// The file's length: where the next line goes, and what a failed
    /// append is cut back to.
    len: u64,
    records: Vec<Stored>,
    boots: HashMap<(String, String), Boot>,
    /// Each machine's boots, in the order their first event arrived.
    machines: BTreeMap<String, Vec<String>>,
    /// Set when a failed append could not be undone: the file's end is
    /// unknown, so nothing more is appended.
    broken: Option<String>,
}

/// What [`EventLog::open`] found.
#[derive(Debug, Clone, Copy)]
pub struct Reopened {
    pub records: usize,
    /// Bytes of a last line cut short, now removed.
    pub torn_bytes: u64,
}

impl EventLog {
    /// Opens (or creates) the log, reads it back and removes a torn last
    /// line. Fails when another process holds it or a line is not a record.
    pub fn open(path: &Path) -> anyhow::Result<(EventLog, Reopened)> {
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .with_context(|| format!("opening the event log {}", path.display()))?;
        if file.try_lock().is_err() {
            anyhow::bail!(
                "the event log {} is in use by another process (another imgforge serve?); stop it or pass another --log",
                path.display()
            );
        }
        if created {
            sync_parent(path)?;
        }
        let mut log = EventLog {
            path: path.to_owned(),
            file: file
                .try_clone()
                .with_context(|| format!("opening {}", path.display()))?,
            len: 0,
            records: Vec::new(),
            boots: HashMap::new(),
            machines: BTreeMap::new(),
            broken: None,
        };
        file.seek(SeekFrom::Start(0))
            .with_context(|| format!("reading the event log {}", path.display()))?;
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        let mut line_no = 0usize;
        let mut torn_bytes = 0u64;
        loop {
            line.clear();
            let read = reader
                .read_until(b'\n', &mut line)
                .with_context(|| format!("reading the event log {}", path.display()))?;
            if read == 0 {
                break;
            }
            line_no += 1;
            if line.last() != Some(&b'\n') {
                // A write cut short: it was never synced and acknowledged.
                torn_bytes = read as u64;
                break;
            }
            let where_ = || format!("{}:{line_no}", path.display());
            let text = &line[..line.len() - 1];
            if text.iter().all(u8::is_ascii_whitespace) {
                log.len += read as u64;
                continue;
            }
            let entry: LogLine = serde_json::from_slice(text).with_context(|| {
                format!(
                    "{}: not a record of imgforge serve; move the log away or remove the line",
                    where_()
                )
            })?;
            let value: Value = serde_json::from_str(entry.event.get()).with_context(|| {
                format!(
                    "{}: the event is not JSON; move the log away or remove the line",
                    where_()
                )
            })?;
            let (event, machine, boot) = identified(&value).map_err(|e| {
                anyhow::anyhow!("{}: {e}; move the log away or remove the line", where_())
            })?;
            if let Some(last) = log.records.last() {
                if entry.n <= last.n {
                    anyhow::bail!(
                        "{}: record n={} follows n={}: the numbers must grow; move the log away or remove the line",
                        where_(),
                        entry.n,
                        last.n
                    );
                }
            }
            if let Some(first) = log.stored_n(&machine, &boot, event.seq) {
                anyhow::bail!(
                    "{}: the event (machine {machine:?}, boot {boot:?}, seq {}) is also record n={first}; remove the line",
                    where_(),
                    event.seq
                );
            }
            log.index(Stored {
                n: entry.n,
                received: entry.received,
                raw: entry.event,
                event,
                machine,
                boot,
                gap_at_arrival: Vec::new(),
            });
            log.len += read as u64;
        }
        if torn_bytes > 0 {
            log.file
                .set_len(log.len)
                .and_then(|()| log.file.sync_all())
                .with_context(|| {
                    format!(
                        "cutting a torn last line ({torn_bytes} bytes) from the event log {}",
                        path.display()
                    )
                })?;
        }
        let records = log.records.len();
        Ok((
            log,
            Reopened {
                records,
                torn_bytes,
            },
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The record number of an event already stored.
    fn stored_n(&self, machine: &str, boot: &str, seq: u64) -> Option<u64> {
        let b = self.boots.get(&(machine.to_owned(), boot.to_owned()))?;
        b.seqs.get(&seq).map(|&i| self.records[i].n)
    }

    /// Stores a batch: the new events are written and synced to disk, then
    /// indexed. All or nothing: an invalid event refuses the whole batch, a
    /// failed write stores none of it.
    pub fn append(
        &mut self,
        batch: Vec<(Box<RawValue>, Event)>,
        received: f64,
    ) -> Result<Vec<Outcome>, AppendError> {
        if let Some(why) = &self.broken {
            return Err(AppendError::Storage(why.clone()));
        }
        let received = (received * 1000.0).round() / 1000.0;
        let mut next_n = self.records.last().map_or(1, |r| r.n + 1);
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut fresh = Vec::new();
        let mut in_batch: HashMap<(String, String, u64), u64> = HashMap::new();
        let mut batch_max: HashMap<(String, String), u64> = HashMap::new();
        let mut lines = String::new();
        for (i, (raw, event)) in batch.into_iter().enumerate() {
            let (machine, boot) = match (&event.machine, &event.boot) {
                (Some(m), Some(b)) => (m.clone(), b.clone()),
                _ => {
                    return Err(AppendError::Invalid(format!(
                        "event {} of the batch has no machine or boot",
                        i + 1
                    )))
                }
            };
            let seq = event.seq;
            if let Some(n) = self
                .stored_n(&machine, &boot, seq)
                .or_else(|| in_batch.get(&(machine.clone(), boot.clone(), seq)).copied())
            {
                outcomes.push(Outcome::Duplicate { n });
                continue;
            }
            let key = (machine.clone(), boot.clone());
            let max = batch_max
                .get(&key)
                .copied()
                .unwrap_or_else(|| self.boots.get(&key).map_or(0, Boot::max_seq));
            if seq > max.saturating_add(MAX_SEQ_JUMP) {
                return Err(AppendError::Invalid(format!(
                    "event {} of the batch: seq {seq} jumps more than {MAX_SEQ_JUMP} past the highest seq {max} of machine {machine:?} boot {boot:?}; seq counts up from 1 in each boot",
                    i + 1
                )));
            }
            batch_max.insert(key, max.max(seq));
            let line = LogLine {
                n: next_n,
                received,
                event: raw,
            };
            let text = serde_json::to_string(&line)
                .map_err(|e| AppendError::Invalid(format!("event {} of the batch: {e}", i + 1)))?;
            lines.push_str(&text);
            lines.push('\n');
            in_batch.insert((machine.clone(), boot.clone(), seq), next_n);
            outcomes.push(Outcome::Stored { n: next_n });
            fresh.push(Stored {
                n: next_n,
                received,
                raw: line.event,
                event,
                machine,
                boot,
                gap_at_arrival: Vec::new(),
            });
            next_n += 1;
        }
        if fresh.is_empty() {
            return Ok(outcomes);
        }
        let written = self
            .file
            .write_all(lines.as_bytes())
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            let what = format!("writing to the event log {}: {e}", self.path.display());
            // Cut back what part of the batch reached the file, so that a
            // later append does not follow half a line.
            if let Err(undo) = self
                .file
                .set_len(self.len)
                .and_then(|()| self.file.sync_all())
            {
                self.broken = Some(format!(
                    "{what}; cutting it back failed too ({undo}): restart imgforge serve, which drops the torn line"
                ));
            }
            return Err(AppendError::Storage(what));
        }
        self.len += lines.len() as u64;
        for stored in fresh {
            self.index(stored);
        }
        Ok(outcomes)
    }

    /// Adds a stored event to the in-memory state: its boot's seqs and
    /// gaps, its machine's boots.
    fn index(&mut self, mut stored: Stored) {
        let key = (stored.machine.clone(), stored.boot.clone());
        let boots = self.machines.entry(stored.machine.clone()).or_default();
        if !boots.contains(&stored.boot) {
            boots.push(stored.boot.clone());
        }
        let boot = self.boots.entry(key).or_default();
        let seq = stored.event.seq;
        let max = boot.max_seq();
        if seq > max {
            stored.gap_at_arrival = (max + 1..seq).collect();
            boot.missing.extend(stored.gap_at_arrival.iter().copied());
        } else {
            boot.missing.remove(&seq);
        }
        boot.seqs.insert(seq, self.records.len());
        self.records.push(stored);
    }

    /// The records after record `n`, at most `limit` of them.
    pub fn after(&self, n: u64, limit: usize) -> Vec<RecordView<'_>> {
        let start = self.records.partition_point(|r| r.n <= n);
        self.records[start..]
            .iter()
            .take(limit)
            .map(|r| self.view(r))
            .collect()
    }

    /// The last record's number (0 when there are none).
    pub fn last_n(&self) -> u64 {
        self.records.last().map_or(0, |r| r.n)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The record of number `n`.
    pub fn record(&self, n: u64) -> Option<RecordView<'_>> {
        let i = self.records.binary_search_by_key(&n, |r| r.n).ok()?;
        Some(self.view(&self.records[i]))
    }

    fn view<'a>(&'a self, r: &'a Stored) -> RecordView<'a> {
        let gap_before = match self.boots.get(&(r.machine.clone(), r.boot.clone())) {
            Some(boot) => r
                .gap_at_arrival
                .iter()
                .copied()
                .filter(|s| boot.missing.contains(s))
                .collect(),
            None => Vec::new(),
        };
        RecordView {
            n: r.n,
            received: r.received,
            event: &r.raw,
            gap_before,
        }
    }

    /// Each machine with its boots, oldest first.
    pub fn machines(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.machines
            .iter()
            .map(|(m, b)| (m.as_str(), b.as_slice()))
    }

    pub fn boot(&self, machine: &str, boot: &str) -> Option<&Boot> {
        self.boots.get(&(machine.to_owned(), boot.to_owned()))
    }

    pub fn stored(&self, index: usize) -> &Stored {
        &self.records[index]
    }
}

/// Syncs the directory of a new file, so the file itself survives a crash.
fn sync_parent(path: &Path) -> anyhow::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|d| d.sync_all())
        .with_context(|| {
            format!(
                "syncing the directory {} of the event log",
                parent.display()
            )
        })
}

/// The events of a POST body: one event object or an array of them. Each
/// must be an installer event of this version with `machine`, `boot` and a
/// `seq` from 1.
pub fn parse_batch(body: &[u8]) -> Result<Vec<(Box<RawValue>, Event)>, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        format!("the body is not JSON ({e}); send one event object or an array of them")
    })?;
    let (values, single) = match value {
        Value::Array(items) => (items, false),
        object @ Value::Object(_) => (vec![object], true),
        _ => return Err("the body must be one event object or an array of them".to_owned()),
    };
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let which = if single {
                "the event".to_owned()
            } else {
                format!("event {} of the batch", i + 1)
            };
            let (event, _, _) = identified(&v).map_err(|e| format!("{which}: {e}"))?;
            let json = ordered(&v, &event).map_err(|e| format!("{which}: {e}"))?;
            Ok((json, event))
        })
        .collect()
}

/// The event as one compact line: the fields [`Event`] knows in its order
/// (as the installer writes them), then the others as they were sent.
fn ordered(sent: &Value, event: &Event) -> Result<Box<RawValue>, serde_json::Error> {
    let mut text = serde_json::to_string(event)?;
    let known: serde_json::Map<String, Value> = serde_json::from_str(&text)?;
    text.pop(); // the closing brace
    if let Value::Object(fields) = sent {
        for (key, value) in fields.iter().filter(|(k, _)| !known.contains_key(*k)) {
            text.push(',');
            text.push_str(&serde_json::to_string(key)?);
            text.push(':');
            text.push_str(&serde_json::to_string(value)?);
        }
    }
    text.push('}');
    RawValue::from_string(text)
}

/// Reads one event and checks what the log relies on: the version, the
/// seq, and a `machine` and `boot` fit to show and to key by.
fn identified(value: &Value) -> Result<(Event, String, String), String> {
    if !value.is_object() {
        return Err("not a JSON object".to_owned());
    }
    let event: Event = serde_json::from_value(value.clone())
        .map_err(|e| format!("not an installer event: {e} (docs/events.md lists the fields)"))?;
    if event.v != EVENT_VERSION {
        return Err(format!(
            "event version {} is not read by this imgforge serve (it reads version {EVENT_VERSION}); use a matching imgforge",
            event.v
        ));
    }
    if event.seq == 0 {
        return Err("seq must count up from 1".to_owned());
    }
    let id = |name: &str, v: &Option<String>| -> Result<String, String> {
        let Some(v) = v else {
            return Err(format!(
                "no {name}: events sent over HTTP must carry machine, boot and seq"
            ));
        };
        if v.is_empty() || v.len() > MAX_ID_LEN || v.chars().any(char::is_control) {
            return Err(format!(
                "{name} {v:?} must be 1 to {MAX_ID_LEN} bytes without control characters"
            ));
        }
        Ok(v.clone())
    };
    let machine = id("machine", &event.machine)?;
    let boot = id("boot", &event.boot)?;
    Ok((event, machine, boot))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use imgforge_plan::{steps, State};

    fn event(machine: &str, boot: &str, seq: u64) -> (Box<RawValue>, Event) {
        let mut e = Event::new(seq, 1000.0 + seq as f64, steps::PARTITION, State::Progress);
        e.machine = Some(machine.into());
        e.boot = Some(boot.into());
        (
            RawValue::from_string(serde_json::to_string(&e).unwrap()).unwrap(),
            e,
        )
    }

    fn stored_seqs(log: &EventLog) -> Vec<(u64, u64)> {
        log.after(0, usize::MAX)
            .iter()
            .map(|r| {
                let event: Event = serde_json::from_str(r.event.get()).unwrap();
                (r.n, event.seq)
            })
            .collect()
    }

    #[test]
    fn duplicates_are_acknowledged_once_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let (mut log, opened) = EventLog::open(&path).unwrap();
        assert_eq!(opened.records, 0);
        let out = log
            .append(
                vec![
                    event("a", "b1", 1),
                    event("a", "b1", 2),
                    event("a", "b1", 1),
                ],
                5.0,
            )
            .unwrap();
        assert_eq!(
            out,
            [
                Outcome::Stored { n: 1 },
                Outcome::Stored { n: 2 },
                Outcome::Duplicate { n: 1 }
            ]
        );
        let out = log
            .append(vec![event("a", "b1", 2), event("a", "b2", 2)], 6.0)
            .unwrap();
        assert_eq!(out, [Outcome::Duplicate { n: 2 }, Outcome::Stored { n: 3 }]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(
            text.starts_with(r#"{"n":1,"received":5.0,"event":{"#),
            "{text}"
        );
    }

    #[test]
    fn gaps_are_flagged_and_filled() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = EventLog::open(&dir.path().join("log")).unwrap();
        log.append(
            vec![event("m", "b", 1), event("m", "b", 2), event("m", "b", 5)],
            1.0,
        )
        .unwrap();
        let gaps = |log: &EventLog| -> Vec<Vec<u64>> {
            log.after(0, usize::MAX)
                .into_iter()
                .map(|r| r.gap_before)
                .collect()
        };
        assert_eq!(gaps(&log), [vec![], vec![], vec![3, 4]]);
        assert_eq!(log.boot("m", "b").unwrap().missing, BTreeSet::from([3, 4]));
        log.append(vec![event("m", "b", 4)], 2.0).unwrap();
        assert_eq!(gaps(&log), [vec![], vec![], vec![3], vec![]]);
        log.append(vec![event("m", "b", 3)], 3.0).unwrap();
        assert!(gaps(&log).iter().all(Vec::is_empty));
        // Reading the log back gives the same state.
        drop(log);
        let (log, _) = EventLog::open(&dir.path().join("log")).unwrap();
        assert!(gaps(&log).iter().all(Vec::is_empty));
        assert_eq!(stored_seqs(&log), [(1, 1), (2, 2), (3, 5), (4, 4), (5, 3)]);
    }

    #[test]
    fn a_reopened_log_goes_on_where_it_stopped_and_drops_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let (mut log, _) = EventLog::open(&path).unwrap();
        log.append(vec![event("a", "b", 1), event("a", "b", 2)], 1.0)
            .unwrap();
        drop(log);
        let good = std::fs::read(&path).unwrap();
        let mut torn = good.clone();
        torn.extend_from_slice(br#"{"n":3,"received":2.0,"event":{"v":1,"#);
        std::fs::write(&path, &torn).unwrap();

        let (mut log, opened) = EventLog::open(&path).unwrap();
        assert_eq!(opened.records, 2);
        assert_eq!(opened.torn_bytes, (torn.len() - good.len()) as u64);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            good,
            "the torn line is cut away"
        );
        let out = log
            .append(vec![event("a", "b", 2), event("a", "b", 3)], 3.0)
            .unwrap();
        assert_eq!(out, [Outcome::Duplicate { n: 2 }, Outcome::Stored { n: 3 }]);
        drop(log);
        let (log, _) = EventLog::open(&path).unwrap();
        assert_eq!(stored_seqs(&log), [(1, 1), (2, 2), (3, 3)]);
    }

    #[test]
    fn a_damaged_line_in_the_middle_is_an_error_with_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let (mut log, _) = EventLog::open(&path).unwrap();
        log.append(vec![event("a", "b", 1)], 1.0).unwrap();
        drop(log);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.insert_str(0, "garbage\n");
        std::fs::write(&path, &text).unwrap();
        let err = format!("{:#}", EventLog::open(&path).err().unwrap());
        assert!(err.contains("events.jsonl:1: not a record"), "{err}");
    }

    #[test]
    fn the_log_is_held_by_one_server() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let _held = EventLog::open(&path).unwrap();
        let err = EventLog::open(&path).err().unwrap().to_string();
        assert!(err.contains("in use by another process"), "{err}");
    }

    #[test]
    fn batches_are_checked_before_anything_is_stored() {
        let ok = br#"{"boot":"b", "extra": [1, 2],"machine":"m","seq":1,"state":"started","step":"agent","ts":1.0,"v":1,"percent":null}"#;
        let parsed = parse_batch(ok).unwrap();
        assert_eq!(
            parsed[0].0.get(),
            r#"{"v":1,"seq":1,"ts":1.0,"step":"agent","state":"started","machine":"m","boot":"b","extra":[1,2],"percent":null}"#,
            "the installer's order, compact, unknown fields kept"
        );
        assert_eq!(parse_batch(b"[]").unwrap().len(), 0);
        let err = |body: &str| parse_batch(body.as_bytes()).unwrap_err();
        assert!(err("nope").contains("not JSON"));
        assert!(err("3").contains("one event object or an array"));
        assert!(
            err(r#"{"v":1,"seq":1,"ts":1.0,"step":"agent","state":"started","boot":"b"}"#)
                .contains("the event: no machine")
        );
        let no_boot = r#"[{"v":1,"seq":1,"ts":1.0,"step":"agent","state":"started","machine":"m","boot":"b"},{"v":1,"seq":2,"ts":1.0,"step":"agent","state":"done","machine":"m"}]"#;
        assert!(
            err(no_boot).contains("event 2 of the batch: no boot"),
            "{}",
            err(no_boot)
        );
        assert!(err(
            r#"{"v":1,"ts":1.0,"step":"agent","state":"started","machine":"m","boot":"b"}"#
        )
        .contains("missing field `seq`"));
        assert!(err(
            r#"{"v":2,"seq":1,"ts":1.0,"step":"agent","state":"started","machine":"m","boot":"b"}"#
        )
        .contains("event version 2"));
        assert!(err(r#"{"v":1,"seq":1,"ts":1.0,"step":"agent","state":"started","machine":"a\u001b[2J","boot":"b"}"#)
            .contains("without control characters"));

        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = EventLog::open(&dir.path().join("log")).unwrap();
        let far = log.append(
            vec![event("m", "b", 1), event("m", "b", 2 + MAX_SEQ_JUMP)],
            1.0,
        );
        assert!(
            matches!(far, Err(AppendError::Invalid(ref m)) if m.contains("jumps")),
            "{far:?}"
        );
        assert!(log.is_empty(), "nothing of a refused batch is stored");
    }
}
