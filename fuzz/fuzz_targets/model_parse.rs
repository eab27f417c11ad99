//! `Model::parse` on raw bytes never panics; what it accepts reads back.
//! The first byte picks a mode: raw bytes as they are, or the bytes laid
//! over a valid header and padded/cut to the file's length with the CRC
//! recomputed (so the per-layer checks see fuzzed values).
#![no_main]

use facemark_core::Model;
use facemark_core::model::{FILE_LEN, HEADER_LEN, MAX_ABS_WEIGHT, bias_in_bound};
use facemark_core::network::LAYERS;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn check(m: &Model<'_>) {
    for (i, layer) in LAYERS.iter().enumerate() {
        let v = m.layer(i);
        assert_eq!(v.layer, *layer);
        for (c, ch) in v.channels().enumerate() {
            assert!(ch.multiplier.is_valid());
            assert!(bias_in_bound(ch.bias, layer.fan_in()));
            assert_eq!(ch.bias, v.bias(c));
            assert!(
                ch.weights
                    .iter()
                    .all(|&w| (w as i64).abs() <= MAX_ABS_WEIGHT)
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        let _ = Model::parse(data);
        return;
    };
    if mode & 1 == 0 {
        if let Ok(m) = Model::parse(rest) {
            check(&m);
        }
        return;
    }
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    let base = BASE.get_or_init(facemark_fuzz::base_model);
    let mut f = base.clone();
    // Header kept; `rest[3..]` laid over the payload at the offset that
    // `rest[..3]` gives (24 bits, little-endian, from the payload's start).
    let (at, body) = match rest {
        [a, b, c, body @ ..] => {
            let o = u32::from_le_bytes([*a, *b, *c, 0]) as usize;
            (HEADER_LEN + o % (FILE_LEN - 4 - HEADER_LEN), body)
        }
        _ => (HEADER_LEN, rest),
    };
    let n = body.len().min(FILE_LEN - 4 - at);
    f[at..at + n].copy_from_slice(&body[..n]);
    facemark_fuzz::fix_crc(&mut f);
    if let Ok(m) = Model::parse(&f) {
        check(&m);
    }
});
