//! The serial wire formats as a receiver decodes them: the same bytes as an
//! NDJSON line and as a COBS/postcard frame.
#![no_main]

use edgebone_firmware::report::wire::{decode_binary, decode_ndjson};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_ndjson(data);
    let _ = decode_binary(data);
});
