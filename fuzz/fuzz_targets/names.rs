//! Resource names: every parser takes any text without panicking, a name that parses prints
//! back as the text it came from, and parsing what it prints gives the same name. A stream
//! name's id is checked against each kind's pattern too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamgate::domain::capability::{IdChars, IdPattern};
use streamgate::domain::names::MAX_SEGMENT_LEN;
use streamgate::domain::{OperationName, ParentName, ProviderName, StreamName};

/// Parsing `$text` either fails with one violation of `field`, or gives a name that prints
/// back as `$text` and parses again to itself.
macro_rules! round_trip {
    ($name:ty, $text:expr) => {
        match <$name>::parse($text, "field") {
            Ok(name) => {
                let printed = name.to_string();
                assert_eq!(printed, $text);
                assert_eq!(<$name>::parse(&printed, "field").unwrap(), name);
                Some(name)
            }
            Err(e) => {
                assert_eq!(e.violations().len(), 1);
                assert_eq!(e.violations()[0].field, "field");
                None
            }
        }
    };
}

fuzz_target!(|text: &str| {
    round_trip!(ProviderName, text);
    round_trip!(ParentName, text);
    round_trip!(OperationName, text);
    if let Some(name) = round_trip!(StreamName, text) {
        assert!(name.parent().contains(&name));
        assert!(!name.stream.bytes().all(|b| b == b'.'));
        // A name holds ids of the widest kind's set; a narrower kind's pattern refuses the rest.
        let widest = IdPattern::new(IdChars::Name, MAX_SEGMENT_LEN);
        assert!(widest.matches(&name.stream));
        let upper = name
            .stream
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        let narrow = IdPattern::new(IdChars::UpperAlphanumeric, MAX_SEGMENT_LEN);
        assert_eq!(narrow.matches(&name.stream), upper);
    }
});
