//! A run's recipe: [`TrainConfig`] (flags and `config.json` in one struct),
//! the two [`Recipe`]s, the learning-rate [`Schedule`].

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::augment::AugmentConfig;
use crate::float::net::Backend;

/// Learning-rate schedule over all training steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// `lr` throughout (the seed recipe).
    #[default]
    Constant,
    /// One-cycle (PyTorch `OneCycleLR`, cosine both ways): from lr/25 up to
    /// lr over the first `warmup` fraction of steps, then down to lr/25e4.
    /// (Adam's beta1 is not cycled.)
    Onecycle,
    /// Cosine decay from lr to 0 over all steps.
    Cosine,
}

/// Everything that defines a run, written to `config.json`; also the
/// `facemark train` flags (clap), so the help, the run and the file cannot
/// disagree. Each flag's help shows both recipes' values; a flag not given
/// takes `--recipe`'s ([`TrainConfig::over_recipe`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct TrainConfig {
    /// Training data: Kaggle CSV (.csv, .csv.gz or .zip).
    #[arg(long)]
    pub train: String,
    /// Validation data file (default: a seeded split of --train, see --val-split).
    #[arg(long)]
    pub val: Option<String>,
    #[arg(long, default_value_t = committed().val_split, hide_default_value = true,
        help = per_recipe("Fraction of --train held out for validation when --val is not given", |c| c.val_split))]
    pub val_split: f64,
    #[arg(long, value_enum, default_value_t = committed().backend, hide_default_value = true,
        help = per_recipe("burn backend", |c| c.backend.name()))]
    pub backend: Backend,
    #[arg(long, default_value_t = committed().epochs, hide_default_value = true,
        help = per_recipe("Epochs", |c| c.epochs))]
    pub epochs: usize,
    #[arg(long, default_value_t = committed().batch, hide_default_value = true,
        help = per_recipe("Batch size", |c| c.batch))]
    pub batch: usize,
    #[arg(long, default_value_t = committed().lr, hide_default_value = true,
        help = per_recipe("(Peak) learning rate", |c| c.lr))]
    pub lr: f64,
    #[arg(long, default_value_t = committed().weight_decay, hide_default_value = true,
        help = per_recipe("L2 weight decay (added to the gradient, as PyTorch's Adam does)", |c| c.weight_decay))]
    pub weight_decay: f64,
    #[arg(long, default_value_t = committed().adam_eps, hide_default_value = true,
        help = per_recipe("Adam epsilon", |c| c.adam_eps))]
    pub adam_eps: f64,
    #[arg(long, value_enum, default_value_t = committed().schedule, hide_default_value = true,
        help = per_recipe("Learning-rate schedule", |c| format!("{:?}", c.schedule).to_lowercase()))]
    pub schedule: Schedule,
    #[arg(long, default_value_t = committed().warmup, hide_default_value = true,
        help = per_recipe("One-cycle warm-up fraction of all steps", |c| c.warmup))]
    pub warmup: f64,
    #[command(flatten)]
    pub augment: AugmentConfig,
    #[arg(long, help = per_recipe("Stop after this many epochs without a better validation MSE", |c| c.early_stop.map_or("off".to_string(), |e| e.to_string())))]
    pub early_stop: Option<usize>,
    // `train::average`; absent from the config.json of runs made before it.
    #[serde(default)]
    #[arg(long, help = per_recipe("Exponential moving average of the weights, decay per step (e.g. 0.999): validated, kept and returned instead of the raw weights, whose score is reported beside it", |c| c.ema.map_or("off".to_string(), |e| e.to_string())))]
    pub ema: Option<f64>,
    /// Knowledge distillation (`train::distill`): a float model (`.bpk`)
    /// whose flip-averaged predictions the targets blend in; repeat for an
    /// ensemble (their mean). In `facemark cv`, `{fold}` in the path
    /// stands for the fold's index (a teacher per fold, trained without
    /// its held-out persons).
    #[serde(default)]
    #[arg(long = "teacher", value_name = "BPK")]
    pub teachers: Vec<String>,
    /// The teachers' share of each target: `(1 - w) * label + w * teacher`.
    #[serde(default = "half")]
    #[arg(long, default_value_t = committed().distill_weight, hide_default_value = true,
        help = per_recipe("The teachers' share w of each target, (1 - w) * label + w * teacher (with --teacher)", |c| c.distill_weight))]
    pub distill_weight: f64,
    #[arg(long, default_value_t = committed().seed, hide_default_value = true,
        help = per_recipe("Seed for initialisation, split, shuffling, augmentation and dropout", |c| c.seed))]
    pub seed: u64,
    /// Train on --train plus --val: the final model, with a fixed epoch
    /// count chosen by `facemark cv`; its validation scores are then of
    /// faces it trained on, so `best.bpk` means little (use `last/`).
    #[serde(default)]
    #[arg(long)]
    pub train_on_val: bool,
    /// Skip malformed rows (and report how many) instead of failing.
    #[arg(long)]
    pub skip_bad_rows: bool,
    /// Use only the first N training samples (after the split; quick trials).
    #[arg(long)]
    pub limit: Option<usize>,
}

/// `distill_weight`'s default, also for runs made before it.
fn half() -> f64 {
    0.5
}

/// The clap defaults: any recipe would do, as [`TrainConfig::over_recipe`]
/// replaces every value not given; the committed one is the default recipe.
fn committed() -> TrainConfig {
    Recipe::Committed.config()
}

/// A flag's help with each recipe's value, taken from the recipes
/// themselves.
pub(crate) fn per_recipe<T: std::fmt::Display>(
    what: &str,
    value: impl Fn(&TrainConfig) -> T,
) -> String {
    format!(
        "{what} [committed: {}; seed: {}]",
        value(&Recipe::Committed.config()),
        value(&Recipe::Seed.config())
    )
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            train: String::new(),
            val: None,
            val_split: 0.1,
            backend: Backend::Flex,
            epochs: 15,
            batch: 16,
            lr: 1e-3,
            weight_decay: 1e-7,
            adam_eps: 1e-8,
            schedule: Schedule::Constant,
            warmup: 0.3,
            augment: AugmentConfig::default(),
            early_stop: None,
            ema: None,
            teachers: Vec::new(),
            distill_weight: half(),
            seed: 0,
            train_on_val: false,
            skip_bad_rows: false,
            limit: None,
        }
    }
}

impl TrainConfig {
    /// This config with every value whose flag was not given (`given(id)`
    /// false for the clap id, which is the field's serde name) taken from
    /// `recipe`. Walks the serde form, so a new field needs nothing here.
    pub fn over_recipe(&self, recipe: Recipe, given: impl Fn(&str) -> bool) -> Result<TrainConfig> {
        fn lay(out: &mut Value, base: &Value, given: &dyn Fn(&str) -> bool) {
            let (Value::Object(out), Value::Object(base)) = (out, base) else {
                return;
            };
            for (key, b) in base {
                match (b, out.get_mut(key)) {
                    (Value::Object(_), Some(o)) => lay(o, b, given),
                    _ if !given(key) => {
                        out.insert(key.clone(), b.clone());
                    }
                    _ => {}
                }
            }
        }
        /// serde_json writes NaN and infinities as null: name the flag.
        fn not_finite(out: &Value, base: &Value) -> Option<String> {
            let (Value::Object(out), Value::Object(base)) = (out, base) else {
                return None;
            };
            base.iter().find_map(|(key, b)| match (b, out.get(key)) {
                (Value::Object(_), Some(o)) => not_finite(o, b),
                (Value::Number(_), Some(Value::Null)) => Some(key.replace('_', "-")),
                _ => None,
            })
        }
        // serde_json would write a NaN decay as null, which reads back as "off".
        if let Some(d) = self.ema {
            ensure!(d.is_finite(), "--ema must be a finite number");
        }
        let base = serde_json::to_value(recipe.config())?;
        let mut out = serde_json::to_value(self)?;
        lay(&mut out, &base, &given);
        if let Some(flag) = not_finite(&out, &base) {
            bail!("--{flag} must be a finite number");
        }
        serde_json::from_value(out).context("the flags do not make a config")
    }

    pub fn check(&self) -> Result<()> {
        ensure!(self.epochs >= 1, "--epochs must be at least 1");
        ensure!(self.batch >= 1, "--batch must be at least 1");
        ensure!(
            self.lr.is_finite() && self.lr > 0.0,
            "--lr must be positive"
        );
        ensure!(
            self.weight_decay.is_finite() && self.weight_decay >= 0.0,
            "--weight-decay must be non-negative"
        );
        ensure!(
            self.adam_eps.is_finite() && self.adam_eps > 0.0,
            "--adam-eps must be positive"
        );
        ensure!(
            self.warmup > 0.0 && self.warmup < 1.0,
            "--warmup must be in (0, 1)"
        );
        ensure!(
            self.val.is_some() || (self.val_split > 0.0 && self.val_split < 1.0),
            "--val-split must be in (0, 1)"
        );
        ensure!(
            self.val.is_some() || !self.train_on_val,
            "--train-on-val needs --val"
        );
        ensure!(
            self.early_stop != Some(0),
            "--early-stop must be at least 1"
        );
        if let Some(d) = self.ema {
            ensure!(
                d.is_finite() && d > 0.0 && d < 1.0,
                "--ema must be in (0, 1) (a decay per step, e.g. 0.999), not {d}"
            );
        }
        ensure!(
            self.distill_weight.is_finite()
                && self.distill_weight > 0.0
                && self.distill_weight <= 1.0,
            "--distill-weight must be in (0, 1], not {}",
            self.distill_weight
        );
        self.augment.check()
    }

    /// The learning rate at `step` of `total` (0-based).
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        let total = total.max(1) as f64;
        let t = (step as f64).min(total);
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Cosine => self.lr * 0.5 * (1.0 + (std::f64::consts::PI * t / total).cos()),
            Schedule::Onecycle => {
                let initial = self.lr / 25.0;
                let min = initial / 1e4;
                let up = (self.warmup * total).max(1.0);
                let cos = |from: f64, to: f64, p: f64| {
                    to + (from - to)
                        * 0.5
                        * (1.0 + (std::f64::consts::PI * p.clamp(0.0, 1.0)).cos())
                };
                if t < up {
                    cos(initial, self.lr, t / up)
                } else {
                    cos(self.lr, min, (t - up) / (total - up).max(1.0))
                }
            }
        }
    }
}

/// A training recipe: every value a run takes where no flag says otherwise.
/// The values live here once; `config.json` records what a run used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Recipe {
    /// The committed model's (models/README.md; each flag's help gives
    /// its value).
    #[default]
    Committed,
    /// The seed report's (`TrainConfig::default()`).
    Seed,
}

impl Recipe {
    /// The recipe's config (data paths left empty).
    pub fn config(self) -> TrainConfig {
        match self {
            Recipe::Seed => TrainConfig::default(),
            Recipe::Committed => TrainConfig {
                epochs: 100,
                schedule: Schedule::Onecycle,
                augment: AugmentConfig {
                    flip: true,
                    shift: 2.0,
                    brightness: 0.1,
                    contrast: 0.2,
                    rotate: 10.0,
                    ..AugmentConfig::default()
                },
                seed: 2,
                ..TrainConfig::default()
            },
        }
    }
}
