//! `Model::parse` on raw bytes never panics; what it accepts reads back.
//! The first byte picks a mode: raw bytes as they are, or the bytes laid
//! over a valid header (of an int8 model or one with int4 weights) and
//! padded/cut to the file's length with the CRC recomputed (so the
//! per-layer checks see fuzzed values).
#![no_main]

use facemark_core::Model;
use facemark_core::model::{HEADER_LEN, bias_in_bound};
use facemark_core::network::LAYERS;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn check(m: &Model<'_>) {
    for (i, layer) in LAYERS.iter().enumerate() {
        let v = m.layer(i);
        assert_eq!(v.layer, *layer);
        for c in 0..layer.out_ch {
            assert!(v.multiplier(c).is_valid());
            assert!(bias_in_bound(v.bias(c), layer.fan_in()));
            let max = v.weight_type.max_abs();
            if c % 16 == 0 {
                for k in 0..layer.fan_in() {
                    assert!((v.weight(c, k) as i32).abs() <= max);
                }
            }
        }
        if v.packed().is_none() {
            assert_eq!(v.channels().count(), layer.out_ch);
            for (c, ch) in v.channels().enumerate() {
                assert_eq!((ch.bias, ch.multiplier), (v.bias(c), v.multiplier(c)));
            }
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
    // Bit 1 picks the base: the int8 model or one with an int4 dense layer.
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    static BASE4: OnceLock<Vec<u8>> = OnceLock::new();
    let base = if mode & 2 == 0 {
        BASE.get_or_init(facemark_fuzz::base_model)
    } else {
        BASE4.get_or_init(facemark_fuzz::base_model_int4)
    };
    let file_len = base.len();
    let mut f = base.clone();
    // Header kept; `rest[3..]` laid over the payload at the offset that
    // `rest[..3]` gives (24 bits, little-endian, from the payload's start).
    let (at, body) = match rest {
        [a, b, c, body @ ..] => {
            let o = u32::from_le_bytes([*a, *b, *c, 0]) as usize;
            (HEADER_LEN + o % (file_len - 4 - HEADER_LEN), body)
        }
        _ => (HEADER_LEN, rest),
    };
    let n = body.len().min(file_len - 4 - at);
    f[at..at + n].copy_from_slice(&body[..n]);
    facemark_fuzz::fix_crc(&mut f);
    if let Ok(m) = Model::parse(&f) {
        check(&m);
    }
});
