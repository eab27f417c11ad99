//! The command line: every command's flags and what it prints. The library
//! modules compute; only this module (and `main`) prints and exits.

mod bench;
mod bench_board;
mod bench_host;
mod bench_pi;
mod board;
mod demo;
mod eval;
mod quantize;
mod train;

use clap::{Parser, Subcommand};

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

/// Runs one command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(a) => train::run(&a),
        Command::Eval(a) => eval::run(&a),
        Command::Export(a) => quantize::run_export(&a),
        Command::Quantize(a) => quantize::run_quantize(&a),
        Command::Bench(a) => bench::run(&a),
        Command::Board(a) => board::run(&a),
        Command::Demo(a) => demo::run(&a),
    }
}
