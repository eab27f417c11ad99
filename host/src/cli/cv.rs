//! `facemark cv`: a recipe cross-validated over approximately
//! person-disjoint folds (`train::cv`), with the mean and spread of the
//! held-out scores.

use crate::cli::progress::Bars;
use crate::cli::train::{print_event, recipe_config, stop_on_ctrl_c};
use crate::train::cv::cross_validate;
use crate::train::{Recipe, TrainConfig, TrainOptions};
use anyhow::{Context, Result};
use clap::ArgMatches;
use std::path::{Path, PathBuf};

/// `facemark cv --train T [--val V] --out DIR [--folds K] [recipe flags]`:
/// the rows of T and then V, in file order, cut into K contiguous blocks
/// (one person's rows are contiguous, so the folds are approximately
/// person-disjoint); each fold trains on the others and is scored on its
/// block. The recipe flags are `facemark train`'s.
#[derive(clap::Args, Debug)]
pub struct CvArgs {
    #[command(flatten)]
    pub config: TrainConfig,
    /// Directory of the folds' runs (`fold-0` ...) and `cv.json`.
    #[arg(long)]
    pub out: PathBuf,
    /// Folds.
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// The recipe the flags start from (as `facemark train`'s).
    #[arg(long, value_enum, default_value_t = Recipe::Committed)]
    pub recipe: Recipe,
    /// Run only fold I (0-based; repeat for more), e.g. one process per
    /// core with `RAYON_NUM_THREADS=1`; `cv.json` is then left to a last
    /// run with `--resume` and no `--fold`, which reads the finished folds back.
    #[arg(long = "fold", value_name = "I")]
    pub only: Vec<usize>,
    /// Continue each fold's run from its last finished epoch (a fold not
    /// begun starts; a finished one is read back).
    #[arg(long)]
    pub resume: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

pub fn run(args: &CvArgs, matches: &ArgMatches) -> Result<()> {
    let cfg = recipe_config(&args.config, args.recipe, matches)?;
    cfg.check()?;
    anyhow::ensure!(
        !cfg.train_on_val,
        "--train-on-val is `facemark train`'s (the final model); cv already folds --train and --val together"
    );
    let bars = Bars::new(!args.no_progress);
    let opts = crate::data::LoadOptions {
        skip_bad_rows: cfg.skip_bad_rows,
    };
    let mut all = crate::cli::load_data_file(Path::new(&cfg.train), opts, "training data", &bars)?;
    if let Some(v) = &cfg.val {
        let val = crate::cli::load_data_file(Path::new(v), opts, "validation data", &bars)?;
        all.samples.extend(val.samples);
        all.source = format!("{} + {}", cfg.train, v);
    }
    println!(
        "cv: {} faces in {} contiguous folds; recipe: {} epochs, schedule {:?}, augment {:?}, weight average {}, seed {}",
        all.len(),
        args.folds,
        cfg.epochs,
        cfg.schedule,
        cfg.augment,
        cfg.ema.map_or("off".to_string(), |d| format!("EMA {d}")),
        cfg.seed
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let train_opts = TrainOptions {
        resume: args.resume,
        stop: Some(stop_on_ctrl_c()),
    };
    let mut current = usize::MAX;
    let r = cross_validate(
        &cfg,
        &all,
        args.folds,
        (!args.only.is_empty()).then_some(&args.only[..]),
        &args.out,
        &train_opts,
        &mut |i, e| {
            if i != current {
                current = i;
                println!("fold {}/{}", i + 1, args.folds);
            }
            print_event(e, &bars, &args.out.join(format!("fold-{i}")))
        },
    )?;
    println!(
        "{:<6} {:>13} {:>10} {:>10} {:>10} {:>10}",
        "fold", "rows", "last ep", "score", "best ep", "score"
    );
    for f in &r.folds {
        println!(
            "{:<6} {:>13} {:>10} {:>10.1} {:>10} {:>10.1}",
            f.fold,
            format!("{}..{}", f.rows.start, f.rows.end),
            f.last_epoch,
            f.last_score,
            f.best_epoch,
            f.best_score
        );
    }
    println!(
        "held-out score at the last epoch: mean {:.1}, std {:.1} (min {:.1}, max {:.1}); at each fold's best epoch: mean {:.1}, std {:.1}; {}",
        r.last.mean,
        r.last.std,
        r.last.min,
        r.last.max,
        r.best.mean,
        r.best.std,
        if r.folds.len() == args.folds {
            args.out.join("cv.json").display().to_string()
        } else {
            format!(
                "{} of {} folds (cv.json is written by a run over all of them: --resume without --fold)",
                r.folds.len(),
                args.folds
            )
        }
    );
    if let (Some(last), Some(best)) = (r.raw_last, r.raw_best) {
        println!(
            "the raw weights (without --ema's average): at the last epoch mean {:.1}, std {:.1} (min {:.1}, max {:.1}); at each fold's best epoch mean {:.1}, std {:.1}",
            last.mean, last.std, last.min, last.max, best.mean, best.std
        );
    }
    Ok(())
}
