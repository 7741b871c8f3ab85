//! A short run of the decoder fuzzer (`make fuzz` runs a long one): no decoder panics or
//! hangs on mutated records, and JSON's fast path agrees with arrow-json on what it takes.

use std::time::Duration;

use kafkatable_e2e::fuzz::{fuzz, targets};

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
