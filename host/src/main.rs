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
    /// Talk to a board: its info, keypoints for images (serial, TCP or QEMU).
    Board(facemark::board::BoardArgs),
    /// Boot the emulated board and run faces through it end to end.
    Demo(facemark::demo::DemoArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Board(a) => facemark::board::run(&a),
        Command::Demo(a) => facemark::demo::run(&a),
    }
}
