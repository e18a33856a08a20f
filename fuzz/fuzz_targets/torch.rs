//! PyTorch checkpoints (`quantize convert`, `quantize inspect`): the zip
//! archive and the legacy stream, the pickle read as data.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = edgebone_fuzz::torch::read_bytes(data);
});
