//! Training: the seed network trained with burn on Kaggle-format data (the
//! run directory, the fit loop, resume). The recipe is [`TrainConfig`]
//! (`config.rs`), which is also `facemark train`'s flags; the loop reports
//! through [`TrainEvent`]s and never prints.
//!
//! `TrainConfig::default()` is the seed recipe: Adam (PyTorch's epsilon),
//! masked MSE on [-1, 1] coordinates, no augmentation, constant learning
//! rate; [`Recipe`] holds both recipes' values.
//!
//! Reproducibility: the initial weights come from the seed; each epoch draws
//! its shuffle, augmentation and dropout masks from a ChaCha8 stream derived
//! from (seed, epoch). So the state after an epoch is fully described by the
//! model, the optimizer state and the epoch number, which is what the `last/`
//! checkpoint holds: `--resume` continues exactly where an uninterrupted run
//! would be.
//!
//! Run directory:
//! - `config.json`: the [`TrainConfig`];
//! - `metrics.csv`: one row per epoch;
//! - `best.bpk`: the model with the lowest validation MSE so far (with
//!   `--ema`, the weight average);
//! - `last/`: `model.bpk`, `optim.bpk`, `state.json` (and with `--ema`
//!   `average.bpk`) after the last finished epoch (replaced as a whole, so a
//!   crash leaves the previous one);
//! - `loss.png`: training loss and validation MSE per epoch.

pub mod average;
mod config;
pub mod cv;
pub mod distill;
pub(crate) mod plot;

pub(crate) use config::per_recipe;
pub use config::{Recipe, Schedule, TrainConfig};

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};
use embedded_graphics::pixelcolor::Rgb888;
use facemark_core::network::{INPUT_LEN, INPUT_SIDE, OUTPUTS, pixel_to_unit};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::augment::AugmentConfig;
use crate::data::{Dataset, LoadOptions, Sample};
use crate::eval::{FloatPredictor, evaluate, rmse_px, score};
use crate::float::net::Net;
use crate::progress::Progress;
use crate::train::average::WeightAverage;
use crate::train::distill::Teachers;

pub const CONFIG_FILE: &str = "config.json";
pub const METRICS_FILE: &str = "metrics.csv";
pub use crate::float::BEST_FILE;
pub const LAST_DIR: &str = "last";
pub const MODEL_FILE: &str = "model.bpk";
pub const OPTIM_FILE: &str = "optim.bpk";
pub const STATE_FILE: &str = "state.json";
pub const AVERAGE_FILE: &str = "average.bpk";
pub const PLOT_FILE: &str = "loss.png";

/// One finished epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: usize,
    /// Mean masked MSE over the epoch's batches (with dropout and augmentation).
    pub train_loss: f64,
    /// Of the model the run produces: the weight average with `--ema`.
    pub val_mse: f64,
    pub val_score: f64,
    pub val_rmse_px: f64,
    /// With `--ema`: the raw (not averaged) weights' validation score.
    #[serde(default)]
    pub raw_val_score: Option<f64>,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    pub seconds: f64,
}

/// Progress after the last finished epoch (`last/state.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub epochs_done: usize,
    pub steps_done: usize,
    pub best_mse: f64,
    /// 1-based; 0 = none yet.
    pub best_epoch: usize,
    pub since_best: usize,
    pub stopped_early: bool,
    pub history: Vec<EpochMetrics>,
    pub train_seconds: f64,
}

impl Default for TrainState {
    fn default() -> Self {
        Self {
            epochs_done: 0,
            steps_done: 0,
            best_mse: f64::INFINITY,
            best_epoch: 0,
            since_best: 0,
            stopped_early: false,
            history: Vec::new(),
            train_seconds: 0.0,
        }
    }
}

/// How to run (not part of the recipe).
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// Continue the run in the directory from its last checkpoint.
    pub resume: bool,
    /// Checked between batches: once set, the run stops, dropping the
    /// unfinished epoch (the CLI sets it on Ctrl-C).
    pub stop: Option<Arc<AtomicBool>>,
}

/// What a call to [`train`] ended with.
pub struct TrainOutcome {
    pub state: TrainState,
    /// The model after the last finished epoch: the weight average with
    /// `--ema`, else the trained weights.
    pub net: Net,
    /// Stopped before the configured epochs (by [`TrainOptions::stop`]).
    pub interrupted: bool,
}

/// What [`train`] reports as it goes (the CLI prints it; tests may assert it).
#[derive(Debug)]
pub enum TrainEvent<'a> {
    /// `--resume` found the run's last finished epoch (0: none yet, so the
    /// run starts from the beginning).
    Resumed {
        after_epoch: usize,
        best_mse: f64,
        best_epoch: usize,
    },
    /// Something the user should know that does not stop the run.
    Warning(String),
    /// An epoch of `batches` batches begins (`epoch` counts from 1).
    EpochStart {
        epoch: usize,
        epochs: usize,
        batches: usize,
    },
    /// One batch is done; the mean training loss of the epoch so far.
    Batch { running_loss: f64 },
    /// The run stopped inside `epoch`; its progress is dropped and the run
    /// holds `epochs_done` finished epochs.
    Interrupted { epoch: usize, epochs_done: usize },
    /// An epoch is done and checkpointed; `improved`: a new best.
    EpochDone {
        metrics: &'a EpochMetrics,
        epochs: usize,
        improved: bool,
    },
    /// Early stopping ends the run after this many epochs without a gain.
    EarlyStop { epochs_without_gain: usize },
}

/// Masked MSE: the mean of squared errors over the coordinates whose mask is 1.
/// Equals the plain mean squared error when every mask entry is 1.
pub fn masked_mse(
    pred: Tensor<2>,
    target: Tensor<2>,
    mask: Tensor<2>,
    labelled: usize,
) -> Tensor<1> {
    let d = (pred - target) * mask;
    d.square().sum().div_scalar(labelled.max(1) as f32)
}

/// A training batch on the host: inputs (pixel / 255), targets in [-1, 1]
/// (0 where missing) and the mask.
pub struct HostBatch {
    pub n: usize,
    pub images: Vec<f32>,
    pub targets: Vec<f32>,
    pub mask: Vec<f32>,
    pub labelled: usize,
}

impl HostBatch {
    /// Augments `samples` (draws from `rng`) into one batch.
    pub fn build(samples: &[&Sample], aug: &AugmentConfig, rng: &mut ChaCha8Rng) -> HostBatch {
        let n = samples.len();
        let mut b = HostBatch {
            n,
            images: Vec::with_capacity(n * INPUT_LEN),
            targets: Vec::with_capacity(n * OUTPUTS),
            mask: Vec::with_capacity(n * OUTPUTS),
            labelled: 0,
        };
        for s in samples {
            let (img, kp) = if aug.is_identity() {
                (
                    s.image.iter().map(|&p| p as f32 / 255.0).collect(),
                    s.keypoints,
                )
            } else {
                aug.apply(s, rng)
            };
            b.images.extend_from_slice(&img);
            for v in kp {
                if v.is_nan() {
                    b.targets.push(0.0);
                    b.mask.push(0.0);
                } else {
                    b.targets.push(pixel_to_unit(v));
                    b.mask.push(1.0);
                    b.labelled += 1;
                }
            }
        }
        b
    }

    pub fn tensors(&self, device: &Device) -> (Tensor<4>, Tensor<2>, Tensor<2>) {
        let x = Tensor::from_data(
            TensorData::new(self.images.clone(), [self.n, 1, INPUT_SIDE, INPUT_SIDE]),
            device,
        );
        let t = Tensor::from_data(
            TensorData::new(self.targets.clone(), [self.n, OUTPUTS]),
            device,
        );
        let m = Tensor::from_data(
            TensorData::new(self.mask.clone(), [self.n, OUTPUTS]),
            device,
        );
        (x, t, m)
    }
}

/// The optimizer of a config (Adam with L2 weight decay, as PyTorch's `Adam`).
pub fn optimizer(cfg: &TrainConfig) -> ModuleOptimizer {
    let wd = (cfg.weight_decay > 0.0).then(|| WeightDecayConfig::new(cfg.weight_decay as f32));
    AdamConfig::new()
        .with_epsilon(cfg.adam_eps as f32)
        .with_weight_decay(wd)
        .init()
}

/// One optimisation step: forward with dropout, masked MSE, backward, Adam.
/// Returns the updated model and the batch loss.
pub fn train_step(
    net: Net,
    optim: &mut ModuleOptimizer,
    batch: &HostBatch,
    lr: f64,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Result<(Net, f32)> {
    train_step_timed(
        net,
        optim,
        batch,
        lr,
        rng,
        device,
        &mut StepTimes::default(),
    )
}

/// Seconds a training step spent in each phase, summed over steps
/// (`facemark bench train` prints them: where the time goes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct StepTimes {
    /// The host batch to tensors.
    pub to_tensors: f64,
    /// Forward pass and masked MSE, up to reading the loss.
    pub forward: f64,
    /// Backward pass and gradient collection.
    pub backward: f64,
    /// The Adam step.
    pub optimizer: f64,
}

/// [`train_step`], adding each phase's time to `times`.
pub fn train_step_timed(
    net: Net,
    optim: &mut ModuleOptimizer,
    batch: &HostBatch,
    lr: f64,
    rng: &mut ChaCha8Rng,
    device: &Device,
    times: &mut StepTimes,
) -> Result<(Net, f32)> {
    let t = Instant::now();
    let (x, target, mask) = batch.tensors(device);
    times.to_tensors += t.elapsed().as_secs_f64();
    let t = Instant::now();
    let pred = net.forward_train(x, rng);
    let loss = masked_mse(pred, target, mask, batch.labelled);
    let value: f32 = loss
        .clone()
        .try_into_scalar()
        .map_err(|e| anyhow::anyhow!("reading the loss: {e:?}"))?;
    times.forward += t.elapsed().as_secs_f64();
    ensure!(
        value.is_finite(),
        "the training loss is not finite ({value}); try a lower --lr"
    );
    let t = Instant::now();
    let grads = GradientsParams::from_grads(loss.backward(), &net);
    times.backward += t.elapsed().as_secs_f64();
    let t = Instant::now();
    let net = optim.step(lr, net, grads);
    times.optimizer += t.elapsed().as_secs_f64();
    Ok((net, value))
}

/// The RNG for epoch `e` (0-based): shuffle, augmentation and dropout.
pub fn epoch_rng(seed: u64, epoch: usize) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(epoch as u64 + 1);
    r
}

fn batches_per_epoch(n: usize, batch: usize) -> usize {
    n.div_ceil(batch)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, serde_json::to_string_pretty(v)? + "\n")
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// The directory holding the last complete checkpoint, if any.
pub fn find_last(run_dir: &Path) -> Option<PathBuf> {
    [LAST_DIR, "last.old"]
        .iter()
        .map(|d| run_dir.join(d))
        .find(|d| {
            d.join(STATE_FILE).is_file()
                && d.join(MODEL_FILE).is_file()
                && d.join(OPTIM_FILE).is_file()
        })
}

/// Replaces `last/` as a whole: write `last.new/`, then swap.
fn save_last(
    run_dir: &Path,
    net: &Net,
    average: Option<&WeightAverage>,
    optim: &ModuleOptimizer,
    state: &TrainState,
) -> Result<()> {
    let new = run_dir.join("last.new");
    let last = run_dir.join(LAST_DIR);
    let old = run_dir.join("last.old");
    if new.exists() {
        fs::remove_dir_all(&new).with_context(|| format!("removing {}", new.display()))?;
    }
    fs::create_dir_all(&new).with_context(|| format!("creating {}", new.display()))?;
    net.save_checkpoint(&new.join(MODEL_FILE))?;
    if let Some(a) = average {
        a.net.save_checkpoint(&new.join(AVERAGE_FILE))?;
    }
    optim
        .save(new.join(OPTIM_FILE))
        .map_err(|e| anyhow::anyhow!("saving the optimizer state: {e}"))?;
    write_json(&new.join(STATE_FILE), state)?;
    if old.exists() {
        fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    if last.exists() {
        fs::rename(&last, &old).with_context(|| format!("moving {} aside", last.display()))?;
    }
    fs::rename(&new, &last)
        .with_context(|| format!("renaming {} to {}", new.display(), last.display()))?;
    if old.exists() {
        fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    Ok(())
}

/// Writes `metrics.csv` from the history.
pub fn write_metrics_csv(path: &Path, history: &[EpochMetrics]) -> Result<()> {
    let mut s =
        String::from("epoch,train_loss,val_mse,val_score,val_rmse_px,lr,seconds,raw_val_score\n");
    for m in history {
        s += &format!(
            "{},{:.8},{:.8},{:.3},{:.4},{:.6e},{:.2},{}\n",
            m.epoch,
            m.train_loss,
            m.val_mse,
            m.val_score,
            m.val_rmse_px,
            m.lr,
            m.seconds,
            m.raw_val_score.map_or(String::new(), |v| format!("{v:.3}"))
        );
    }
    let tmp = path.with_extension("csv.tmp");
    fs::write(&tmp, s).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Writes the loss-curve PNG from the history.
pub fn write_plot(path: &Path, state: &TrainState) -> Result<()> {
    let train = crate::train::plot::Series {
        label: "train loss (masked MSE)",
        color: Rgb888::new(30, 90, 200),
        points: state
            .history
            .iter()
            .map(|m| (m.epoch as f64, m.train_loss))
            .collect(),
    };
    let val = crate::train::plot::Series {
        label: "validation MSE",
        color: Rgb888::new(210, 50, 40),
        points: state
            .history
            .iter()
            .map(|m| (m.epoch as f64, m.val_mse))
            .collect(),
    };
    let best = (state.best_epoch > 0).then_some(state.best_epoch as f64);
    let title = match state.history.iter().find(|m| m.epoch == state.best_epoch) {
        Some(b) => format!(
            "facemark training: best val MSE {:.6} (score {:.1}, RMSE {:.2} px) at epoch {}",
            b.val_mse, b.val_score, b.val_rmse_px, b.epoch
        ),
        None => "facemark training".to_string(),
    };
    crate::train::plot::log_plot_png(path, &title, "epoch", &[train, val], best)
}

/// Trains (or continues) a run in `run_dir` on in-memory data.
pub fn train(
    cfg: &TrainConfig,
    train_set: &Dataset,
    val_set: &Dataset,
    run_dir: &Path,
    opts: &TrainOptions,
    report: &mut dyn FnMut(TrainEvent<'_>),
) -> Result<TrainOutcome> {
    cfg.check()?;
    ensure!(!train_set.is_empty(), "the training set is empty");
    ensure!(!val_set.is_empty(), "the validation set is empty");
    let device = cfg.backend.autodiff_device();
    let plain = cfg.backend.device();
    let config_path = run_dir.join(CONFIG_FILE);

    // A run's model, weight average and progress: new, or after the epoch
    // that `last` holds (for --resume, and on a stop inside an epoch).
    let fresh = || {
        let net = Net::new(&device, cfg.seed);
        let average = cfg.ema.map(|decay| WeightAverage::new(&net, decay));
        (net, average, TrainState::default())
    };
    let from_last = |last: &Path| -> Result<(Net, Option<WeightAverage>, TrainState)> {
        let state: TrainState = read_json(&last.join(STATE_FILE))?;
        let net = Net::load_checkpoint(&last.join(MODEL_FILE), &device)?;
        let average = match cfg.ema {
            Some(decay) => {
                let path = last.join(AVERAGE_FILE);
                let avg = Net::load_checkpoint(&path, &device)
                    .with_context(|| format!("--resume with --ema needs {}", path.display()))?;
                Some(WeightAverage::from_net(avg, decay))
            }
            None => None,
        };
        Ok((net, average, state))
    };

    let ((mut net, mut average, mut state), mut optim) = if opts.resume {
        ensure!(
            config_path.is_file(),
            "--resume: {} has no {CONFIG_FILE}",
            run_dir.display()
        );
        let saved: TrainConfig = read_json(&config_path)?;
        let mut cmp = saved.clone();
        cmp.epochs = cfg.epochs;
        if cmp != *cfg {
            bail!(
                "--resume: the command line's recipe differs from {} (only --epochs may change):\n  saved: {}\n  given: {}",
                config_path.display(),
                serde_json::to_string(&saved)?,
                serde_json::to_string(cfg)?
            );
        }
        if saved.epochs != cfg.epochs {
            if cfg.schedule != Schedule::Constant {
                report(TrainEvent::Warning(format!(
                    "--epochs changed from {} to {}; the {:?} schedule stretches to the new length",
                    saved.epochs, cfg.epochs, cfg.schedule
                )));
            }
            write_json(&config_path, cfg)?;
        }
        match find_last(run_dir) {
            Some(last) => {
                let (net, average, state) = from_last(&last)?;
                let optim = optimizer(cfg).load(last.join(OPTIM_FILE)).map_err(|e| {
                    anyhow::anyhow!("loading {}: {e}", last.join(OPTIM_FILE).display())
                })?;
                report(TrainEvent::Resumed {
                    after_epoch: state.epochs_done,
                    best_mse: state.best_mse,
                    best_epoch: state.best_epoch,
                });
                ((net, average, state), optim)
            }
            None => {
                report(TrainEvent::Resumed {
                    after_epoch: 0,
                    best_mse: f64::INFINITY,
                    best_epoch: 0,
                });
                (fresh(), optimizer(cfg))
            }
        }
    } else {
        if config_path.exists() || find_last(run_dir).is_some() {
            bail!(
                "{} already holds a run; continue it with --resume or choose another --out",
                run_dir.display()
            );
        }
        fs::create_dir_all(run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
        write_json(&config_path, cfg)?;
        (fresh(), optimizer(cfg))
    };

    let teachers = match cfg.teachers.is_empty() {
        true => None,
        false => Some(Teachers::load(&cfg.teachers, cfg.distill_weight, &plain)?),
    };
    let stop_requested = || opts.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));
    let n = train_set.len();
    let per_epoch = batches_per_epoch(n, cfg.batch);
    let total_steps = per_epoch * cfg.epochs;
    let mut interrupted = false;

    while state.epochs_done < cfg.epochs && !state.stopped_early {
        if stop_requested() {
            interrupted = true;
            break;
        }
        let epoch = state.epochs_done;
        let start = Instant::now();
        let mut rng = epoch_rng(cfg.seed, epoch);
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);

        report(TrainEvent::EpochStart {
            epoch: epoch + 1,
            epochs: cfg.epochs,
            batches: per_epoch,
        });
        let (mut loss_sum, mut loss_n) = (0.0f64, 0usize);
        let mut lr = cfg.lr;
        for idx in order.chunks(cfg.batch) {
            if stop_requested() {
                interrupted = true;
                break;
            }
            let samples: Vec<&Sample> = idx.iter().map(|&i| &train_set.samples[i]).collect();
            let mut batch = HostBatch::build(&samples, &cfg.augment, &mut rng);
            if let Some(t) = &teachers {
                t.blend(&mut batch)?;
            }
            lr = cfg.lr_at(state.steps_done, total_steps);
            let (next, loss) = train_step(net, &mut optim, &batch, lr, &mut rng, &device)
                .with_context(|| format!("epoch {}, step {}", epoch + 1, state.steps_done + 1))?;
            net = next;
            state.steps_done += 1;
            if let Some(a) = average.as_mut() {
                a.update(&net, state.steps_done)?;
            }
            loss_sum += loss as f64 * samples.len() as f64;
            loss_n += samples.len();
            report(TrainEvent::Batch {
                running_loss: loss_sum / loss_n as f64,
            });
        }
        if interrupted {
            report(TrainEvent::Interrupted {
                epoch: epoch + 1,
                epochs_done: state.epochs_done,
            });
            // Reload the last finished epoch so the returned model matches the checkpoint.
            (net, average, state) = match find_last(run_dir) {
                Some(last) => from_last(&last)?,
                None => fresh(),
            };
            break;
        }

        let validate = |n: &Net| {
            evaluate(
                &FloatPredictor::new(n, plain.clone(), "training"),
                val_set,
                &crate::progress::Silent,
            )
        };
        // The model the run produces: the average with --ema.
        let produced = average.as_ref().map_or(&net, |a| &a.net);
        let m = validate(produced)?;
        let raw_val_score = match average {
            Some(_) => Some(score(validate(&net)?.mse)),
            None => None,
        };
        let seconds = start.elapsed().as_secs_f64();
        let em = EpochMetrics {
            epoch: epoch + 1,
            train_loss: loss_sum / loss_n.max(1) as f64,
            val_mse: m.mse,
            val_score: score(m.mse),
            val_rmse_px: rmse_px(m.mse),
            raw_val_score,
            lr,
            seconds,
        };
        state.epochs_done += 1;
        state.train_seconds += seconds;
        let improved = em.val_mse < state.best_mse;
        if improved {
            state.best_mse = em.val_mse;
            state.best_epoch = em.epoch;
            state.since_best = 0;
            produced.save_checkpoint(&run_dir.join(BEST_FILE))?;
        } else {
            state.since_best += 1;
        }
        if let Some(p) = cfg.early_stop
            && state.since_best >= p
        {
            state.stopped_early = true;
        }
        state.history.push(em);
        save_last(run_dir, &net, average.as_ref(), &optim, &state)?;
        write_metrics_csv(&run_dir.join(METRICS_FILE), &state.history)?;
        report(TrainEvent::EpochDone {
            metrics: state.history.last().expect("pushed above"),
            epochs: cfg.epochs,
            improved,
        });
        if let Err(e) = write_plot(&run_dir.join(PLOT_FILE), &state) {
            report(TrainEvent::Warning(format!("loss plot not written: {e:#}")));
        }
        if state.stopped_early {
            report(TrainEvent::EarlyStop {
                epochs_without_gain: state.since_best,
            });
        }
    }
    Ok(TrainOutcome {
        state,
        net: average.map_or(net, |a| a.net),
        interrupted,
    })
}

/// Loads the data a config names (with the seeded split and the limit);
/// rows skipped by `skip_bad_rows` are noted on `progress`.
pub fn load_data(cfg: &TrainConfig, progress: &dyn Progress) -> Result<(Dataset, Dataset)> {
    let opts = LoadOptions {
        skip_bad_rows: cfg.skip_bad_rows,
    };
    let load = |path: &str, what: &str| -> Result<Dataset> {
        let ds = crate::data::load_checked(Path::new(path), opts, what)?;
        if let Some(r) = ds.skip_report(what) {
            progress.note(&r);
        }
        Ok(ds)
    };
    let all = load(&cfg.train, "training data")?;
    let (mut train, val) = match &cfg.val {
        Some(v) if cfg.train_on_val => {
            let val = load(v, "validation data")?;
            let mut train = all;
            train.samples.extend(val.samples.iter().cloned());
            train.source = format!("{} + {}", cfg.train, v);
            (train, val)
        }
        Some(v) => (all, load(v, "validation data")?),
        None => {
            ensure!(
                all.len() >= 2,
                "{} has {} rows: too few to split off a validation set",
                cfg.train,
                all.len()
            );
            all.split(cfg.val_split, cfg.seed)
        }
    };
    if let Some(k) = cfg.limit {
        ensure!(k >= 1, "--limit must be at least 1");
        train.samples.truncate(k);
    }
    Ok((train, val))
}
