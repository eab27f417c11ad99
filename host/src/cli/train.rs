//! `facemark train`: the flags over a recipe, the run's progress lines.

use crate::data::augment::AugmentConfig;
use crate::float::net::Backend;
use crate::train::{Recipe, Schedule, TrainConfig, TrainOptions, load_data, train};
use anyhow::Result;
use std::path::PathBuf;
use std::time::Instant;

/// A flag's help with each recipe's value, taken from the recipes
/// themselves: the help, the run and `config.json` cannot disagree.
fn per_recipe<T: std::fmt::Display>(what: &str, value: impl Fn(&TrainConfig) -> T) -> String {
    format!(
        "{what} [committed: {}; seed: {}]",
        value(&Recipe::Committed.config()),
        value(&Recipe::Seed.config())
    )
}

/// `facemark train`. Every recipe value is optional here: a flag given
/// overrides the one `--recipe` sets (`facemark train --train T --val V
/// --out runs/x` trains the committed model's recipe).
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Training data: Kaggle CSV (.csv, .csv.gz or .zip).
    #[arg(long)]
    pub train: PathBuf,
    /// Validation data file (default: a seeded split of --train, see --val-split).
    #[arg(long)]
    pub val: Option<PathBuf>,
    /// Run directory (config, metrics, checkpoints, plot).
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in --out from its last finished epoch (same recipe flags; --epochs may grow).
    #[arg(long)]
    pub resume: bool,
    /// The recipe the flags below start from: `committed` (the committed
    /// model's) or `seed` (the seed report's).
    #[arg(long, value_enum, default_value_t = Recipe::Committed)]
    pub recipe: Recipe,
    #[arg(long, help = per_recipe("Fraction of --train held out for validation when --val is not given", |c| c.val_split))]
    pub val_split: Option<f64>,
    #[arg(long, value_enum, help = per_recipe("burn backend", |c| c.backend.name()))]
    pub backend: Option<Backend>,
    #[arg(long, help = per_recipe("Epochs", |c| c.epochs))]
    pub epochs: Option<usize>,
    #[arg(long, help = per_recipe("Batch size", |c| c.batch))]
    pub batch: Option<usize>,
    #[arg(long, help = per_recipe("(Peak) learning rate", |c| c.lr))]
    pub lr: Option<f64>,
    #[arg(long, help = per_recipe("L2 weight decay (added to the gradient, as PyTorch's Adam does)", |c| c.weight_decay))]
    pub weight_decay: Option<f64>,
    #[arg(long, help = per_recipe("Adam epsilon", |c| c.adam_eps))]
    pub adam_eps: Option<f64>,
    #[arg(long, value_enum, help = per_recipe("Learning-rate schedule", |c| format!("{:?}", c.schedule).to_lowercase()))]
    pub schedule: Option<Schedule>,
    #[arg(long, help = per_recipe("One-cycle warm-up fraction", |c| c.warmup))]
    pub warmup: Option<f64>,
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL", help = per_recipe("Random horizontal flips (left/right keypoints swapped): `--flip`, or `--flip false`", |c| c.augment.flip))]
    pub flip: Option<bool>,
    #[arg(long, help = per_recipe("Random shifts up to this many pixels (0 = off)", |c| c.augment.shift))]
    pub shift: Option<f32>,
    #[arg(long, help = per_recipe("Random rotations up to this many degrees (0 = off)", |c| c.augment.rotate))]
    pub rotate: Option<f32>,
    #[arg(long, help = per_recipe("Random scaling by up to this fraction, e.g. 0.05 (0 = off)", |c| c.augment.scale))]
    pub scale: Option<f32>,
    #[arg(long, help = per_recipe("Random brightness change up to this fraction of full scale (0 = off)", |c| c.augment.brightness))]
    pub brightness: Option<f32>,
    #[arg(long, help = per_recipe("Random contrast change up to this fraction, e.g. 0.2 (0 = off)", |c| c.augment.contrast))]
    pub contrast: Option<f32>,
    #[arg(long, help = per_recipe("Stop after this many epochs without a better validation MSE", |c| c.early_stop.map_or("off".to_string(), |e| e.to_string())))]
    pub early_stop: Option<usize>,
    #[arg(long, help = per_recipe("Seed for initialisation, split, shuffling, augmentation and dropout", |c| c.seed))]
    pub seed: Option<u64>,
    /// Skip malformed rows (and report how many) instead of failing.
    #[arg(long)]
    pub skip_bad_rows: bool,
    /// Use only the first N training samples (quick trials).
    #[arg(long)]
    pub limit: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

impl TrainArgs {
    /// The recipe's config with the flags given laid over it.
    pub fn config(&self) -> TrainConfig {
        let base = self.recipe.config();
        let a = base.augment;
        TrainConfig {
            train: crate::data::path_string(&crate::data::absolute(&self.train)),
            val: self
                .val
                .as_ref()
                .map(|v| crate::data::path_string(&crate::data::absolute(v))),
            val_split: self.val_split.unwrap_or(base.val_split),
            backend: self.backend.unwrap_or(base.backend),
            epochs: self.epochs.unwrap_or(base.epochs),
            batch: self.batch.unwrap_or(base.batch),
            lr: self.lr.unwrap_or(base.lr),
            weight_decay: self.weight_decay.unwrap_or(base.weight_decay),
            adam_eps: self.adam_eps.unwrap_or(base.adam_eps),
            schedule: self.schedule.unwrap_or(base.schedule),
            warmup: self.warmup.unwrap_or(base.warmup),
            augment: AugmentConfig {
                flip: self.flip.unwrap_or(a.flip),
                shift: self.shift.unwrap_or(a.shift),
                rotate: self.rotate.unwrap_or(a.rotate),
                scale: self.scale.unwrap_or(a.scale),
                brightness: self.brightness.unwrap_or(a.brightness),
                contrast: self.contrast.unwrap_or(a.contrast),
            },
            early_stop: self.early_stop.or(base.early_stop),
            seed: self.seed.unwrap_or(base.seed),
            skip_bad_rows: self.skip_bad_rows || base.skip_bad_rows,
            limit: self.limit.or(base.limit),
        }
    }
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let cfg = args.config();
    cfg.check()?;
    let t0 = Instant::now();
    let (train_set, val_set) = load_data(&cfg)?;
    println!(
        "data: {} training faces ({} complete), {} validation faces, loaded in {:.1} s",
        train_set.len(),
        train_set.complete_count(),
        val_set.len(),
        t0.elapsed().as_secs_f64()
    );
    println!(
        "recipe: {} epochs, batch {}, Adam lr {:.1e} ({:?}), weight decay {:.0e}, augment {:?}, backend {}, seed {}",
        cfg.epochs,
        cfg.batch,
        cfg.lr,
        cfg.schedule,
        cfg.weight_decay,
        cfg.augment,
        cfg.backend.name(),
        cfg.seed
    );
    let opts = TrainOptions {
        resume: args.resume,
        progress: !args.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        verbose: true,
        handle_ctrl_c: true,
        stop_after_epochs: None,
    };
    let out = train(&cfg, &train_set, &val_set, &args.out, &opts)?;
    let s = &out.state;
    if let Some(b) = s.history.iter().find(|m| m.epoch == s.best_epoch) {
        println!(
            "best: epoch {} val MSE {:.6}, score {:.1}, RMSE {:.3} px; {} epochs in {:.1} min; run dir {}",
            b.epoch,
            b.val_mse,
            b.val_score,
            b.val_rmse_px,
            s.epochs_done,
            s.train_seconds / 60.0,
            args.out.display()
        );
    }
    if out.interrupted {
        eprintln!(
            "training interrupted after epoch {}; continue with the same command plus --resume",
            s.epochs_done
        );
        std::process::exit(130);
    }
    Ok(())
}

#[cfg(test)]
mod recipe_tests {
    use super::*;
    use crate::train::{Recipe, Schedule, TrainConfig};
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        train: TrainArgs,
    }

    fn config(args: &[&str]) -> TrainConfig {
        let mut argv = vec!["facemark", "--train", "t.csv", "--out", "runs/x"];
        argv.extend_from_slice(args);
        let mut c = Cli::parse_from(argv).train.config();
        c.train.clear();
        c
    }

    #[test]
    fn no_flags_is_the_committed_recipe_and_seed_is_one_flag_away() {
        assert_eq!(config(&[]), Recipe::Committed.config());
        assert_eq!(config(&["--recipe", "seed"]), TrainConfig::default());
        let c = config(&[]);
        assert_eq!((c.epochs, c.schedule, c.seed), (70, Schedule::Onecycle, 2));
        assert!(c.augment.flip && c.augment.shift == 2.0 && c.augment.contrast == 0.2);
    }

    #[test]
    fn a_flag_overrides_its_recipe_value_only() {
        let c = config(&["--epochs", "3", "--flip", "false"]);
        assert_eq!(c.epochs, 3);
        assert!(!c.augment.flip);
        assert_eq!(c.augment.shift, 2.0);
        assert!(config(&["--recipe", "seed", "--flip"]).augment.flip);
    }
}
