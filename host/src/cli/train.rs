//! `facemark train`: the flags over a recipe, the run's progress lines.

use crate::cli::progress::Bars;
use crate::progress::Progress;
use crate::train::{Recipe, TrainConfig, TrainEvent, TrainOptions, load_data, train};
use anyhow::Result;
use clap::ArgMatches;
use clap::parser::ValueSource;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

/// `facemark train`: the recipe's flags ([`TrainConfig`], also what
/// `config.json` holds) and how to run. A recipe flag given overrides the
/// value `--recipe` sets (`facemark train --train T --val V --out runs/x`
/// trains the committed model's recipe).
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub config: TrainConfig,
    /// Run directory (config, metrics, checkpoints, plot).
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in --out from its last finished epoch (same recipe flags; --epochs may grow).
    #[arg(long)]
    pub resume: bool,
    /// The recipe the flags start from: `committed` (the committed
    /// model's) or `seed` (the seed report's).
    #[arg(long, value_enum, default_value_t = Recipe::Committed)]
    pub recipe: Recipe,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

impl TrainArgs {
    /// The run's config: `--recipe` under the flags given on the command
    /// line (`matches`: this subcommand's), data paths made absolute.
    pub fn config(&self, matches: &ArgMatches) -> Result<TrainConfig> {
        recipe_config(&self.config, self.recipe, matches)
    }
}

/// `flags` (a command's parsed recipe flags) with `recipe` under the ones
/// not given on the command line (`matches`: the subcommand's), data paths
/// made absolute: `train` and `cv` alike.
pub(crate) fn recipe_config(
    flags: &TrainConfig,
    recipe: Recipe,
    matches: &ArgMatches,
) -> Result<TrainConfig> {
    let given = |id: &str| {
        matches
            .try_get_raw(id)
            .is_ok_and(|_| matches.value_source(id) == Some(ValueSource::CommandLine))
    };
    let mut cfg = flags.over_recipe(recipe, given)?;
    fn absolute(p: &str) -> String {
        crate::data::path_string(&crate::data::absolute(Path::new(p)))
    }
    cfg.train = absolute(&cfg.train);
    cfg.val = cfg.val.as_deref().map(absolute);
    Ok(cfg)
}

/// Ctrl-C once stops the run between batches (the last finished epoch is
/// saved); twice exits at once.
pub(crate) fn stop_on_ctrl_c() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let presses = AtomicUsize::new(0);
    let r = ctrlc::set_handler(move || {
        flag.store(true, Ordering::SeqCst);
        if presses.fetch_add(1, Ordering::SeqCst) >= 1 {
            eprintln!("\ninterrupted again: exiting now (the last checkpoint is intact)");
            std::process::exit(130);
        }
        eprintln!(
            "\ninterrupt: stopping after this batch; the last finished epoch is saved (continue with --resume)"
        );
    });
    if let Err(e) = r {
        eprintln!("warning: cannot install a Ctrl-C handler: {e}");
    }
    stop
}

/// Prints a run's events: a bar per epoch, one line per finished epoch.
pub(crate) fn print_event(e: TrainEvent<'_>, bars: &Bars, run_dir: &Path) {
    match e {
        TrainEvent::Resumed { after_epoch: 0, .. } => println!(
            "resuming {}: no finished epoch yet, starting from the beginning",
            run_dir.display()
        ),
        TrainEvent::Resumed {
            after_epoch,
            best_mse,
            best_epoch,
        } => println!(
            "resuming {} after epoch {after_epoch} (best val MSE {best_mse:.6} at epoch {best_epoch})",
            run_dir.display()
        ),
        TrainEvent::Warning(w) => bars.note(&format!("warning: {w}")),
        TrainEvent::EpochStart {
            epoch,
            epochs,
            batches,
        } => bars.begin(&format!("epoch {epoch}/{epochs}"), batches as u64),
        TrainEvent::Batch { running_loss } => {
            bars.advance(1, Some(&format!("loss {running_loss:.5}")))
        }
        TrainEvent::Interrupted { epoch, epochs_done } => {
            bars.end();
            println!(
                "interrupted in epoch {epoch}: its progress is dropped; --resume continues after epoch {epochs_done}"
            );
        }
        TrainEvent::EpochDone {
            metrics: m,
            epochs,
            improved,
        } => {
            bars.end();
            println!(
                "epoch {:>3}/{epochs}  train loss {:.6}  val MSE {:.6}  score {:>7.1}{}  RMSE {:.3} px  lr {:.2e}  {:.1} s{}",
                m.epoch,
                m.train_loss,
                m.val_mse,
                m.val_score,
                m.raw_val_score
                    .map_or(String::new(), |r| format!(" (raw weights {r:.1})")),
                m.val_rmse_px,
                m.lr,
                m.seconds,
                if improved { "  *best" } else { "" }
            );
        }
        TrainEvent::EarlyStop {
            epochs_without_gain,
        } => println!("early stop: no better validation MSE for {epochs_without_gain} epochs"),
    }
}

pub fn run(args: &TrainArgs, matches: &ArgMatches) -> Result<()> {
    let cfg = args.config(matches)?;
    cfg.check()?;
    let bars = Bars::new(!args.no_progress);
    let t0 = Instant::now();
    let (train_set, val_set) = load_data(&cfg, &bars)?;
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
        stop: Some(stop_on_ctrl_c()),
    };
    let out = train(&cfg, &train_set, &val_set, &args.out, &opts, &mut |e| {
        print_event(e, &bars, &args.out)
    })?;
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
    if cfg.train_on_val && !out.interrupted {
        println!(
            "--train-on-val: the validation faces were training faces, so keep the last epoch: {}",
            args.out
                .join(crate::train::LAST_DIR)
                .join(if cfg.ema.is_some() {
                    crate::train::AVERAGE_FILE
                } else {
                    crate::train::MODEL_FILE
                })
                .display()
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
    use clap::{CommandFactory, FromArgMatches};

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        train: TrainArgs,
    }

    fn config(args: &[&str]) -> TrainConfig {
        let mut argv = vec!["facemark", "--train", "t.csv", "--out", "runs/x"];
        argv.extend_from_slice(args);
        let m = Cli::command().get_matches_from(argv);
        let mut c = Cli::from_arg_matches(&m).unwrap().train.config(&m).unwrap();
        c.train.clear();
        c
    }

    #[test]
    fn no_flags_is_the_committed_recipe_and_seed_is_one_flag_away() {
        assert_eq!(config(&[]), Recipe::Committed.config());
        assert_eq!(config(&["--recipe", "seed"]), TrainConfig::default());
        let c = config(&[]);
        assert_eq!((c.epochs, c.schedule, c.seed), (100, Schedule::Onecycle, 2));
        assert!(c.augment.flip && c.augment.shift == 2.0 && c.augment.contrast == 0.2);
    }

    #[test]
    fn a_flag_overrides_its_recipe_value_only() {
        let c = config(&["--epochs", "3", "--flip", "false"]);
        assert_eq!(c.epochs, 3);
        assert!(!c.augment.flip);
        assert_eq!(c.augment.shift, 2.0);
        let s = config(&[
            "--recipe", "seed", "--flip", "--shift", "1.5", "--seed", "9",
        ]);
        assert!(s.augment.flip);
        assert_eq!((s.augment.shift, s.seed), (1.5, 9));
        // A flag given with the recipe's own value stays, of course.
        assert_eq!(config(&["--recipe", "seed", "--epochs", "70"]).epochs, 70);
        assert_eq!(config(&["--recipe", "seed"]).epochs, 15);
    }

    #[test]
    fn every_config_field_is_a_flag_of_the_same_name() {
        // over_recipe matches clap ids to serde names: a rename on either
        // side would make a flag silently ignored under --recipe seed.
        let cmd = Cli::command();
        let ids: Vec<&str> = cmd.get_arguments().map(|a| a.get_id().as_str()).collect();
        let v = serde_json::to_value(TrainConfig::default()).unwrap();
        let mut keys = Vec::new();
        for (k, x) in v.as_object().unwrap() {
            match x.as_object() {
                Some(inner) => keys.extend(inner.keys().cloned()),
                None => keys.push(k.clone()),
            }
        }
        assert!(keys.len() >= 20, "{keys:?}");
        for k in &keys {
            assert!(ids.contains(&k.as_str()), "config field {k} has no flag");
        }
    }

    #[test]
    fn a_nan_is_refused_with_a_message() {
        let argv = ["facemark", "--train", "t.csv", "--out", "x", "--lr", "NaN"];
        let m = Cli::command().get_matches_from(argv);
        let a = Cli::from_arg_matches(&m).unwrap().train;
        let e = a.config(&m).and_then(|c| c.check()).unwrap_err();
        assert!(format!("{e:#}").contains("lr"), "{e:#}");
    }

    fn refusal(args: &[&str]) -> String {
        let mut argv = vec!["facemark", "--train", "t.csv", "--out", "x"];
        argv.extend_from_slice(args);
        let m = Cli::command().get_matches_from(argv);
        let a = Cli::from_arg_matches(&m).unwrap().train;
        format!("{:#}", a.config(&m).and_then(|c| c.check()).unwrap_err())
    }

    #[test]
    fn the_weight_average_and_train_on_val_flags_are_checked() {
        assert_eq!(config(&[]).ema, None);
        assert_eq!(config(&["--ema", "0.999"]).ema, Some(0.999));
        // NaN would be written to config.json as null, i.e. "off": refused.
        for bad in ["NaN", "0", "1", "1.5", "-0.5"] {
            let e = refusal(&[&format!("--ema={bad}")]);
            assert!(e.contains("--ema"), "--ema {bad}: {e}");
        }
        assert!(config(&["--val", "v.csv", "--train-on-val"]).train_on_val);
        assert!(refusal(&["--train-on-val"]).contains("--train-on-val needs --val"));
    }
}
