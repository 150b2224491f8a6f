//! docs/event.schema.json describes the installer's events as the agent
//! writes them: real event lines validate against it, every field of
//! `plan::Event` is in it, and it names no field the type lacks.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeSet;

use imgforge_plan::{steps, Event, State, EVENT_PREFIX};
use serde_json::{json, Value};

const SCHEMA: &str = include_str!("../../docs/event.schema.json");

fn schema() -> Value {
    serde_json::from_str(SCHEMA).unwrap()
}

/// The JSON of an event as the console line carries it.
fn from_line(event: &Event) -> Value {
    let line = event.to_line();
    serde_json::from_str(line.strip_prefix(EVENT_PREFIX).unwrap()).unwrap()
}

/// Events as the installer sends them, every field used by one of them.
fn real_events() -> Vec<Event> {
    let started = Event::new(1, 1_733_300_000.0, steps::AGENT, State::Started);
    let mut progress = Event::new(7, 1_733_300_000.25, steps::ROOT_TREE, State::Progress);
    progress.percent = Some(40.0);
    progress.bytes = Some(92_274_688);
    let mut done = Event::new(5, 1_733_300_003.5, steps::SELECT_DISK, State::Done);
    done.message = Some("/dev/vda (40.0 GiB, virtio)".into());
    done.data = Some(json!({"chosen": "/dev/vda", "rejected": [], "disks": []}));
    done.machine = Some("hv-01".into());
    done.boot = Some("6f2d0c1e9a".into());
    let mut failed = Event::new(9, 1_733_300_010.0, steps::PARTITION, State::Failed);
    failed.error = vec![
        "writing GPT to /dev/vda".into(),
        "Input/output error".into(),
    ];
    failed.log_tail = vec!["step partition".into(), "Input/output error".into()];
    failed.machine = Some("52:54:00:12:34:56".into());
    failed.boot = Some("b".into());
    let firstboot = Event::new(1, 1_733_400_000.0, steps::FIRSTBOOT, State::Done);
    // Spelled out without `..`: a field added to Event does not compile
    // here until this test (and so the schema) knows it.
    let every_field = Event {
        v: imgforge_plan::EVENT_VERSION,
        seq: 3,
        ts: 1_733_300_001.0,
        step: steps::PACKAGES.into(),
        state: State::Failed,
        percent: Some(100.0),
        bytes: Some(1),
        message: Some("m".into()),
        error: vec!["e".into()],
        log_tail: vec!["l".into()],
        data: Some(json!({})),
        machine: Some("hv-02".into()),
        boot: Some("c".into()),
    };
    vec![started, progress, done, failed, firstboot, every_field]
}

#[test]
fn real_events_are_valid() {
    let validator = jsonschema::validator_for(&schema()).unwrap();
    for event in real_events() {
        let value = from_line(&event);
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{value}: {errors:?}");
    }
    // And the schema does say no: a wrong state, a seq of 0, no step.
    for bad in [
        json!({"v": 1, "seq": 1, "ts": 1.0, "step": "agent", "state": "finished"}),
        json!({"v": 1, "seq": 0, "ts": 1.0, "step": "agent", "state": "done"}),
        json!({"v": 1, "seq": 1, "ts": 1.0, "state": "done"}),
        json!({"v": 1, "seq": 1, "ts": 1.0, "step": "agent", "state": "done", "machine": ""}),
    ] {
        assert!(!validator.is_valid(&bad), "{bad}");
    }
}

#[test]
fn the_schema_has_every_field_of_event_and_no_other() {
    let schema = schema();
    let properties: BTreeSet<&str> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut fields = BTreeSet::new();
    for event in real_events() {
        fields.extend(from_line(&event).as_object().unwrap().keys().cloned());
    }
    let fields: BTreeSet<&str> = fields.iter().map(String::as_str).collect();
    assert_eq!(
        properties, fields,
        "docs/event.schema.json and plan::Event differ"
    );
    let required: BTreeSet<String> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let always: BTreeSet<String> = from_line(&Event::new(1, 0.0, steps::AGENT, State::Done))
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        required, always,
        "required: exactly the fields every event has"
    );
    let step_names: Vec<&str> = schema["properties"]["step"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for step in steps::INSTALLER
        .iter()
        .chain(&[steps::INSTALL, steps::FIRSTBOOT])
    {
        assert!(step_names.contains(step), "{step} is a step in the schema");
    }
}
