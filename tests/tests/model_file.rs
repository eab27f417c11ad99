//! The `.fmq` model file: round trip, and every way it can be damaged gives
//! an error (never a panic, never a silently different model).

use facemark::float::weights::FloatWeights;
use facemark::quant::quantize::QuantModel;
use facemark_core::Model;
use facemark_core::model::{
    ALL_INT8, HEADER_LEN, Layout, ModelError, WeightType, field, int8_file_len,
};
use facemark_core::network::{LAYER_COUNT, LAYERS, NETWORK_HASH};
use rand::{Rng, SeedableRng};

mod qemu_common;

fn valid_file() -> (QuantModel, Vec<u8>) {
    let w = FloatWeights::random(11, 0.05);
    let q = QuantModel::new(&w, &[4.0, 6.0, 8.0, 10.0, 12.0]).unwrap();
    let f = q.to_fmq();
    (q, f)
}

/// A file whose dense layer 1 (and, with `both`, dense 2) holds int4
/// weights, chosen by the nearest-rounding quantizer.
fn int4_file(both: bool) -> (QuantModel, Vec<u8>) {
    use facemark::quant::int4::{Int4Method, quantize};
    use facemark::quant::quantize::{ChosenWeights, kernel_rows};
    let w = FloatWeights::random(11, 0.05);
    let act = [4.0, 6.0, 8.0, 10.0, 12.0];
    let layers: &[usize] = if both { &[4, 5] } else { &[4] };
    let chosen: Vec<ChosenWeights> = layers
        .iter()
        .map(|&li| {
            let (scales, kernel_weights) = quantize(
                &kernel_rows(&w, li),
                LAYERS[li].fan_in(),
                Int4Method::Mse,
                None,
            )
            .unwrap();
            ChosenWeights {
                layer: li,
                weight_type: WeightType::Int4,
                scales,
                kernel_weights,
            }
        })
        .collect();
    let q = QuantModel::with_weights(&w, &act, &chosen).unwrap();
    let f = q.to_fmq();
    (q, f)
}

fn rewrite_crc(f: &mut [u8]) {
    let n = f.len() - 4;
    let crc = facemark_core::crc32::crc32(&f[..n]);
    f[n..].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn round_trip_reads_back_every_parameter() {
    for (q, f) in [valid_file(), int4_file(false), int4_file(true)] {
        round_trip(&q, &f);
    }
}

fn round_trip(q: &QuantModel, f: &[u8]) {
    let types: [WeightType; LAYER_COUNT] = std::array::from_fn(|i| q.layers[i].weight_type);
    assert_eq!(f.len(), Layout::new(types).file_len);
    let m = Model::parse(f).unwrap();
    assert_eq!(m.weight_types(), types);
    let folded = q.folded_biases();
    for (i, l) in LAYERS.iter().enumerate() {
        let v = m.layer(i);
        assert_eq!(v.layer, *l);
        assert_eq!(v.weight_type, types[i]);
        let w: Vec<i8> = (0..l.weight_len())
            .map(|k| v.weight(k / l.fan_in(), k % l.fan_in()))
            .collect();
        assert_eq!(w, q.layers[i].kernel_weights);
        if types[i] == WeightType::Int8 {
            assert_eq!(v.weights(), q.layers[i].kernel_weights.as_slice());
        }
        assert_eq!(v.in_zero_point, q.layers[i].in_zero_point);
        assert_eq!(v.out_zero_point, q.layers[i].out_zero_point);
        for (c, (&bias, &m)) in folded[i].iter().zip(&q.layers[i].multipliers).enumerate() {
            assert_eq!(v.bias(c), bias);
            assert_eq!(v.multiplier(c), m);
        }
        assert_eq!(folded[i].len(), l.out_ch);
    }
    eprintln!("seed network .fmq ({types:?}): {} bytes", f.len());
}

#[test]
fn every_truncation_is_refused() {
    for (_, f) in [valid_file(), int4_file(false)] {
        truncations_refused(&f);
    }
}

fn truncations_refused(f: &[u8]) {
    let f = f.to_vec();
    for len in 0..f.len() {
        match Model::parse(&f[..len]) {
            Err(ModelError::Truncated { len: l, .. }) => assert_eq!(l, len),
            Err(e) if len < HEADER_LEN => panic!("length {len}: {e}"),
            Err(_) => {}
            Ok(_) => panic!("a file truncated to {len} bytes parsed"),
        }
    }
    let mut long = f.clone();
    long.push(0);
    assert!(matches!(
        Model::parse(&long),
        Err(ModelError::TrailingBytes { .. })
    ));
}

#[test]
fn random_corruptions_are_refused() {
    for (_, f) in [valid_file(), int4_file(false)] {
        corruptions_refused(&f);
    }
}

fn corruptions_refused(f: &[u8]) {
    let f = f.to_vec();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let cases: Vec<Vec<(usize, u8)>> = (0..10_000)
        .map(|k| {
            let n = if k % 3 == 0 {
                rng.random_range(2..8)
            } else {
                1
            };
            (0..n)
                .map(|_| {
                    let at = rng.random_range(0..f.len());
                    // Half single-bit flips, half whole-byte changes.
                    let x = if rng.random() {
                        1u8 << rng.random_range(0..8)
                    } else {
                        rng.random_range(1..=255)
                    };
                    (at, x)
                })
                .collect()
        })
        .collect();
    let threads = 2;
    std::thread::scope(|s| {
        for part in cases.chunks(cases.len().div_ceil(threads)) {
            let f = &f;
            s.spawn(move || {
                let mut g = f.clone();
                for case in part {
                    for &(at, x) in case {
                        g[at] ^= x;
                    }
                    let changed = g != *f;
                    let r = Model::parse(&g);
                    assert!(
                        !changed || r.is_err(),
                        "corruption {case:?} parsed as a valid model"
                    );
                    for &(at, x) in case.iter().rev() {
                        g[at] ^= x;
                    }
                }
            });
        }
    });
}

#[test]
fn each_header_fault_has_its_own_error() {
    let (_, f) = valid_file();
    let with = |at: usize, bytes: &[u8], crc: bool| {
        let mut g = f.clone();
        g[at..at + bytes.len()].copy_from_slice(bytes);
        if crc {
            rewrite_crc(&mut g);
        }
        Model::parse(&g).unwrap_err()
    };
    assert!(matches!(
        with(0, b"GIF8", false),
        ModelError::BadMagic { .. }
    ));
    // Version 1 (before weight types) and any other: both versions named.
    for v in [1u16, 3] {
        let e = with(4, &v.to_le_bytes(), false);
        assert_eq!(
            e,
            ModelError::UnsupportedVersion {
                found: v,
                supported: 2
            }
        );
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("version {v}")) && msg.contains("version 2"),
            "{msg}"
        );
    }
    assert!(matches!(
        with(6, &32u16.to_le_bytes(), false),
        ModelError::BadHeaderLength { found: 32 }
    ));
    assert!(matches!(
        with(8, &(NETWORK_HASH ^ 1).to_le_bytes(), false),
        ModelError::OtherNetwork { .. }
    ));
    assert!(matches!(
        with(16, &5u16.to_le_bytes(), false),
        ModelError::LayerCount { found: 5, .. }
    ));
    assert!(matches!(
        with(20, &7u32.to_le_bytes(), false),
        ModelError::PayloadLength { found: 7, .. }
    ));
    assert!(matches!(
        with(int8_file_len() - 4, &[0, 0, 0, 0], false),
        ModelError::BadChecksum { .. }
    ));
    // Values the kernels cannot use are refused even with a valid CRC, at
    // their offset: a zero multiplier in layer 0, channel 0.
    let mult_off = HEADER_LEN + 8 + 4 * LAYERS[0].out_ch;
    assert_eq!(
        with(mult_off, &[0, 0, 0, 0], true),
        ModelError::BadValue {
            offset: mult_off,
            what: "multiplier not in [2^30, 2^31) with a normal exponent"
        }
    );
    // A ReLU output's zero point must be -128.
    let e = with(HEADER_LEN + 4, &5i32.to_le_bytes(), true);
    assert!(
        matches!(e, ModelError::BadValue { offset, .. } if offset == HEADER_LEN + 4),
        "{e}"
    );
    // Messages say where.
    assert!(with(0, b"GIF8", false).to_string().contains("offset 0"));
    assert_eq!(LAYER_COUNT, 6);
}

// --- Bounds the kernels rely on (issue 15): each refused with a valid CRC,
// at its layer, channel and offset; each edge value just inside parses.

/// The committed model, or (without it) the generated one.
fn base_file() -> Vec<u8> {
    let committed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/facemark.fmq");
    std::fs::read(committed).unwrap_or_else(|_| valid_file().1)
}

/// Where the all-int8 file's fields lie (the base file's layout).
fn layout() -> Layout {
    Layout::new(ALL_INT8)
}
fn bias_at(i: usize, ch: usize) -> usize {
    layout().sections[i].bias_at(ch)
}
fn mult_at(i: usize, ch: usize) -> usize {
    layout().sections[i].mult_at(ch)
}
fn weight_at(i: usize, ch: usize, k: usize) -> usize {
    layout().sections[i].weights.start + ch * LAYERS[i].fan_in() + k
}

/// `f` with `bytes` at `at` and its CRC recomputed, parsed.
fn edited(f: &[u8], edits: &[(usize, &[u8])]) -> Result<(), ModelError> {
    let mut g = f.to_vec();
    for &(at, bytes) in edits {
        g[at..at + bytes.len()].copy_from_slice(bytes);
    }
    rewrite_crc(&mut g);
    Model::parse(&g).map(|_| ())
}

fn assert_out_of_bound(r: Result<(), ModelError>, layer: usize, channel: usize, offset: usize) {
    match r {
        Err(
            e @ ModelError::OutOfBound {
                layer: l,
                channel: c,
                offset: o,
                ..
            },
        ) => {
            assert_eq!((l, c, o), (layer, channel, offset), "{e}");
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("layer {layer} channel {channel}"))
                    && msg.contains(&format!("offset {offset}")),
                "{msg}"
            );
            // It fits (and reads whole in) the board's `Info` reply.
            assert!(msg.len() <= 160, "{} chars: {msg}", msg.len());
        }
        other => panic!(
            "expected OutOfBound at layer {layer} channel {channel} offset {offset}, got {other:?}"
        ),
    }
}

#[test]
fn base_model_parses_and_generators_stay_in_bound() {
    let f = base_file();
    Model::parse(&f).unwrap();
    for seed in 0..4 {
        let w = FloatWeights::random(seed, 0.05);
        let q = QuantModel::new(&w, &[4.0, 6.0, 8.0, 10.0, 12.0]).unwrap();
        Model::parse(&q.to_fmq()).unwrap();
        assert!(q.layers.iter().all(|l| !l.kernel_weights.contains(&-128)));
        Model::parse(&qemu_common::random_model(seed)).unwrap();
    }
}

#[test]
fn a_weight_of_minus_128_is_refused_and_minus_127_parses() {
    let f = base_file();
    for (i, l) in LAYERS.iter().enumerate() {
        for (ch, k) in [(0, 0), (l.out_ch - 1, l.fan_in() - 1), (l.out_ch / 2, 3)] {
            let at = weight_at(i, ch, k);
            edited(&f, &[(at, &[0x81])]).unwrap();
            edited(&f, &[(at, &[0x7f])]).unwrap();
            assert_out_of_bound(edited(&f, &[(at, &[0x80])]), i, ch, at);
        }
    }
}

#[test]
fn a_bias_that_could_overflow_an_accumulator_is_refused_at_its_edge() {
    use facemark_core::model::max_abs_bias;
    let f = base_file();
    // The file: i32::MAX at layer 0's bias 0 (byte 40 in format
    // version 1; the weight types moved it 8 bytes on).
    let at = bias_at(0, 0);
    assert_eq!(at, HEADER_LEN + 8);
    assert_out_of_bound(edited(&f, &[(at, &i32::MAX.to_le_bytes())]), 0, 0, at);
    for (i, l) in LAYERS.iter().enumerate() {
        let max = max_abs_bias(l.fan_in());
        assert_eq!(max, i32::MAX as i64 - 128 * 127 * l.fan_in() as i64);
        let max = i32::try_from(max).unwrap();
        for ch in [0, l.out_ch - 1] {
            let at = bias_at(i, ch);
            for v in [i32::MAX, i32::MIN, max + 1, -max - 1] {
                assert_out_of_bound(edited(&f, &[(at, &v.to_le_bytes())]), i, ch, at);
            }
            // Just inside. The last layer's scale bound also reads the bias:
            // give that channel a small enough scale.
            let small = facemark_core::requant::Multiplier::from_f32(1e-9).unwrap();
            for v in [max, -max] {
                let mut edits: Vec<(usize, Vec<u8>)> = vec![(at, v.to_le_bytes().to_vec())];
                if i + 1 == LAYER_COUNT {
                    edits.push((mult_at(i, ch), small.mult.to_le_bytes().to_vec()));
                    edits.push((
                        mult_at(i, ch) + 4 * l.out_ch,
                        small.shift.to_le_bytes().to_vec(),
                    ));
                }
                let edits: Vec<(usize, &[u8])> =
                    edits.iter().map(|(a, b)| (*a, b.as_slice())).collect();
                edited(&f, &edits)
                    .unwrap_or_else(|e| panic!("layer {i} channel {ch} bias {v}: {e}"));
            }
        }
    }
}

#[test]
fn a_last_layer_scale_that_could_leave_the_output_range_is_refused_at_its_edge() {
    use facemark_core::model::{MAX_OUTPUT_UNIT, max_abs_dot, output_in_bound};
    use facemark_core::requant::Multiplier;
    let f = base_file();
    let m = Model::parse(&f).unwrap();
    let i = LAYER_COUNT - 1;
    let l = LAYERS[i];
    let put = |ch: usize, mult: Multiplier| {
        let (a, b) = (mult.mult.to_le_bytes(), mult.shift.to_le_bytes());
        edited(
            &f,
            &[(mult_at(i, ch), &a), (mult_at(i, ch) + 4 * l.out_ch, &b)],
        )
    };
    for ch in [0, 7, l.out_ch - 1] {
        let bias = m.layer(i).bias(ch);
        let max_acc = bias.unsigned_abs() as f64 + max_abs_dot(l.fan_in()) as f64;
        // The largest f32 scale within the bound, and the next one up.
        let mut inside = (MAX_OUTPUT_UNIT as f64 / max_acc) as f32;
        while !output_in_bound(inside, bias, l.fan_in()) {
            inside = f32::from_bits(inside.to_bits() - 1);
        }
        while output_in_bound(f32::from_bits(inside.to_bits() + 1), bias, l.fan_in()) {
            inside = f32::from_bits(inside.to_bits() + 1);
        }
        let outside = f32::from_bits(inside.to_bits() + 1);
        assert!(inside as f64 * max_acc <= 1e4 && outside as f64 * max_acc > 1e4);
        put(ch, Multiplier::from_f32(inside).unwrap()).unwrap();
        let at = mult_at(i, ch);
        assert_out_of_bound(put(ch, Multiplier::from_f32(outside).unwrap()), i, ch, at);
        // The issue's: a scale of 2^128 (infinite keypoints), and 1e35.
        let huge = Multiplier {
            mult: 0x7fff_ff80,
            shift: -128,
        };
        assert!(huge.is_valid());
        assert_out_of_bound(put(ch, huge), i, ch, at);
        assert_out_of_bound(
            put(ch, Multiplier::from_f32(1e35 / 4e6).unwrap()),
            i,
            ch,
            at,
        );
    }
    // Hidden layers' multipliers requantize to int8 (saturating): any valid one is fine.
    let big = Multiplier {
        mult: 0x7fff_ff80,
        shift: -120,
    };
    let (a, b) = (big.mult.to_le_bytes(), big.shift.to_le_bytes());
    edited(
        &f,
        &[
            (mult_at(4, 0), &a),
            (mult_at(4, 0) + 4 * LAYERS[4].out_ch, &b),
        ],
    )
    .unwrap();
}

#[test]
fn worst_case_inside_every_bound_gives_finite_keypoints() {
    // All weights -127, biases at their bound, the darkest image (every
    // input -128): layer 0's accumulators reach exactly i32::MAX.
    use facemark_core::model::{LayerParams, max_abs_bias, write};
    use facemark_core::network::INPUT_LEN;
    use facemark_core::requant::Multiplier;
    let weights: Vec<Vec<i8>> = LAYERS.iter().map(|l| vec![-127; l.weight_len()]).collect();
    let biases: Vec<Vec<i32>> = LAYERS
        .iter()
        .map(|l| vec![max_abs_bias(l.fan_in()) as i32; l.out_ch])
        .collect();
    let last_scale = 1e4 / (2.0 * i32::MAX as f32);
    let mults: Vec<Vec<Multiplier>> = LAYERS
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let s = if i + 1 == LAYER_COUNT {
                last_scale
            } else {
                1e-6
            };
            vec![Multiplier::from_f32(s).unwrap(); l.out_ch]
        })
        .collect();
    let params: [LayerParams<'_>; LAYER_COUNT] = std::array::from_fn(|i| LayerParams {
        in_zero_point: -128,
        out_zero_point: -128,
        bias: &biases[i],
        multipliers: &mults[i],
        weights: &weights[i],
        weight_type: WeightType::Int8,
    });
    let mut f = vec![0u8; int8_file_len()];
    write(&params, &mut f).unwrap();
    let m = Model::parse(&f).unwrap();
    let mut arena = Box::new([0i8; facemark_core::network::ARENA_LEN]);
    for image in [[0u8; INPUT_LEN], [255u8; INPUT_LEN]] {
        let k = facemark_core::infer_with::<facemark_core::kernels::Portable>(
            &m,
            &image,
            &mut arena,
            |_, _| {},
        );
        assert!(
            k.unit.iter().all(|v| v.is_finite() && v.abs() <= 1e4),
            "{:?}",
            k.unit
        );
    }
}

// --- int4 weights (issue 11): the weight-type field and the packed values.

#[test]
fn each_weight_type_fault_is_refused_at_its_byte() {
    let (_, f) = valid_file();
    let (_, f4) = int4_file(false);
    let at = |i: usize| field::WEIGHT_TYPES + i;
    // Unknown types, and int4 where the kernels do not take it (the convs).
    for (i, b) in [(0, 0u8), (4, 2), (5, 16), (2, 0xff)] {
        assert_eq!(
            edited(&f, &[(at(i), &[b])]),
            Err(ModelError::BadValue {
                offset: at(i),
                what: "weight type: 8 (int8) or 4 (int4) bits per weight"
            })
        );
    }
    for i in 0..4 {
        let e = edited(&f, &[(at(i), &[4])]).unwrap_err();
        assert!(
            matches!(e, ModelError::BadValue { offset, .. } if offset == at(i)),
            "{e}"
        );
    }
    // The padding after the types is reserved.
    assert_eq!(
        edited(&f, &[(at(LAYER_COUNT), &[1])]),
        Err(ModelError::Reserved {
            offset: at(LAYER_COUNT)
        })
    );
    // A type that changes the layout without the payload: its length is wrong.
    assert!(matches!(
        edited(&f, &[(at(4), &[4])]),
        Err(ModelError::PayloadLength { .. })
    ));
    assert!(matches!(
        edited(&f4, &[(at(4), &[8])]),
        Err(ModelError::PayloadLength { .. })
    ));
}

#[test]
fn an_int4_weight_of_minus_8_is_refused_and_minus_7_parses() {
    let (_, f) = int4_file(false);
    let m = Model::parse(&f).unwrap();
    let sec = m.layout().sections[4].clone();
    assert_eq!(sec.weight_type, WeightType::Int4);
    let row = LAYERS[4].fan_in() / 2;
    for (ch, byte) in [(0, 0), (LAYERS[4].out_ch - 1, row - 1), (100, 7)] {
        let at = sec.weights.start + ch * row + byte;
        let old = f[at];
        // -7 in the high nibble, -7 in the low one: inside.
        edited(&f, &[(at, &[0x90 | (old & 0x0f)])]).unwrap();
        edited(&f, &[(at, &[(old & 0xf0) | 0x09])]).unwrap();
        for bad in [0x80 | (old & 0x0f), (old & 0xf0) | 0x08] {
            let r = edited(&f, &[(at, &[bad])]);
            assert_out_of_bound(r, 4, ch, at);
            assert!(r.unwrap_err().to_string().contains("[-7, 7]"));
        }
    }
}

#[test]
fn the_int4_model_is_smaller_by_half_of_dense_1() {
    let (_, f8) = valid_file();
    let (_, f4) = int4_file(false);
    assert_eq!(f8.len() - f4.len(), LAYERS[4].weight_len() / 2);
    assert!(f4.len() < 1_000_000 - 200_000, "{} bytes", f4.len());
}

#[test]
fn weights_copied_to_other_memory_give_the_same_inference() {
    use facemark_core::network::{CONV_LAYERS, CONV_WEIGHT_BYTES, INPUT_LEN};
    for (_, f) in [valid_file(), int4_file(true)] {
        let m = Model::parse(&f).unwrap();
        assert_eq!(m.weight_bytes(0..CONV_LAYERS), CONV_WEIGHT_BYTES);
        // Too small a buffer, or layers out of the table: refused.
        let mut small = vec![0u8; CONV_WEIGHT_BYTES - 1];
        assert!(m.with_weights_in(0..CONV_LAYERS, &mut small).is_none());
        let mut none = vec![];
        assert!(m.with_weights_in(0..LAYER_COUNT + 1, &mut none).is_none());
        // The conv weights, and every layer's (int4 ones packed), copied.
        for layers in [0..CONV_LAYERS, 0..LAYER_COUNT] {
            let mut buf = vec![0x5au8; m.weight_bytes(layers.clone())];
            let range = buf.as_ptr_range();
            let copied = m.with_weights_in(layers.clone(), &mut buf).unwrap();
            for i in 0..LAYER_COUNT {
                let (a, b) = (m.layer(i), copied.layer(i));
                let stored = |v: &facemark_core::model::LayerView<'_>| {
                    v.packed()
                        .map_or(v.weights().as_ptr() as *const u8, |p| p.as_ptr())
                };
                assert_eq!(
                    range.contains(&stored(&b)),
                    layers.contains(&i),
                    "layer {i} read from the copy"
                );
                assert_eq!(a.weights(), b.weights());
                assert_eq!(a.packed(), b.packed());
            }
            let mut rng = rand::rngs::StdRng::seed_from_u64(3);
            for _ in 0..2 {
                let image: Box<[u8; INPUT_LEN]> = Box::new(core::array::from_fn(|_| rng.random()));
                let mut arena = Box::new([0i8; facemark_core::network::ARENA_LEN]);
                let want = facemark_core::infer(&m, &image, &mut arena);
                let got = facemark_core::infer(&copied, &image, &mut arena);
                assert_eq!(want.unit, got.unit);
            }
        }
    }
}
