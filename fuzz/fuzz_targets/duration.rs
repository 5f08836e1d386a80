//! Durations of the config file: any text parses or is refused, and a duration printed in
//! humantime's form parses back to itself.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use streamgate::config::parse_duration;

fuzz_target!(|input: (&str, u64, u32)| {
    let (text, secs, nanos) = input;
    if let Err(why) = parse_duration(text) {
        assert!(!why.is_empty());
    }
    let duration = Duration::new(secs, nanos % 1_000_000_000);
    let printed = humantime::format_duration(duration).to_string();
    assert_eq!(parse_duration(&printed), Ok(duration), "{printed}");
});
