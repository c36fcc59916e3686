//! The logic of the `config` fuzz target (`fuzz/fuzz_targets/config.rs`), kept here so ordinary
//! tests can run it over the seed corpus (`fuzz/corpus/config/`) on stable Rust.

use crate::config::parse;
use crate::footprint::Footprint;

/// Parses `data` with [`parse`] when it is UTF-8 (anything else is not a configuration file
/// weir could read) and checks, panicking when one is broken:
///
/// * parsing returns, without a panic, whatever the text (the parser's limits refuse alias
///   bombs, deep nesting and oversized documents as soon as it reaches them);
/// * an error says something (its `Display` is not empty);
/// * a configuration that parses has a memory footprint ([`Footprint::of`]) that is
///   positive and did not saturate (the bounds on every capacity keep the arithmetic far
///   from overflow), with no part larger than the whole;
/// * parsing the same text again gives an equal configuration (parsing keeps no state from
///   one call to the next), unless the machine's available memory has shrunk meanwhile.
pub fn check_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let cfg = match parse(text) {
        Ok(cfg) => cfg,
        Err(e) => {
            assert!(!e.to_string().is_empty(), "an empty error for {text:?}");
            return;
        }
    };
    let fp = Footprint::of(&cfg);
    let total = fp.total();
    assert!(total > 0 && total < u64::MAX, "footprint {total} for {text:?}");
    assert!(fp.parts.iter().all(|(_, b)| *b <= total), "{fp:?}");
    assert!(!fp.describe().is_empty());
    match parse(text) {
        Ok(again) => assert!(again == cfg, "parsed twice, two configurations: {text:?}"),
        // The memory available may have shrunk in between: only that may differ.
        Err(e) if e.message.contains("this machine has") => {}
        Err(e) => panic!("parsed once, refused the second time ({e}): {text:?}"),
    }
}
