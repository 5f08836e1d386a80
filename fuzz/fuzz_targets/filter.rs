//! ListStreams / ListOperations filters: any text parses or is refused as one violation of
//! `filter`; a parsed filter holds only accepted keys, and printing its terms back in the
//! canonical form parses to the same terms.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamgate::domain::page::{MAX_FILTER_LEN, parse_filter};

const ALLOWED: [&str; 2] = ["stream_id_prefix", "state"];

fuzz_target!(|text: &str| {
    match parse_filter(text, &ALLOWED) {
        Ok(terms) => {
            for (key, _) in &terms {
                assert!(ALLOWED.contains(&key.as_str()), "{key:?}");
            }
            // Printed back in the canonical form, terms whose values hold no quote, no outer
            // space and no ` AND ` parse to themselves.
            let printed = terms
                .iter()
                .map(|(key, value)| format!("{key} = {value}"))
                .collect::<Vec<_>>()
                .join(" AND ");
            let plain = terms
                .iter()
                .all(|(_, value)| !value.contains('"') && value.trim() == value);
            if plain
                && printed.split(" AND ").count() == terms.len()
                && printed.len() <= MAX_FILTER_LEN
            {
                assert_eq!(
                    parse_filter(&printed, &ALLOWED).unwrap(),
                    terms,
                    "{printed:?}"
                );
            }
        }
        Err(e) => {
            assert_eq!(e.violations().len(), 1);
            assert_eq!(e.violations()[0].field, "filter");
        }
    }
});
