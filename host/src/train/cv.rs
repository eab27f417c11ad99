//! Cross-validation over approximately person-disjoint folds (issue 14): a
//! recipe is judged by how it does on persons it never saw, not by one
//! split's best epoch. The rows of one person are contiguous in the data
//! files (frames of one video), so `K` contiguous blocks of the rows (train
//! then validation file) put almost every person in one fold only; a person
//! can straddle a block's edge, which is why "approximately".
//!
//! Each fold trains the recipe on the other blocks and is scored on its own
//! block at the last epoch (what a final model trained for a fixed epoch
//! count gives) and at its best epoch (what choosing the epoch on that
//! block would give, an optimistic figure). The report gives the mean and
//! spread over folds of both. With `--ema` the scores are the weight
//! average's, and the raw weights' (the same training steps) are reported
//! beside them.

use std::ops::Range;
use std::path::Path;

use anyhow::{Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::train::{TrainConfig, TrainEvent, TrainOptions, train};

/// The `k` contiguous blocks of `n` rows: sizes differ by at most one.
pub fn fold_ranges(n: usize, k: usize) -> Vec<Range<usize>> {
    (0..k).map(|i| i * n / k..(i + 1) * n / k).collect()
}

/// Fold `i` of `k` over `all`: (training rows: every other block,
/// validation rows: block `i`).
pub fn fold(all: &Dataset, k: usize, i: usize) -> (Dataset, Dataset) {
    let r = fold_ranges(all.len(), k)[i].clone();
    let part = |samples: Vec<crate::data::Sample>, what: String| Dataset {
        samples,
        source: what,
        ..Default::default()
    };
    let held = all.samples[r.clone()].to_vec();
    let rest: Vec<_> = all.samples[..r.start]
        .iter()
        .chain(&all.samples[r.end..])
        .cloned()
        .collect();
    (
        part(
            rest,
            format!("{} without rows {}..{}", all.source, r.start, r.end),
        ),
        part(held, format!("{} rows {}..{}", all.source, r.start, r.end)),
    )
}

/// One fold's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FoldResult {
    pub fold: usize,
    /// Rows of the held-out block.
    pub rows: Range<usize>,
    pub last_epoch: usize,
    pub last_score: f64,
    pub best_epoch: usize,
    pub best_score: f64,
    /// With `--ema`: the raw weights' score at the last epoch and at their
    /// own best epoch.
    #[serde(default)]
    pub raw_last_score: Option<f64>,
    #[serde(default)]
    pub raw_best_score: Option<f64>,
}

/// Mean and (sample) standard deviation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(v: &[f64]) -> Spread {
        let n = v.len().max(1) as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = if v.len() > 1 {
            v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        Spread {
            mean,
            std: var.sqrt(),
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// What [`cross_validate`] found (written to `cv.json` in its directory).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CvReport {
    pub recipe: TrainConfig,
    pub folds: Vec<FoldResult>,
    /// Scores at the last epoch: what a fixed epoch count gives.
    pub last: Spread,
    /// Scores at each fold's best epoch (chosen on the fold itself).
    pub best: Spread,
    /// With `--ema`: the raw weights' `last` and `best`.
    #[serde(default)]
    pub raw_last: Option<Spread>,
    #[serde(default)]
    pub raw_best: Option<Spread>,
}

/// Trains `cfg` on each of `k` folds of `all`, fold `i` in `out/fold-i`;
/// `report` gets each fold's training events with the fold's index.
///
/// `only` runs just those folds, e.g. one single-thread process per core:
/// on 2 cores two such folds took 22-24 min side by side, against about
/// 16 min for one fold alone at 2 threads (2026-12-02), 1.4x the
/// throughput. The report covers the folds run, and
/// `cv.json` is written only by a call that covers every fold. With
/// `opts.resume`, a fold whose run has not begun starts afresh and a
/// finished one is read back without training, so a last call without
/// `only` gathers the folds of earlier ones.
pub fn cross_validate(
    cfg: &TrainConfig,
    all: &Dataset,
    k: usize,
    only: Option<&[usize]>,
    out: &Path,
    opts: &TrainOptions,
    report: &mut dyn FnMut(usize, TrainEvent<'_>),
) -> Result<CvReport> {
    ensure!(k >= 2, "--folds must be at least 2");
    ensure!(
        all.len() >= 2 * k,
        "{} rows are too few for {k} folds",
        all.len()
    );
    if let Some(only) = only {
        ensure!(!only.is_empty(), "no fold chosen");
        if let Some(bad) = only.iter().find(|&&i| i >= k) {
            bail!("--fold {bad}: the folds are 0..{k}");
        }
    }
    // A teacher that saw a fold's held-out persons would leak them into
    // its score.
    if let Some(t) = cfg.teachers.iter().find(|t| !t.contains("{fold}")) {
        bail!(
            "--teacher {t}: in cv each fold needs its own teacher, trained without its held-out persons; put {{fold}} in the path (e.g. runs/cv/fold-{{fold}}/last/model.bpk)"
        );
    }
    let chosen = |i: &usize| only.is_none_or(|o| o.contains(i));
    let mut folds = Vec::new();
    for (i, rows) in fold_ranges(all.len(), k).into_iter().enumerate() {
        if !chosen(&i) {
            continue;
        }
        let run_dir = out.join(format!("fold-{i}"));
        let fold_opts = TrainOptions {
            resume: opts.resume && run_dir.join(crate::train::CONFIG_FILE).is_file(),
            stop: opts.stop.clone(),
        };
        let (mut train_set, val_set) = fold(all, k, i);
        if let Some(limit) = cfg.limit {
            train_set.samples.truncate(limit);
        }
        let mut fold_cfg = cfg.clone();
        fold_cfg.train = train_set.source.clone();
        fold_cfg.val = Some(val_set.source.clone());
        for t in &mut fold_cfg.teachers {
            *t = t.replace("{fold}", &i.to_string());
        }
        let outcome = train(
            &fold_cfg,
            &train_set,
            &val_set,
            &run_dir,
            &fold_opts,
            &mut |e| report(i, e),
        )?;
        if outcome.interrupted {
            anyhow::bail!("stopped in fold {i}; continue with the same command plus --resume");
        }
        let s = &outcome.state;
        let last = s.history.last().expect("at least one epoch");
        let best = s
            .history
            .iter()
            .find(|m| m.epoch == s.best_epoch)
            .unwrap_or(last);
        folds.push(FoldResult {
            fold: i,
            rows,
            last_epoch: last.epoch,
            last_score: last.val_score,
            best_epoch: best.epoch,
            best_score: best.val_score,
            raw_last_score: last.raw_val_score,
            raw_best_score: s
                .history
                .iter()
                .filter_map(|m| m.raw_val_score)
                .reduce(f64::max),
        });
    }
    let scores = |f: fn(&FoldResult) -> f64| folds.iter().map(f).collect::<Vec<_>>();
    let raw = |f: fn(&FoldResult) -> Option<f64>| {
        folds
            .iter()
            .map(f)
            .collect::<Option<Vec<_>>>()
            .map(|v| Spread::of(&v))
    };
    let r = CvReport {
        recipe: cfg.clone(),
        last: Spread::of(&scores(|f| f.last_score)),
        best: Spread::of(&scores(|f| f.best_score)),
        raw_last: raw(|f| f.raw_last_score),
        raw_best: raw(|f| f.raw_best_score),
        folds,
    };
    if r.folds.len() == k {
        std::fs::write(out.join("cv.json"), serde_json::to_string_pretty(&r)?)?;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_are_contiguous_disjoint_and_cover_every_row() {
        for (n, k) in [(10, 3), (3677, 5), (8, 8)] {
            let r = fold_ranges(n, k);
            assert_eq!(r.len(), k);
            assert_eq!(r[0].start, 0);
            assert_eq!(r[k - 1].end, n);
            for w in r.windows(2) {
                assert_eq!(w[0].end, w[1].start);
            }
            let sizes: Vec<usize> = r.iter().map(|x| x.len()).collect();
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        }
    }

    #[test]
    fn a_fold_holds_out_its_block_and_trains_on_the_rest() {
        let samples: Vec<_> = (0..10)
            .map(|i| {
                let mut s = crate::data::Sample {
                    image: Box::new([0; facemark_core::network::INPUT_LEN]),
                    keypoints: [f32::NAN; facemark_core::network::OUTPUTS],
                };
                s.keypoints[0] = i as f32;
                s
            })
            .collect();
        let all = Dataset {
            samples,
            source: "d".into(),
            ..Default::default()
        };
        let (train, val) = fold(&all, 3, 1);
        let ids = |d: &Dataset| {
            d.samples
                .iter()
                .map(|s| s.keypoints[0] as usize)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&val), [3, 4, 5]);
        assert_eq!(ids(&train), [0, 1, 2, 6, 7, 8, 9]);
        let s = Spread::of(&[1.0, 2.0, 3.0]);
        assert_eq!((s.mean, s.std, s.min, s.max), (2.0, 1.0, 1.0, 3.0));
    }
}
