//! Facemark on a Raspberry Pi 4/5 running Linux (or any Linux machine): the
//! board protocol served over a serial device or stdin/stdout, with the same
//! loop ([`facemark_serve::Server`]) and the same int8 core as the
//! microcontrollers. Cost is wall time in nanoseconds.
//!
//! ```text
//! facemark-pi [--stdio] [--device PATH [--baud N] [--no-stty]] [--model FILE] [--quiet]
//! ```
//!
//! Without `--device` it serves stdin/stdout until stdin ends. With
//! `--device /dev/ttyAMA0 --baud 115200` it first runs
//! `stty -F DEV BAUD raw -echo` (unless `--no-stty`), then serves the device.
//! The model is the one embedded at build time unless `--model` names a file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use facemark_core::network::ARENA_LEN;
use facemark_serve::{Board, Event, Link, Server};

const USAGE: &str =
    "usage: facemark-pi [--stdio] [--device PATH [--baud N] [--no-stty]] [--model FILE] [--quiet]

Serves the Facemark board protocol (postcard + CRC-32 + COBS frames) over
stdin/stdout (the default) or a serial device. The model is the one embedded
at build time unless --model names a .fmq file.";

struct Pi {
    start: Instant,
    quiet: bool,
}

impl Board for Pi {
    #[cfg(target_arch = "aarch64")]
    const NAME: &'static str = "raspberry-pi (linux aarch64)";
    #[cfg(not(target_arch = "aarch64"))]
    const NAME: &'static str = "linux host";
    const COST_UNIT: &'static str = "ns";
    const FIRMWARE_VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn now(&mut self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn event(&mut self, e: Event<'_>) {
        if self.quiet {
            return;
        }
        match e {
            Event::BadFrame(err) => eprintln!("facemark-pi: bad frame: {err:?}"),
            Event::Undecodable { len } => {
                eprintln!("facemark-pi: undecodable message of {len} bytes")
            }
            Event::Info { id } => eprintln!("facemark-pi: info #{id}"),
            Event::WrongImageSize { id, got } => {
                eprintln!("facemark-pi: infer #{id}: image of {got} bytes")
            }
            Event::ModelInvalid { id } => eprintln!("facemark-pi: infer #{id}: no valid model"),
            Event::Inferred { id, cost } => eprintln!(
                "facemark-pi: infer #{id}: {:.3} ms (layers {:?} ns)",
                cost.total as f64 / 1e6,
                cost.layers
            ),
        }
    }
}

/// Any reader and writer pair (stdin/stdout, or a device opened twice).
struct Stream<R, W> {
    rx: R,
    tx: W,
}

impl<R: Read, W: Write> Link for Stream<R, W> {
    type Error = std::io::Error;

    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.rx.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tx.write_all(bytes)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.tx.flush()
    }
}

struct Options {
    device: Option<PathBuf>,
    baud: Option<u32>,
    stty: bool,
    model: Option<PathBuf>,
    quiet: bool,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        device: None,
        baud: None,
        stty: true,
        model: None,
        quiet: false,
    };
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        let a = a.to_string_lossy().into_owned();
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| format!("{name} needs a value\n\n{USAGE}"))
        };
        match a.as_str() {
            "--stdio" => o.device = None,
            "--device" => o.device = Some(value("--device")?.into()),
            "--baud" => {
                let v = value("--baud")?;
                let v = v.to_string_lossy();
                o.baud = Some(
                    v.parse()
                        .map_err(|_| format!("--baud {v}: not a whole number"))?,
                );
            }
            "--no-stty" => o.stty = false,
            "--model" => o.model = Some(value("--model")?.into()),
            "--quiet" | "-q" => o.quiet = true,
            "--help" | "-h" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    if o.baud.is_some() && o.device.is_none() {
        return Err(format!("--baud needs --device\n\n{USAGE}"));
    }
    Ok(o)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("facemark-pi: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let o = parse_args()?;
    let file_model;
    let model_file: &[u8] = match &o.model {
        Some(p) => {
            file_model =
                std::fs::read(p).map_err(|e| format!("cannot read model {}: {e}", p.display()))?;
            &file_model
        }
        None => facemark_model::file(),
    };
    let mut arena = Box::new([0i8; ARENA_LEN]);
    let pi = Pi {
        start: Instant::now(),
        quiet: o.quiet,
    };
    let mut server = Server::new(pi, model_file, &mut arena);
    if !o.quiet {
        match server.model() {
            Ok(m) => eprintln!(
                "facemark-pi {}: model ok, hash {:08x}",
                Pi::FIRMWARE_VERSION,
                m.model_hash()
            ),
            Err(_) => eprintln!(
                "facemark-pi: model refused, every inference gets ModelInvalid: {}",
                server.model_error()
            ),
        }
    }
    match &o.device {
        None => {
            let mut link = Stream {
                rx: std::io::stdin().lock(),
                tx: std::io::stdout().lock(),
            };
            server
                .serve(&mut link)
                .map_err(|e| format!("stdin/stdout: {e}"))
        }
        Some(dev) => {
            if o.stty {
                configure(dev, o.baud)?;
            }
            let rx = OpenOptions::new()
                .read(true)
                .write(true)
                .open(dev)
                .map_err(|e| format!("cannot open {}: {e}", dev.display()))?;
            let tx: File = rx
                .try_clone()
                .map_err(|e| format!("cannot open {}: {e}", dev.display()))?;
            if !o.quiet {
                eprintln!("facemark-pi: serving {}", dev.display());
            }
            let mut link = Stream { rx, tx };
            server
                .serve(&mut link)
                .map_err(|e| format!("{}: {e}", dev.display()))
        }
    }
}

/// Raw 8N1 at `baud` through `stty` (std only, no termios bindings).
fn configure(dev: &std::path::Path, baud: Option<u32>) -> Result<(), String> {
    let mut cmd = std::process::Command::new("stty");
    cmd.arg("-F").arg(dev);
    if let Some(b) = baud {
        cmd.arg(b.to_string());
    }
    cmd.args([
        "raw", "-echo", "-ixon", "-ixoff", "cs8", "-cstopb", "-parenb",
    ]);
    let status = cmd.status().map_err(|e| {
        format!(
            "cannot run stty for {}: {e} (or pass --no-stty)",
            dev.display()
        )
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "stty -F {} failed ({status}); configure the port yourself and pass --no-stty",
            dev.display()
        ))
    }
}
