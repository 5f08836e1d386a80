//! The conformance suite: the behaviours every provider kind shares, written once and run
//! against every kind through its fake or emulator (the table in `kinds.rs`). Each case is
//! gated on the kind's Capability as ProviderService reports it to a caller (or, for the
//! provider's throttling, 5xx and passing states, on whether the kind has them); a case that
//! does not apply is reported "n/a" with the reason, never passed silently. The suite prints the
//! case × kind table and writes it to `target/conformance.md`; any failing case fails the test.
//!
//! Kinds run side by side, the cases of one kind one after another, each on a fresh peer and
//! a fresh gateway (moto, slow to start, is shared by the `cloudfront` cases, each behind its
//! own counting proxy).

#[path = "../support/mod.rs"]
mod support;
#[allow(dead_code)]
#[path = "../fakes/vod.rs"]
mod vod;

mod cases;
mod kinds;
mod proxy;

use std::any::Any;
use std::sync::Arc;

use kinds::{CASE_BOUND, Kind, Shared, Subject};
use streamgate::pb;

/// How a case ended on one kind.
#[derive(Clone, Debug)]
enum Outcome {
    Pass,
    NotApplicable(String),
    Fail(String),
}

impl Outcome {
    fn cell(&self) -> String {
        match self {
            Outcome::Pass => "pass".to_string(),
            Outcome::NotApplicable(why) => format!("n/a ({why})"),
            Outcome::Fail(_) => "**FAIL**".to_string(),
        }
    }
}

/// The text of a panic.
fn panic_text(panic: Box<dyn Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// The capability of `kind`'s instance, read through ProviderService as a caller would.
async fn capability(subject: &Subject) -> pb::Capabilities {
    let server = subject.gateway().await;
    server
        .providers()
        .get_provider(pb::GetProviderRequest {
            name: format!("providers/{}", subject.kind.id()),
        })
        .await
        .unwrap()
        .into_inner()
        .capabilities
        .expect("a provider has capabilities")
}

/// Runs every case on `kind`.
async fn run_kind(kind: Kind) -> Vec<Outcome> {
    let shared = Arc::new(
        tokio::task::spawn_blocking(move || Shared::start(kind))
            .await
            .unwrap(),
    );
    let caps = capability(&Subject::start(kind, &shared).await).await;
    let mut outcomes = Vec::new();
    for case in cases::ALL {
        if let Err(why) = (case.applies)(kind, &caps) {
            outcomes.push(Outcome::NotApplicable(why));
            continue;
        }
        let shared = Arc::clone(&shared);
        let run = case.run;
        let task = tokio::spawn(async move {
            let subject = Subject::start(kind, &shared).await;
            tokio::time::timeout(CASE_BOUND, run(subject)).await
        });
        let outcome = match task.await {
            Ok(Ok(())) => Outcome::Pass,
            Ok(Err(_)) => Outcome::Fail(format!("not done in {CASE_BOUND:?}")),
            Err(e) => Outcome::Fail(panic_text(e.into_panic())),
        };
        if let Outcome::Fail(why) = &outcome {
            eprintln!("conformance: {} on {}: {why}", case.name, kind.label());
        }
        outcomes.push(outcome);
    }
    outcomes
}

/// The case × kind table, in Markdown.
fn table(columns: &[Vec<Outcome>]) -> String {
    let mut text = String::from("| case |");
    for kind in Kind::ALL {
        text.push_str(&format!(" `{}` |", kind.label()));
    }
    text.push_str("\n|---|");
    text.push_str(&"---|".repeat(Kind::ALL.len()));
    text.push('\n');
    for (row, case) in cases::ALL.iter().enumerate() {
        text.push_str(&format!("| {} |", case.name));
        for column in columns {
            text.push_str(&format!(" {} |", column[row].cell()));
        }
        text.push('\n');
    }
    text
}

/// A kind added to the build without a row in `kinds.rs` would go untested: the suite's kinds
/// are exactly the registry's.
#[test]
fn every_kind_the_build_serves_is_in_the_table() {
    let mut served: Vec<&str> = streamgate::providers::kinds().collect();
    let mut tested: Vec<&str> = Kind::ALL.iter().map(|k| k.label()).collect();
    served.sort_unstable();
    tested.sort_unstable();
    assert_eq!(tested, served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_kind_conforms() {
    let tasks: Vec<_> = Kind::ALL
        .into_iter()
        .map(|kind| tokio::spawn(run_kind(kind)))
        .collect();
    let mut columns = Vec::new();
    for task in tasks {
        columns.push(task.await.unwrap());
    }
    let table = table(&columns);
    println!("{table}");
    let out = support::repo().join("target").join("conformance.md");
    std::fs::write(&out, &table).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    let failures: Vec<String> = Kind::ALL
        .iter()
        .zip(&columns)
        .flat_map(|(kind, column)| {
            cases::ALL
                .iter()
                .zip(column)
                .filter_map(move |(case, outcome)| match outcome {
                    Outcome::Fail(why) => Some(format!("{} on {}: {why}", case.name, kind.label())),
                    _ => None,
                })
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
