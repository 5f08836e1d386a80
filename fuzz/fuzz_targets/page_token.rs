//! Page tokens: any text decodes or is refused as one violation of `page_token`, and a token
//! encoded for a position and query decodes to that position for that query only.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamgate::domain::PageToken;

fuzz_target!(|input: (&str, &str, &str)| {
    let (token, position, filter) = input;
    let query = ["providers/local", filter];
    match PageToken::decode(token, &query) {
        Ok(None) => assert!(token.is_empty()),
        Ok(Some(_)) => {}
        Err(e) => {
            assert_eq!(e.violations().len(), 1);
            assert_eq!(e.violations()[0].field, "page_token");
        }
    }
    let encoded = PageToken::encode(position, &query);
    assert_eq!(
        PageToken::decode(&encoded, &query).unwrap().as_deref(),
        Some(position)
    );
    let other = ["providers/local", "another filter"];
    if filter != "another filter" {
        assert!(PageToken::decode(&encoded, &other).is_err());
    }
});
