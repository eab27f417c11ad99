//! The `.fmq` model file: round trip, and every way it can be damaged gives
//! an error (never a panic, never a silently different model).

use facemark::quantize::QuantModel;
use facemark::weights::FloatWeights;
use facemark_core::Model;
use facemark_core::model::{FILE_LEN, HEADER_LEN, ModelError};
use facemark_core::network::{LAYER_COUNT, LAYERS, NETWORK_HASH};
use rand::{Rng, SeedableRng};

fn valid_file() -> (QuantModel, Vec<u8>) {
    let w = FloatWeights::random(11, 0.05);
    let q = QuantModel::new(&w, &[4.0, 6.0, 8.0, 10.0, 12.0]).unwrap();
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
    let (q, f) = valid_file();
    assert_eq!(f.len(), FILE_LEN);
    let m = Model::parse(&f).unwrap();
    let folded = q.folded_biases();
    for (i, l) in LAYERS.iter().enumerate() {
        let v = m.layer(i);
        assert_eq!(v.layer, *l);
        assert_eq!(v.weights(), q.layers[i].kernel_weights.as_slice());
        assert_eq!(v.in_zero_point, q.layers[i].in_zero_point);
        assert_eq!(v.out_zero_point, q.layers[i].out_zero_point);
        for (c, (&bias, &m)) in folded[i].iter().zip(&q.layers[i].multipliers).enumerate() {
            assert_eq!(v.bias(c), bias);
            assert_eq!(v.multiplier(c), m);
        }
        assert_eq!(folded[i].len(), l.out_ch);
    }
    eprintln!("seed network .fmq: {} bytes", f.len());
}

#[test]
fn every_truncation_is_refused() {
    let (_, f) = valid_file();
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
    let (_, f) = valid_file();
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
    assert!(matches!(
        with(4, &2u16.to_le_bytes(), false),
        ModelError::UnsupportedVersion { found: 2, .. }
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
        with(FILE_LEN - 4, &[0, 0, 0, 0], false),
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
