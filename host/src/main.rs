use clap::{Parser, Subcommand};

/// Facemark: facial keypoints on a microcontroller.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the network on Kaggle-format data (writes a run directory).
    Train(facemark::train::TrainArgs),
    /// Accuracy of a model on a data set (MSE, score, RMSE px, per keypoint).
    Eval(facemark::eval::EvalArgs),
    /// Write the float ONNX model of a checkpoint.
    Export(facemark::export::ExportArgs),
    /// Quantize a checkpoint to int8: the .fmq model file and the int8 ONNX.
    Quantize(facemark::export::QuantizeArgs),
    /// Benchmarks (training speed against PyTorch).
    Bench(facemark::bench::BenchArgs),
    /// Talk to a board: its info, keypoints for images (serial, TCP or QEMU).
    Board(facemark::board::BoardArgs),
    /// Boot the emulated board and run faces through it end to end.
    Demo(facemark::demo::DemoArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Train(a) => facemark::train::run(&a),
        Command::Eval(a) => facemark::eval::run(&a),
        Command::Export(a) => facemark::export::run_export(&a),
        Command::Quantize(a) => facemark::export::run_quantize(&a),
        Command::Bench(a) => facemark::bench::run(&a),
        Command::Board(a) => facemark::board::run(&a),
        Command::Demo(a) => facemark::demo::run(&a),
    }
}
