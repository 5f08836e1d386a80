//! Page tokens: any text decodes or is refused as one violation of `page_token`, and a token
//! signed for a position, a caller and a query decodes to that position for that caller and
//! query only.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamgate::domain::PageTokens;

fuzz_target!(|input: (&str, &str, &str)| {
    let (token, position, filter) = input;
    let tokens = PageTokens::with_key(&[7; 32]);
    let query = ["providers/local", filter];
    match tokens.decode(token, "fuzzer", &query) {
        Ok(None) => assert!(token.is_empty()),
        Ok(Some(_)) => {}
        Err(e) => {
            assert_eq!(e.violations().len(), 1);
            assert_eq!(e.violations()[0].field, "page_token");
        }
    }
    let encoded = tokens.encode(position, "fuzzer", &query);
    assert_eq!(
        tokens
            .decode(&encoded, "fuzzer", &query)
            .unwrap()
            .as_deref(),
        Some(position)
    );
    assert!(tokens.decode(&encoded, "someone-else", &query).is_err());
    let other = ["providers/local", "another filter"];
    if filter != "another filter" {
        assert!(tokens.decode(&encoded, "fuzzer", &other).is_err());
    }
});
