//! Trainer tests on small synthetic data (seconds, no data files needed).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::{Device, Tensor, TensorData};
use facemark::data::augment::{AugmentConfig, flip_keypoints, flip_sample};
use facemark::data::{Dataset, ErrorKind, LoadOptions, Sample, header_line, write_csv};
use facemark::eval::{ErrorSums, Predictor, evaluate};
use facemark::float::net::{Backend, Net, load_float_weights};
use facemark::train::{
    HostBatch, Schedule, TrainConfig, TrainEvent, TrainOptions, epoch_rng, masked_mse, optimizer,
    train, train_step,
};
use facemark_core::network::{FLIP_PAIRS, INPUT_LEN, INPUT_SIDE, LAYERS, OUTPUTS, pixel_to_unit};
use rand::{Rng, SeedableRng};

/// Faces with a bright dot at each keypoint, so there is something to learn.
fn synthetic(n: usize, seed: u64) -> Vec<Sample> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let mut image = Box::new([0u8; INPUT_LEN]);
            for p in image.iter_mut() {
                *p = rng.random_range(0..60);
            }
            let keypoints: [f32; OUTPUTS] =
                std::array::from_fn(|_| (rng.random_range(20.0f32..76.0) * 4.0).round() / 4.0);
            for k in 0..OUTPUTS / 2 {
                let (x, y) = (keypoints[2 * k] as usize, keypoints[2 * k + 1] as usize);
                image[y * INPUT_SIDE + x] = 255;
            }
            Sample { image, keypoints }
        })
        .collect()
}

fn in_memory(samples: Vec<Sample>, source: &str) -> Dataset {
    Dataset {
        samples,
        source: source.into(),
        ..Default::default()
    }
}

/// Two epochs in batches of 4: the cross-validation tests' small runs.
fn two_epoch_recipe() -> TrainConfig {
    TrainConfig {
        train: "synthetic".into(),
        epochs: 2,
        batch: 4,
        ..Default::default()
    }
}

fn csv_of(samples: &[Sample]) -> String {
    let mut v = Vec::new();
    write_csv(&mut v, samples).unwrap();
    String::from_utf8(v).unwrap()
}

fn same_keypoints(a: &[f32; OUTPUTS], b: &[f32; OUTPUTS]) -> bool {
    a.iter()
        .zip(b)
        .all(|(x, y)| (x.is_nan() && y.is_nan()) || x == y)
}

fn opts() -> LoadOptions {
    LoadOptions::default()
}

#[test]
fn csv_round_trip_with_missing_cells() {
    let mut s = synthetic(3, 1);
    s[1].keypoints[4] = f32::NAN;
    s[1].keypoints[5] = f32::NAN;
    s[2].keypoints[29] = f32::NAN;
    let ds = Dataset::from_csv_str(&csv_of(&s), "mem.csv", opts()).unwrap();
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.complete_count(), 1);
    for (a, b) in ds.samples.iter().zip(&s) {
        assert_eq!(a.image, b.image);
        assert!(same_keypoints(&a.keypoints, &b.keypoints));
    }
    let m = ds.samples[1].mask();
    assert_eq!(m[4], 0.0);
    assert_eq!(m[5], 0.0);
    assert_eq!(m.iter().sum::<f32>(), 28.0);
}

#[test]
fn csv_accepts_crlf_and_reordered_columns() {
    let s = synthetic(1, 2);
    let text = csv_of(&s);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    // Image first, then the keypoints, CRLF endings.
    let n = header.len();
    let reorder = |v: &[&str]| {
        let mut o = vec![v[n - 1]];
        o.extend_from_slice(&v[..n - 1]);
        o.join(",")
    };
    let text = format!("{}\r\n{}\r\n", reorder(&header), reorder(&row));
    let ds = Dataset::from_csv_str(&text, "crlf.csv", opts()).unwrap();
    assert_eq!(ds.samples[0], s[0]);
}

/// Replaces one row of a 4-row file and checks the error names line 3.
fn bad_row(edit: impl Fn(&mut Vec<String>)) -> facemark::data::DataError {
    let s = synthetic(4, 3);
    let text = csv_of(&s);
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let mut cells: Vec<String> = lines[2].split(',').map(String::from).collect();
    edit(&mut cells);
    lines[2] = cells.join(",");
    let text = lines.join("\n") + "\n";
    let err = Dataset::from_csv_str(&text, "bad.csv", opts()).unwrap_err();
    assert_eq!(err.file, "bad.csv");
    assert_eq!(err.line, 3, "{err}");
    assert!(err.to_string().starts_with("bad.csv:3"), "{err}");
    // With skip_bad_rows the other three rows load.
    let ds = Dataset::from_csv_str(
        &text,
        "bad.csv",
        LoadOptions {
            skip_bad_rows: true,
        },
    )
    .unwrap();
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.skipped, 1);
    assert_eq!(ds.skip_messages.len(), 1);
    let report = ds.skip_report("training data").unwrap();
    assert!(
        report.starts_with("training data: skipped 1 malformed rows in bad.csv\n  bad.csv:3"),
        "{report}"
    );
    assert_eq!(ds.samples[1], s[2]);
    err
}

#[test]
fn malformed_column_count() {
    let e = bad_row(|c| {
        c.remove(3);
    });
    assert_eq!(
        e.kind,
        ErrorKind::ColumnCount {
            expected: 31,
            found: 30
        }
    );
    let e = bad_row(|c| c.push("1".into()));
    assert_eq!(
        e.kind,
        ErrorKind::ColumnCount {
            expected: 31,
            found: 32
        }
    );
}

#[test]
fn malformed_pixel_count() {
    let e = bad_row(|c| {
        let img = c.last_mut().unwrap();
        let cut = img.rfind(' ').unwrap();
        img.truncate(cut);
    });
    assert_eq!(
        e.kind,
        ErrorKind::PixelCount {
            found: INPUT_LEN - 1
        }
    );
    assert_eq!(e.column, Some(("Image".to_string(), 31)));
    let e = bad_row(|c| c.last_mut().unwrap().push_str(" 7"));
    assert_eq!(
        e.kind,
        ErrorKind::PixelCount {
            found: INPUT_LEN + 1
        }
    );
}

#[test]
fn malformed_values_out_of_range() {
    let e = bad_row(|c| c[2] = "96.5".into());
    assert!(matches!(e.kind, ErrorKind::OutOfRange { .. }), "{e}");
    assert_eq!(e.column, Some(("right_eye_center_x".to_string(), 3)));
    let e = bad_row(|c| c[0] = "-1".into());
    assert!(matches!(e.kind, ErrorKind::OutOfRange { .. }), "{e}");
    let e = bad_row(|c| *c.last_mut().unwrap() = c.last().unwrap().replacen(' ', " 256 ", 1));
    // 256 is out of range (checked before the count).
    assert!(matches!(e.kind, ErrorKind::OutOfRange { .. }), "{e}");
    assert!(e.to_string().contains("column 31 (Image)"), "{e}");
}

#[test]
fn malformed_unparsable_numbers() {
    let e = bad_row(|c| c[7] = "12,5x".replace(',', ""));
    assert_eq!(e.kind, ErrorKind::Unparsable("125x".into()));
    assert_eq!(e.column, Some(("left_eye_outer_corner_y".to_string(), 8)));
    let e = bad_row(|c| *c.last_mut().unwrap() = c.last().unwrap().replacen(' ', " 1.5 ", 1));
    assert_eq!(e.kind, ErrorKind::Unparsable("1.5".into()));
    let e = bad_row(|c| c[0] = "nan".into());
    assert!(matches!(e.kind, ErrorKind::OutOfRange { .. }), "{e}");
}

#[test]
fn header_errors() {
    let e = Dataset::from_csv_str("", "empty.csv", opts()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Empty);
    let h = header_line().replace("nose_tip_x", "nose_x");
    let e = Dataset::from_csv_str(&h, "h.csv", opts()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::MissingColumn("nose_tip_x".into()));
    assert_eq!(e.line, 1);
}

#[test]
fn loads_gz_and_zip_files() {
    let s = synthetic(5, 4);
    let text = csv_of(&s);
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("a.csv");
    std::fs::write(&plain, &text).unwrap();
    let gz = dir.path().join("a.csv.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(text.as_bytes()).unwrap();
    enc.finish().unwrap();
    let zp = dir.path().join("training.zip");
    let mut zw = zip::ZipWriter::new(std::fs::File::create(&zp).unwrap());
    let o = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zw.start_file("readme.txt", o).unwrap();
    zw.write_all(b"not it").unwrap();
    zw.start_file("training.csv", o).unwrap();
    zw.write_all(text.as_bytes()).unwrap();
    zw.finish().unwrap();
    for p in [&plain, &gz, &zp] {
        let ds = Dataset::load(p, opts()).unwrap();
        assert_eq!(ds.samples, s, "{}", p.display());
    }
    // A bad row inside the zip names the entry and the line.
    let bad = text.replacen("\n", "\n1,2,3\n", 1);
    let zp2 = dir.path().join("bad.zip");
    let mut zw = zip::ZipWriter::new(std::fs::File::create(&zp2).unwrap());
    zw.start_file("training.csv", o).unwrap();
    zw.write_all(bad.as_bytes()).unwrap();
    zw.finish().unwrap();
    let e = Dataset::load(&zp2, opts()).unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.to_string().contains("bad.zip:training.csv:2"), "{e}");
    let e = Dataset::load(dir.path().join("missing.csv"), opts()).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Io(_)));
}

#[test]
fn split_is_seeded_and_disjoint() {
    let ds = in_memory(synthetic(20, 5), "s");
    let (a, b) = ds.split(0.25, 9);
    let (a2, b2) = ds.split(0.25, 9);
    assert_eq!(a.samples, a2.samples);
    assert_eq!(b.samples, b2.samples);
    assert_eq!((a.len(), b.len()), (15, 5));
    for s in &b.samples {
        assert!(!a.samples.contains(s));
    }
    let (_, b3) = ds.split(0.25, 10);
    assert_ne!(b.samples, b3.samples);
}

fn dev() -> Device {
    Backend::Flex.device()
}

#[test]
fn masked_loss_equals_mse_on_complete_rows_and_ignores_missing() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
    let n = 3;
    let p: Vec<f32> = (0..n * OUTPUTS)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let t: Vec<f32> = (0..n * OUTPUTS)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let plain: f64 = p
        .iter()
        .zip(&t)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum::<f64>()
        / (n * OUTPUTS) as f64;
    let mk =
        |v: &Vec<f32>| Tensor::<2>::from_data(TensorData::new(v.clone(), [n, OUTPUTS]), &dev());
    let ones = vec![1.0f32; n * OUTPUTS];
    let got: f32 = masked_mse(mk(&p), mk(&t), mk(&ones), n * OUTPUTS).into_scalar();
    assert!((got as f64 - plain).abs() < 1e-6, "{got} vs {plain}");
    // Burn's own MSE agrees.
    let burn_mse: f32 = (mk(&p) - mk(&t)).square().mean().into_scalar();
    assert!((got - burn_mse).abs() < 1e-6);

    // Mask out some coordinates: their predictions no longer matter.
    let mut mask = ones.clone();
    for i in [0, 7, 31, 89] {
        mask[i] = 0.0;
    }
    let kept = mask.iter().filter(|&&m| m == 1.0).count();
    let expect: f64 = p
        .iter()
        .zip(&t)
        .zip(&mask)
        .map(|((a, b), m)| (*m as f64) * ((a - b) as f64).powi(2))
        .sum::<f64>()
        / kept as f64;
    let got: f32 = masked_mse(mk(&p), mk(&t), mk(&mask), kept).into_scalar();
    assert!((got as f64 - expect).abs() < 1e-6);
    let mut p2 = p.clone();
    for i in [0, 7, 31, 89] {
        p2[i] += 100.0;
    }
    let got2: f32 = masked_mse(mk(&p2), mk(&t), mk(&mask), kept).into_scalar();
    assert_eq!(got, got2);

    // The host batch builds mask and targets from NaN labels.
    let mut s = synthetic(2, 7);
    s[0].keypoints[3] = f32::NAN;
    let refs: Vec<&Sample> = s.iter().collect();
    let b = HostBatch::build(&refs, &AugmentConfig::default(), &mut epoch_rng(0, 0));
    assert_eq!(b.labelled, 59);
    assert_eq!(b.mask[3], 0.0);
    assert_eq!(b.targets[3], 0.0);
    assert_eq!(b.targets[4], pixel_to_unit(s[0].keypoints[4]));
}

#[test]
fn flip_swaps_exactly_the_pairs_and_twice_is_identity() {
    let kp: [f32; OUTPUTS] = std::array::from_fn(|i| i as f32 + 1.0);
    let mut f = kp;
    flip_keypoints(&mut f);
    let partner = |k: usize| {
        FLIP_PAIRS
            .iter()
            .find_map(|&(a, b)| {
                if a == k {
                    Some(b)
                } else if b == k {
                    Some(a)
                } else {
                    None
                }
            })
            .unwrap_or(k)
    };
    for k in 0..OUTPUTS / 2 {
        let j = partner(k);
        assert_eq!(f[2 * k], 96.0 - kp[2 * j], "x of keypoint {k}");
        assert_eq!(f[2 * k + 1], kp[2 * j + 1], "y of keypoint {k}");
    }
    // The unpaired ones: nose tip and lip centres stay (mirrored).
    for k in [10, 13, 14] {
        assert_eq!(partner(k), k);
    }
    assert_eq!(
        FLIP_PAIRS,
        [(0, 1), (2, 4), (3, 5), (6, 8), (7, 9), (11, 12)]
    );

    let s = synthetic(1, 8).remove(0);
    let mut t = s.clone();
    flip_sample(&mut t);
    assert_ne!(t.image, s.image);
    // Pixel (x, y) moves to (95 - x, y).
    assert_eq!(t.image[5 * INPUT_SIDE + 90], s.image[5 * INPUT_SIDE + 5]);
    flip_sample(&mut t);
    assert_eq!(t.image, s.image);
    for (a, b) in t.keypoints.iter().zip(&s.keypoints) {
        assert!((a - b).abs() < 1e-4);
    }
}

#[test]
fn augmentation_moves_keypoints_with_the_image() {
    // A single bright pixel as the only keypoint content; shift it and check
    // the warped image's brightest pixel sits at the warped keypoint.
    let mut s = synthetic(1, 9).remove(0);
    s.image.fill(0);
    s.keypoints = [f32::NAN; OUTPUTS];
    s.keypoints[0] = 40.5;
    s.keypoints[1] = 30.5;
    s.image[30 * INPUT_SIDE + 40] = 255;
    let cfg = AugmentConfig {
        shift: 5.0,
        rotate: 10.0,
        scale: 0.1,
        ..Default::default()
    };
    let mut rng = epoch_rng(3, 0);
    for _ in 0..5 {
        let (img, kp) = cfg.apply(&s, &mut rng);
        let (i, _) = img
            .iter()
            .enumerate()
            .fold((0, 0.0f32), |m, (i, &v)| if v > m.1 { (i, v) } else { m });
        let (x, y) = ((i % INPUT_SIDE) as f32 + 0.5, (i / INPUT_SIDE) as f32 + 0.5);
        assert!(
            (x - kp[0]).abs() <= 1.0 && (y - kp[1]).abs() <= 1.0,
            "peak at ({x},{y}), keypoint ({},{})",
            kp[0],
            kp[1]
        );
        assert!(kp[2].is_nan());
    }
}

#[test]
fn erasing_occludes_one_rectangle_and_keeps_the_keypoints() {
    use facemark::data::augment::{ERASE_MAX_SIDE, ERASE_MIN_SIDE};
    use rand::RngCore;
    let mut s = synthetic(1, 11).remove(0);
    // A ramp no rectangle of one grey can match by chance.
    for (i, p) in s.image.iter_mut().enumerate() {
        *p = (i % 251) as u8;
    }
    let plain: Vec<f32> = s.image.iter().map(|&p| p as f32 / 255.0).collect();
    let cfg = AugmentConfig {
        erase: 1.0,
        ..Default::default()
    };
    let mut rng = epoch_rng(4, 0);
    for _ in 0..20 {
        let (img, kp) = cfg.apply(&s, &mut rng);
        assert_eq!(kp.map(f32::to_bits), s.keypoints.map(f32::to_bits));
        let changed: Vec<usize> = (0..img.len()).filter(|&i| img[i] != plain[i]).collect();
        let (cols, rows): (Vec<usize>, Vec<usize>) = changed
            .iter()
            .map(|&i| (i % INPUT_SIDE, i / INPUT_SIDE))
            .unzip();
        let (c0, c1) = (*cols.iter().min().unwrap(), *cols.iter().max().unwrap());
        let (r0, r1) = (*rows.iter().min().unwrap(), *rows.iter().max().unwrap());
        let (w, h) = (c1 - c0 + 1, r1 - r0 + 1);
        for side in [w, h] {
            assert!(
                (ERASE_MIN_SIDE as usize..=ERASE_MAX_SIDE as usize).contains(&side),
                "side {side}"
            );
        }
        // One grey fills the whole rectangle (a ramp pixel may equal it).
        let grey = img[r0 * INPUT_SIDE + c0];
        for r in r0..=r1 {
            for c in c0..=c1 {
                assert_eq!(img[r * INPUT_SIDE + c], grey, "pixel ({c}, {r})");
            }
        }
        assert!(changed.iter().all(|&i| img[i] == grey));
    }
    // The draws do not depend on the data, or on the hit: two images, or
    // probabilities 1 and 0.5, leave the RNG in the same state.
    let other = synthetic(1, 12).remove(0);
    let half = AugmentConfig {
        erase: 0.5,
        ..Default::default()
    };
    let (mut a, mut b, mut c) = (epoch_rng(5, 0), epoch_rng(5, 0), epoch_rng(5, 0));
    let mut hits = 0;
    for _ in 0..200 {
        cfg.apply(&s, &mut a);
        cfg.apply(&other, &mut b);
        let (img, _) = half.apply(&s, &mut c);
        hits += usize::from(img != plain);
    }
    let next = [a.next_u64(), b.next_u64(), c.next_u64()];
    assert!(next.iter().all(|&n| n == next[0]), "{next:?}");
    assert!((70..=130).contains(&hits), "{hits} of 200 hit at p = 0.5");
    // A probability outside [0, 1] is refused with the flag's name.
    let bad = AugmentConfig {
        erase: 1.5,
        ..Default::default()
    };
    let err = bad.check().unwrap_err().to_string();
    assert!(err.contains("--erase"), "{err}");
}

#[test]
fn checkpoint_and_float_weights_round_trip_exactly() {
    let d = dev();
    let net = Net::new(&d, 42);
    let w = net.to_float_weights();
    w.check().unwrap();
    assert_eq!(w.layers.len(), LAYERS.len());
    assert!(w.layers.iter().all(|l| l.bias.iter().all(|&b| b == 0.0)));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.bpk");
    net.save_checkpoint(&path).unwrap();
    let back = Net::load_checkpoint(&path, &d).unwrap();
    assert_eq!(back.to_float_weights(), w);
    assert_eq!(load_float_weights(&path).unwrap(), w);
    let again = Net::from_float_weights(&w, &d).unwrap();
    assert_eq!(again.to_float_weights(), w);
    // Same outputs, and forward_activations matches the table and forward.
    let imgs: Vec<Vec<u8>> = synthetic(2, 10)
        .into_iter()
        .map(|s| s.image.to_vec())
        .collect();
    let refs: Vec<&[u8]> = imgs.iter().map(|v| v.as_slice()).collect();
    assert_eq!(
        net.predict(&refs, &d).unwrap(),
        back.predict(&refs, &d).unwrap()
    );
    let x = facemark::float::net::images_to_tensor(&refs, &d).unwrap();
    let acts = net.forward_activations(x.clone());
    assert_eq!(acts.len(), LAYERS.len());
    for (a, l) in acts.iter().zip(&LAYERS) {
        assert_eq!(a.dims(), [2, l.out_ch, l.out_side(), l.out_side()]);
    }
    let last: Vec<f32> = acts
        .last()
        .unwrap()
        .clone()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let out: Vec<f32> = net.forward(x).into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(last, out);
    // Bad inputs are errors.
    assert!(Net::load_checkpoint(&dir.path().join("none.bpk"), &d).is_err());
    std::fs::write(dir.path().join("junk.bpk"), b"junk").unwrap();
    assert!(Net::load_checkpoint(&dir.path().join("junk.bpk"), &d).is_err());
    let mut short = w.clone();
    short.layers[2].weight.pop();
    assert!(Net::from_float_weights(&short, &d).is_err());
}

#[test]
fn a_few_training_steps_reduce_the_loss() {
    let device = Backend::Flex.autodiff_device();
    let cfg = TrainConfig::default();
    let mut net = Net::new(&device, 3);
    let mut optim = optimizer(&cfg);
    let s = synthetic(8, 11);
    let refs: Vec<&Sample> = s.iter().collect();
    let mut rng = epoch_rng(3, 0);
    let batch = HostBatch::build(&refs, &AugmentConfig::default(), &mut rng);
    let mut losses = Vec::new();
    for _ in 0..12 {
        let (next, loss) = train_step(net, &mut optim, &batch, 1e-3, &mut rng, &device).unwrap();
        net = next;
        losses.push(loss);
    }
    let first = losses[0];
    let tail = losses[9..].iter().sum::<f32>() / 3.0;
    assert!(tail < 0.5 * first, "losses {losses:?}");
}

#[test]
fn resume_reproduces_an_uninterrupted_run() {
    resume_case(None);
}

/// `--ema` changes what is validated and kept, never the training steps:
/// the raw weights score, epoch by epoch, exactly what the same run without
/// it scores; and a resumed run's average is the uninterrupted run's.
#[test]
fn a_weight_average_resumes_exactly_and_leaves_training_unchanged() {
    let (plain_history, plain_net) = resume_case(None);
    let (history, net) = resume_case(Some(0.9));
    assert_eq!(plain_history.len(), history.len());
    for (p, e) in plain_history.iter().zip(&history) {
        assert_eq!(p.raw_val_score, None);
        assert_eq!(e.raw_val_score, Some(p.val_score), "epoch {}", e.epoch);
        assert_eq!(e.train_loss, p.train_loss);
        assert_ne!(e.val_score, p.val_score, "epoch {}", e.epoch);
    }
    // The average is neither the raw weights nor the initial ones.
    assert_ne!(net, plain_net);
    assert_ne!(net, Net::new(&dev(), 5).to_float_weights());
}

/// Trains a small run whole and in two parts (stopped inside epoch 2,
/// resumed) and checks that they agree; returns the run's history and the
/// weights of the model it returns.
fn resume_case(
    ema: Option<f64>,
) -> (
    Vec<facemark::train::EpochMetrics>,
    facemark::float::weights::FloatWeights,
) {
    let s = synthetic(10, 12);
    let train_set = in_memory(s[..6].to_vec(), "train");
    let val_set = in_memory(s[6..].to_vec(), "val");
    let cfg = TrainConfig {
        train: "synthetic".into(),
        epochs: 3,
        batch: 4,
        schedule: Schedule::Onecycle,
        augment: AugmentConfig {
            flip: true,
            shift: 2.0,
            contrast: 0.1,
            ..Default::default()
        },
        seed: 5,
        ema,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let full = train(
        &cfg,
        &train_set,
        &val_set,
        &a,
        &TrainOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert!(!full.interrupted);
    assert_eq!(full.state.epochs_done, 3);
    // Stopped as Ctrl-C stops it: in the middle of epoch 2, which is dropped.
    let stop = Arc::new(AtomicBool::new(false));
    let (mut epoch_now, mut interrupted_at) = (0, None);
    let part = train(
        &cfg,
        &train_set,
        &val_set,
        &b,
        &TrainOptions {
            stop: Some(stop.clone()),
            ..Default::default()
        },
        &mut |e| match e {
            TrainEvent::EpochStart { epoch, .. } => epoch_now = epoch,
            TrainEvent::Batch { .. } if epoch_now == 2 => stop.store(true, Ordering::SeqCst),
            TrainEvent::Interrupted { epoch, epochs_done } => {
                interrupted_at = Some((epoch, epochs_done))
            }
            _ => {}
        },
    )
    .unwrap();
    assert!(part.interrupted);
    assert_eq!(interrupted_at, Some((2, 1)));
    assert_eq!(part.state.epochs_done, 1);
    // A fresh start in a used directory is refused.
    assert!(
        train(
            &cfg,
            &train_set,
            &val_set,
            &b,
            &TrainOptions::default(),
            &mut |_| {}
        )
        .is_err()
    );
    // A different recipe is refused on resume.
    let other = TrainConfig {
        lr: 2e-3,
        ..cfg.clone()
    };
    assert!(
        train(
            &other,
            &train_set,
            &val_set,
            &b,
            &TrainOptions {
                resume: true,
                ..Default::default()
            },
            &mut |_| {},
        )
        .is_err()
    );
    // The resumed run says where it starts and reports each epoch it runs.
    let mut events = Vec::new();
    let rest = train(
        &cfg,
        &train_set,
        &val_set,
        &b,
        &TrainOptions {
            resume: true,
            ..Default::default()
        },
        &mut |e| match e {
            TrainEvent::Resumed { after_epoch, .. } => {
                events.push(format!("resumed {after_epoch}"))
            }
            TrainEvent::EpochDone {
                metrics, epochs, ..
            } => events.push(format!("done {}/{epochs}", metrics.epoch)),
            _ => {}
        },
    )
    .unwrap();
    assert_eq!(events, ["resumed 1", "done 2/3", "done 3/3"]);
    assert_eq!(rest.state.epochs_done, 3);
    assert_eq!(rest.net.to_float_weights(), full.net.to_float_weights());
    let strip = |h: &[facemark::train::EpochMetrics]| {
        h.iter()
            .map(|m| (m.epoch, m.train_loss, m.val_mse, m.lr))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&rest.state.history), strip(&full.state.history));
    for f in [
        "config.json",
        "metrics.csv",
        "best.bpk",
        "loss.png",
        "last/model.bpk",
        "last/optim.bpk",
        "last/state.json",
    ] {
        assert!(b.join(f).is_file(), "{f} missing");
    }
    // With --ema the run returns and keeps the average, saved for --resume.
    let average = b.join("last/average.bpk");
    assert_eq!(average.is_file(), ema.is_some());
    let kept = if ema.is_some() {
        average
    } else {
        b.join("last/model.bpk")
    };
    assert_eq!(
        load_float_weights(&kept).unwrap(),
        rest.net.to_float_weights()
    );
    assert_eq!(
        std::fs::read_to_string(a.join("metrics.csv"))
            .unwrap()
            .lines()
            .count(),
        4
    );
    assert_eq!(
        load_float_weights(&a.join("best.bpk")).unwrap(),
        load_float_weights(&b.join("best.bpk")).unwrap()
    );
    (full.state.history, full.net.to_float_weights())
}

struct Truth(Vec<[f32; OUTPUTS]>, f32);

impl Predictor for Truth {
    fn name(&self) -> String {
        "truth".into()
    }
    fn predict(&self, images: &[&[u8]]) -> anyhow::Result<Vec<[f32; OUTPUTS]>> {
        // Look each image up by its first pixels (unique in the synthetic set).
        Ok(images
            .iter()
            .map(|img| self.0[img[0] as usize].map(|v| v + self.1))
            .collect())
    }
}

#[test]
fn evaluate_measures_known_errors() {
    let mut s = synthetic(5, 13);
    for (i, x) in s.iter_mut().enumerate() {
        x.image[0] = i as u8;
    }
    s[2].keypoints[0] = f32::NAN;
    let truth: Vec<[f32; OUTPUTS]> = s.iter().map(|x| x.keypoints.map(pixel_to_unit)).collect();
    let ds = in_memory(s, "mem");
    let m = evaluate(&Truth(truth.clone(), 0.0), &ds, &facemark::progress::Silent).unwrap();
    assert_eq!(m.mse, 0.0);
    assert_eq!(m.coordinates, 5 * OUTPUTS - 1);
    assert_eq!(m.per_keypoint[0].count, 9);
    let m = evaluate(&Truth(truth, 0.1), &ds, &facemark::progress::Silent).unwrap();
    assert!((m.mse - 0.01).abs() < 1e-6);
    assert!((m.score - 50.0).abs() < 1e-2);
    assert!((m.rmse_px - 4.8).abs() < 1e-3);
    let text = facemark::eval::compare_table(&m, &m);
    assert!(text.contains("left_eye_center"));
    let mut sums = ErrorSums::default();
    sums.add(&[0.0; OUTPUTS], &[48.0; OUTPUTS]);
    assert_eq!(sums.mse(), 0.0);
}

#[test]
fn schedules_have_the_documented_shape() {
    let c = TrainConfig {
        schedule: Schedule::Onecycle,
        lr: 1e-3,
        warmup: 0.3,
        ..Default::default()
    };
    assert!((c.lr_at(0, 1000) - 1e-3 / 25.0).abs() < 1e-12);
    assert!((c.lr_at(300, 1000) - 1e-3).abs() < 1e-12);
    assert!(c.lr_at(999, 1000) < 1e-6);
    let c = TrainConfig {
        schedule: Schedule::Cosine,
        ..c
    };
    assert_eq!(c.lr_at(0, 100), 1e-3);
    assert!((c.lr_at(50, 100) - 5e-4).abs() < 1e-12);
    let c = TrainConfig {
        schedule: Schedule::Constant,
        ..c
    };
    assert_eq!(c.lr_at(77, 100), 1e-3);
}

/// Records the notes a library function gives (it never prints them).
#[derive(Default)]
struct Notes(std::sync::Mutex<Vec<String>>);

impl facemark::progress::Progress for Notes {
    fn note(&self, line: &str) {
        self.0.lock().unwrap().push(line.to_string());
    }
}

#[test]
fn skipped_rows_are_reported_through_progress_even_when_split() {
    let text = csv_of(&synthetic(6, 21));
    let mut lines: Vec<&str> = text.lines().collect();
    lines[4] = "not,a,row";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.csv");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let mut cfg = TrainConfig {
        train: path.display().to_string(),
        ..Default::default()
    };
    // Without --skip-bad-rows the row is an error naming its line.
    let e = facemark::train::load_data(&cfg, &facemark::progress::Silent).unwrap_err();
    assert!(format!("{e:#}").contains("t.csv:5"), "{e:#}");
    cfg.skip_bad_rows = true;
    let notes = Notes::default();
    let (train, val) = facemark::train::load_data(&cfg, &notes).unwrap();
    assert_eq!(train.len() + val.len(), 5);
    let notes = notes.0.into_inner().unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].starts_with("training data: skipped 1 malformed rows in ")
            && notes[0].contains("t.csv:5"),
        "{notes:?}"
    );
}

#[test]
fn cross_validation_trains_each_fold_and_reports_the_spread() {
    let all = in_memory(synthetic(12, 31), "synthetic");
    let cfg = two_epoch_recipe();
    let dir = tempfile::tempdir().unwrap();
    let mut epochs_seen = Vec::new();
    let r = facemark::train::cv::cross_validate(
        &cfg,
        &all,
        3,
        None,
        dir.path(),
        &TrainOptions::default(),
        &mut |fold, e| {
            if let TrainEvent::EpochDone { metrics, .. } = e {
                epochs_seen.push((fold, metrics.epoch));
            }
        },
    )
    .unwrap();
    assert_eq!(
        epochs_seen,
        [(0, 1), (0, 2), (1, 1), (1, 2), (2, 1), (2, 2)]
    );
    let rows: Vec<_> = r.folds.iter().map(|f| f.rows.clone()).collect();
    assert_eq!(rows, [0..4, 4..8, 8..12]);
    for f in &r.folds {
        assert_eq!(f.last_epoch, 2);
        assert!(f.best_score >= f.last_score && f.last_score.is_finite());
        assert!(
            dir.path()
                .join(format!("fold-{}/config.json", f.fold))
                .is_file()
        );
    }
    let mean = r.folds.iter().map(|f| f.last_score).sum::<f64>() / 3.0;
    assert!((r.last.mean - mean).abs() < 1e-9);
    let saved: facemark::train::cv::CvReport =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("cv.json")).unwrap())
            .unwrap();
    // serde_json's default float parser may move the last digit (it did:
    // 3.6061034886807395 came back as 3.606103488680739), so the scores
    // are compared to 1e-12, the rest exactly.
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(1.0);
    assert_eq!(saved.folds.len(), r.folds.len());
    for (s, f) in saved.folds.iter().zip(&r.folds) {
        assert_eq!(
            (s.fold, &s.rows, s.last_epoch, s.best_epoch),
            (f.fold, &f.rows, f.last_epoch, f.best_epoch)
        );
        assert!(close(s.last_score, f.last_score) && close(s.best_score, f.best_score));
    }
    assert!(close(saved.last.mean, r.last.mean));
    // Without --ema there are no raw-weight figures.
    assert_eq!((r.raw_last, r.raw_best), (None, None));
    assert!(r.folds.iter().all(|f| f.raw_last_score.is_none()));
    // Too few rows for the folds: an error, not a panic.
    assert!(
        facemark::train::cv::cross_validate(
            &cfg,
            &all,
            7,
            None,
            dir.path(),
            &TrainOptions::default(),
            &mut |_, _| {}
        )
        .is_err()
    );
}

#[test]
fn folds_run_by_separate_calls_are_gathered_by_a_resume_into_the_same_report() {
    let all = in_memory(synthetic(9, 33), "synthetic");
    let cfg = two_epoch_recipe();
    let cv = |dir: &std::path::Path, only: Option<&[usize]>, resume: bool| {
        let mut trained = Vec::new();
        let opts = TrainOptions {
            resume,
            ..Default::default()
        };
        let r =
            facemark::train::cv::cross_validate(&cfg, &all, 3, only, dir, &opts, &mut |i, e| {
                if let TrainEvent::EpochDone { .. } = e {
                    trained.push(i);
                }
            });
        (r, trained)
    };
    let whole = tempfile::tempdir().unwrap();
    let (one_call, _) = cv(whole.path(), None, false);
    let one_call = one_call.unwrap();

    let split = tempfile::tempdir().unwrap();
    let (r, trained) = cv(split.path(), Some(&[2]), false);
    assert_eq!((r.unwrap().folds.len(), trained), (1, vec![2, 2]));
    assert!(
        !split.path().join("cv.json").exists(),
        "one fold of three is no report"
    );
    let (r, trained) = cv(split.path(), Some(&[0]), false);
    assert_eq!(r.unwrap().folds[0].fold, 0);
    assert_eq!(trained, [0, 0]);
    // The gathering call trains only the fold not yet run.
    let (gathered, trained) = cv(split.path(), None, true);
    let gathered = gathered.unwrap();
    assert_eq!(trained, [1, 1]);
    assert_eq!(gathered.folds, one_call.folds);
    assert_eq!(gathered.last, one_call.last);
    assert!(split.path().join("cv.json").is_file());

    // A fold outside 0..k, or none at all: an error naming it.
    let err = cv(split.path(), Some(&[3]), true)
        .0
        .unwrap_err()
        .to_string();
    assert!(err.contains("--fold 3") && err.contains("0..3"), "{err}");
    assert!(cv(split.path(), Some(&[]), true).0.is_err());
}

#[test]
fn cross_validation_with_a_weight_average_reports_the_raw_weights_beside_it() {
    let all = in_memory(synthetic(8, 32), "synthetic");
    let cfg = TrainConfig {
        ema: Some(0.9),
        ..two_epoch_recipe()
    };
    let dir = tempfile::tempdir().unwrap();
    let r = facemark::train::cv::cross_validate(
        &cfg,
        &all,
        2,
        None,
        dir.path(),
        &TrainOptions::default(),
        &mut |_, _| {},
    )
    .unwrap();
    let raw: Vec<f64> = r.folds.iter().map(|f| f.raw_last_score.unwrap()).collect();
    for f in &r.folds {
        assert!(f.raw_best_score.unwrap() >= f.raw_last_score.unwrap());
        assert_ne!(f.raw_last_score, Some(f.last_score));
    }
    let spread = r.raw_last.unwrap();
    assert!((spread.mean - (raw[0] + raw[1]) / 2.0).abs() < 1e-9);
    assert!(r.raw_best.unwrap().mean >= spread.mean);
}

#[test]
fn train_on_val_trains_on_both_files_and_still_validates_on_the_second() {
    let dir = tempfile::tempdir().unwrap();
    let (t, v) = (dir.path().join("t.csv"), dir.path().join("v.csv"));
    std::fs::write(&t, csv_of(&synthetic(5, 41))).unwrap();
    std::fs::write(&v, csv_of(&synthetic(3, 42))).unwrap();
    let mut cfg = TrainConfig {
        train: t.display().to_string(),
        val: Some(v.display().to_string()),
        ..Default::default()
    };
    let (train_set, val_set) =
        facemark::train::load_data(&cfg, &facemark::progress::Silent).unwrap();
    assert_eq!((train_set.len(), val_set.len()), (5, 3));
    cfg.train_on_val = true;
    let (both, val_set) = facemark::train::load_data(&cfg, &facemark::progress::Silent).unwrap();
    assert_eq!((both.len(), val_set.len()), (8, 3));
    for (a, b) in both.samples[5..].iter().zip(&val_set.samples) {
        assert_eq!(a.image, b.image);
    }
    assert!(
        both.samples[..5]
            .iter()
            .zip(&train_set.samples)
            .all(|(a, b)| a.image == b.image)
    );
}

#[test]
fn distillation_targets_blend_labels_with_the_teachers_flip_averaged_mean() {
    let dir = tempfile::tempdir().unwrap();
    let plain = Backend::Flex.device();
    let paths: Vec<String> = [3u64, 4]
        .iter()
        .map(|&seed| {
            let p = dir.path().join(format!("t{seed}.bpk"));
            Net::new(&plain, seed).save_checkpoint(&p).unwrap();
            p.display().to_string()
        })
        .collect();
    let mut samples = synthetic(3, 51);
    samples[1].keypoints[7] = f32::NAN;
    let refs: Vec<&Sample> = samples.iter().collect();
    let mut rng = epoch_rng(0, 0);
    // No augmentation: the batch's images are exactly pixel / 255, as eval's.
    let mut batch = HostBatch::build(&refs, &AugmentConfig::default(), &mut rng);
    let labels = batch.targets.clone();
    let w = 0.25;
    let teachers = facemark::train::distill::Teachers::load(&paths, w, &plain).unwrap();
    teachers.blend(&mut batch).unwrap();

    // The reference: eval's flip-averaged predictor, per teacher, averaged.
    let images: Vec<&[u8]> = samples.iter().map(|s| &s.image[..]).collect();
    let per_teacher: Vec<Vec<[f32; OUTPUTS]>> = paths
        .iter()
        .map(|p| {
            let f = facemark::eval::FloatPredictor::load(std::path::Path::new(p), Backend::Flex)
                .unwrap();
            facemark::eval::FlipAveraged(Box::new(f))
                .predict(&images)
                .unwrap()
        })
        .collect();
    for (i, s) in samples.iter().enumerate() {
        for k in 0..OUTPUTS {
            let teacher = (per_teacher[0][i][k] + per_teacher[1][i][k]) / 2.0;
            let want = if s.keypoints[k].is_nan() {
                teacher
            } else {
                (1.0 - w as f32) * labels[i * OUTPUTS + k] + w as f32 * teacher
            };
            let got = batch.targets[i * OUTPUTS + k];
            assert!(
                (got - want).abs() < 1e-5,
                "face {i} output {k}: {got} vs {want}"
            );
        }
    }
    // The teachers' value fills the missing label, which now counts.
    assert!(batch.mask.iter().all(|&m| m == 1.0));
    assert_eq!(batch.labelled, 3 * OUTPUTS);
    assert!(per_teacher[0] != per_teacher[1], "two different teachers");
}

#[test]
fn a_teacher_teaches_where_labels_are_missing_and_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = dir.path().join("teacher.bpk");
    Net::new(&Backend::Flex.device(), 9)
        .save_checkpoint(&teacher)
        .unwrap();
    let mut unlabelled = synthetic(8, 52);
    for s in &mut unlabelled {
        s.keypoints = [f32::NAN; OUTPUTS];
    }
    let val = in_memory(synthetic(4, 53), "val");
    let run = |cfg: &TrainConfig, name: &str| {
        train(
            cfg,
            &in_memory(unlabelled.clone(), "unlabelled"),
            &val,
            &dir.path().join(name),
            &TrainOptions::default(),
            &mut |_| {},
        )
    };
    let cfg = TrainConfig {
        teachers: vec![teacher.display().to_string()],
        ..two_epoch_recipe()
    };
    // Without labels a run has no loss at all; the teacher's targets give one.
    let alone = run(&two_epoch_recipe(), "alone").unwrap();
    assert_eq!(alone.state.history[0].train_loss, 0.0);
    let taught = run(&cfg, "taught").unwrap();
    assert!(taught.state.history.iter().all(|m| m.train_loss > 0.0));
    assert_ne!(alone.net.to_float_weights(), taught.net.to_float_weights());

    // A missing teacher names its path; the weight must be in (0, 1].
    let missing = TrainConfig {
        teachers: vec![dir.path().join("none.bpk").display().to_string()],
        ..two_epoch_recipe()
    };
    let err = format!("{:#}", run(&missing, "missing").err().unwrap());
    assert!(err.contains("none.bpk"), "{err}");
    for bad in [0.0, 1.5, f64::NAN] {
        let c = TrainConfig {
            distill_weight: bad,
            ..cfg.clone()
        };
        let err = c.check().unwrap_err().to_string();
        assert!(err.contains("--distill-weight"), "{err}");
    }
    // cv refuses a teacher that is not the fold's own.
    let all = in_memory(synthetic(6, 54), "all");
    let err = facemark::train::cv::cross_validate(
        &cfg,
        &all,
        2,
        None,
        &dir.path().join("cv"),
        &TrainOptions::default(),
        &mut |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("{fold}"), "{err}");
}
