//! The command line: every command's flags and what it prints. The library
//! modules compute; only this module (and `main`) prints and exits.

mod bench;
mod bench_board;
mod bench_host;
mod bench_pi;
mod bench_xip;
mod board;
mod cv;
mod demo;
mod eval;
mod progress;
mod quantize;
mod train;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

/// Facemark: facial keypoints on a microcontroller.
#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Train the network on Kaggle-format data (writes a run directory).
    Train(train::TrainArgs),
    /// Cross-validate a recipe over approximately person-disjoint folds (mean and spread of the held-out scores).
    Cv(cv::CvArgs),
    /// Accuracy of a model on a data set (MSE, score, RMSE px, per keypoint).
    Eval(eval::EvalArgs),
    /// Write the float ONNX model of a checkpoint (or of a PyTorch ONNX).
    Export(quantize::ExportArgs),
    /// Quantize a checkpoint (or a PyTorch ONNX) to int8: the .fmq model file and the int8 ONNX.
    Quantize(quantize::QuantizeArgs),
    /// Benchmarks (training speed against PyTorch).
    Bench(bench::BenchArgs),
    /// Talk to a board: its info, keypoints for images (serial, TCP or QEMU).
    Board(board::BoardArgs),
    /// Boot the emulated board and run faces through it end to end.
    Demo(demo::DemoArgs),
}

/// Loads a data file that must hold a usable row, and says which rows
/// `--skip-bad-rows` left out.
fn load_data_file(
    path: &std::path::Path,
    options: crate::data::LoadOptions,
    what: &str,
    progress: &dyn crate::progress::Progress,
) -> anyhow::Result<crate::data::Dataset> {
    let ds = crate::data::load_checked(path, options, what)?;
    if let Some(r) = ds.skip_report(what) {
        progress.note(&r);
    }
    Ok(ds)
}

/// Parses the process's arguments (printing help or a usage error and
/// exiting, as clap does) and runs the command.
pub fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    run(cli, &matches)
}

/// Runs one command; `matches` are the arguments `cli` was parsed from
/// (`train` asks which flags were given).
pub fn run(cli: Cli, matches: &ArgMatches) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(a) => {
            let m = matches
                .subcommand_matches("train")
                .ok_or_else(|| anyhow::anyhow!("no matches for the train command"))?;
            train::run(&a, m)
        }
        Command::Cv(a) => {
            let m = matches
                .subcommand_matches("cv")
                .ok_or_else(|| anyhow::anyhow!("no matches for the cv command"))?;
            cv::run(&a, m)
        }
        Command::Eval(a) => eval::run(&a),
        Command::Export(a) => quantize::run_export(&a),
        Command::Quantize(a) => quantize::run_quantize(&a),
        Command::Bench(a) => bench::run(&a),
        Command::Board(a) => board::run(&a),
        Command::Demo(a) => demo::run(&a),
    }
}
