//! A short run of the decoder fuzzer (`make fuzz` runs a long one): no decoder panics or
//! hangs on mutated records, and JSON's fast path agrees with arrow-json on what it takes.

use std::time::Duration;

use kafkatable_e2e::fuzz::{fuzz, replay, targets};

#[test]
fn no_decoder_crashes_or_hangs_on_mutated_records() {
    let executions: u64 = std::env::var("KAFKATABLE_FUZZ_EXECUTIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5_000);
    for target in targets() {
        let run = fuzz(&target, executions, 7, Duration::from_secs(60))
            .unwrap_or_else(|finding| panic!("{finding}"));
        println!(
            "{}: {} executions, {} decoded whole, corpus {}",
            target.name, run.executions, run.accepted, run.corpus
        );
        assert!(run.accepted > 0, "{}: the seeds decode", target.name);
    }
}

/// Inputs long runs found, replayed on every run.
#[test]
fn earlier_findings_replay_clean() {
    let findings: &[(&str, &[u8], bool)] = &[
        // One record framed by the Confluent wire format (magic byte 0 and four bytes of schema
        // id) around `{}`: a row of nulls for both readers, once the reference reads the frame
        // as the ingester does.
        (
            "json-flat",
            &[0x20, 0x00, 0x7b, 0x7d, 0x7d, 0x2d, 0x20, 0x7b, 0x7d],
            true,
        ),
    ];
    let targets = targets();
    for (name, input, decodes) in findings {
        let target = targets
            .iter()
            .find(|t| t.name == *name)
            .unwrap_or_else(|| panic!("no target {name}"));
        let outcome = replay(target, input).unwrap_or_else(|finding| panic!("{finding}"));
        assert_eq!(outcome, *decodes, "{name} on {input:02x?}");
    }
}
