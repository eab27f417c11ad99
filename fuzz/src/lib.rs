//! Helpers shared by the fuzz targets: a base model file and a fake board.

use facemark_core::model::{ALL_INT8, LayerParams, Layout, WeightType, write};
use facemark_core::network::{LAYER_COUNT, LAYERS};
use facemark_core::requant::Multiplier;

/// A valid model: the one `facemark-model` embeds (`models/facemark.fmq`),
/// or, without it, a deterministic synthetic one.
pub fn base_model() -> Vec<u8> {
    let embedded = facemark_model::file();
    if facemark_core::Model::parse(embedded).is_ok() {
        return embedded.to_vec();
    }
    synthetic_model(ALL_INT8)
}

/// A deterministic synthetic model with dense layer 1 in int4 (0.7 MB: the
/// model targets run it twice as fast as the int8 one).
pub fn base_model_int4() -> Vec<u8> {
    let mut types = ALL_INT8;
    types[4] = WeightType::Int4;
    synthetic_model(types)
}

/// A deterministic model with random parameters inside every bound.
pub fn synthetic_model(types: [WeightType; LAYER_COUNT]) -> Vec<u8> {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let weights: Vec<Vec<i8>> = LAYERS
        .iter()
        .zip(types)
        .map(|(l, t)| {
            let m = t.max_abs() as u64;
            (0..l.weight_len())
                .map(|_| ((next() % (2 * m + 1)) as i32 - m as i32) as i8)
                .collect()
        })
        .collect();
    let biases: Vec<Vec<i32>> = LAYERS
        .iter()
        .map(|l| {
            (0..l.out_ch)
                .map(|_| (next() % 4001) as i32 - 2000)
                .collect()
        })
        .collect();
    let mults: Vec<Vec<Multiplier>> = LAYERS
        .iter()
        .map(|l| {
            let s = 40.0 / ((l.fan_in() as f32).sqrt() * 127.0 * 70.0);
            vec![Multiplier::from_f32(s).unwrap(); l.out_ch]
        })
        .collect();
    let params: [LayerParams<'_>; LAYER_COUNT] = core::array::from_fn(|i| LayerParams {
        in_zero_point: -128,
        out_zero_point: -128,
        bias: &biases[i],
        multipliers: &mults[i],
        weights: &weights[i],
        weight_type: types[i],
    });
    let mut out = vec![0u8; Layout::new(types).file_len];
    write(&params, &mut out).unwrap();
    assert!(facemark_core::Model::parse(&out).is_ok());
    out
}

/// Rewrites the CRC-32 at the end of a model file.
pub fn fix_crc(f: &mut [u8]) {
    let n = f.len() - 4;
    let crc = facemark_core::crc32::crc32(&f[..n]);
    f[n..].copy_from_slice(&crc.to_le_bytes());
}

/// A board whose clock ticks by 7 per reading.
pub struct FakeBoard(pub u64);

impl facemark_serve::Board for FakeBoard {
    const NAME: &'static str = "fuzz";
    const COST_UNIT: &'static str = "ticks";
    const FIRMWARE_VERSION: &'static str = "0";
    fn now(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(7);
        self.0
    }
}
