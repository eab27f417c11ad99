//! `facemark board`: a board's info, and keypoints for images, over a
//! serial port, TCP or an emulated board booted for the command.

use crate::board::qemu;
use crate::board::{BoardInfo, Client, Inference, far_keypoint, grouped};
use anyhow::{Context, bail};
use facemark_core::network::KEYPOINT_NAMES;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// How to reach the board (exactly one of `--port`, `--tcp`, `--qemu`).
#[derive(clap::Args, Clone, Debug)]
#[group(skip)]
#[command(group(clap::ArgGroup::new("link").required(true).multiple(false)))]
pub struct Connection {
    /// A serial port (e.g. /dev/ttyACM0, /dev/ttyUSB0, COM3).
    #[arg(long, group = "link")]
    pub port: Option<String>,
    /// Serial speed (with --port); the Pico 2 firmware uses 115200.
    #[arg(long, default_value_t = 115_200, requires = "port")]
    pub baud: u32,
    /// A board's UART over TCP, e.g. QEMU started with `cargo run --release`
    /// in firmware/boards/an386 (127.0.0.1:4444).
    #[arg(long, value_name = "HOST:PORT", group = "link")]
    pub tcp: Option<String>,
    /// Boot an emulated board in qemu-system-arm for this command (see
    /// --machine); builds its firmware first if needed.
    #[arg(long, group = "link")]
    pub qemu: bool,
    /// The emulated board for --qemu: the MPS2 AN386 (int8 model) or the
    /// 1 MB-flash STM32F405 of QEMU's netduinoplus2 (int4 model).
    #[arg(long, value_enum, default_value_t = qemu::Machine::An386, requires = "qemu")]
    pub machine: qemu::Machine,
    /// The firmware ELF to boot with --qemu (default: build the board's
    /// crate, firmware/boards/<machine>).
    #[arg(long, requires = "qemu")]
    pub elf: Option<PathBuf>,
    /// Print the emulated board's decoded defmt log at the end (--qemu).
    #[arg(long, requires = "qemu")]
    pub log: bool,
    /// Seconds to wait for each answer (serial under QEMU is slow).
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
}

/// An open link, and the emulator behind it if we started one.
pub struct Session {
    pub client: Client,
    pub qemu: Option<qemu::Qemu>,
    show_log: bool,
}

impl Session {
    /// Connects as `c` says (booting QEMU for `--qemu`).
    pub fn open(c: &Connection) -> anyhow::Result<Self> {
        let timeout = Duration::try_from_secs_f64(c.timeout)
            .ok()
            .filter(|d| !d.is_zero())
            .context("--timeout must be a positive number of seconds")?;
        let (mut client, qemu) = if let Some(port) = &c.port {
            let mut client = Client::open_serial(port, c.baud)?;
            // A real line may hold noise from before we opened it.
            client.resync(Duration::from_millis(300))?;
            (client, None)
        } else if let Some(addr) = &c.tcp {
            let mut client = Client::connect_tcp(addr)?;
            // QEMU (qemu-run.sh, `wait=on`) starts the guest when we connect,
            // and the STM32F405's USART drops what arrives before the
            // firmware enables it: give the boot 300 ms.
            client.resync(Duration::from_millis(300))?;
            (client, None)
        } else {
            let elf = match &c.elf {
                Some(e) => e.clone(),
                None => qemu::board_elf(c.machine, true, &crate::cli::progress::Bars::new(false))?,
            };
            let opts = qemu::QemuOptions {
                machine: c.machine,
                ..qemu::QemuOptions::default()
            };
            let (q, client) = qemu::Qemu::boot(&elf, &opts)?;
            (client, Some(q))
        };
        client.timeout = timeout;
        Ok(Self {
            client,
            qemu,
            show_log: c.log,
        })
    }

    /// Prints the emulator's log if asked to, then shuts it down.
    pub fn finish(self) {
        if let (Some(q), true) = (&self.qemu, self.show_log) {
            match q.decoded_log() {
                Ok(lines) => {
                    eprintln!("--- board log (defmt) ---");
                    for l in lines {
                        eprintln!("{l}");
                    }
                }
                Err(e) => eprintln!("board log: {e:#}"),
            }
        }
    }
}

/// `facemark board ...`
#[derive(clap::Args, Debug)]
pub struct BoardArgs {
    #[command(subcommand)]
    pub command: BoardCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum BoardCommand {
    /// Show the board's firmware, model and protocol.
    Info {
        #[command(flatten)]
        conn: Connection,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run faces through the board and print their keypoints.
    ///
    /// IMAGES are image files (PNG, JPEG, BMP, PNM; any size: the centred
    /// square is cropped, made grey and resized to 96x96) or Kaggle CSVs
    /// (.csv, .csv.gz, .zip; faces taken as they are).
    Infer {
        #[command(flatten)]
        conn: Connection,
        /// Image files or Kaggle CSVs.
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Faces to take from each CSV.
        #[arg(long, default_value_t = 8)]
        csv_limit: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Write each face upscaled 4x with its keypoints drawn, as PNGs here.
        #[arg(long, value_name = "DIR")]
        draw: Option<PathBuf>,
    },
}

pub fn run(args: &BoardArgs) -> anyhow::Result<()> {
    match &args.command {
        BoardCommand::Info { conn, json } => {
            let mut s = Session::open(conn)?;
            let info = s.client.info()?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                print_info(&info);
            }
            s.finish();
            Ok(())
        }
        BoardCommand::Infer {
            conn,
            images,
            csv_limit,
            json,
            draw,
        } => {
            let faces = crate::data::image_io::load_faces(images, Some(*csv_limit))?;
            if faces.is_empty() {
                bail!("no faces in {images:?}");
            }
            if let Some(dir) = draw {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let mut s = Session::open(conn)?;
            let info = s.client.info()?;
            if let Some(e) = &info.model_error {
                bail!(
                    "{}: the board's model failed its checks: {e}",
                    s.client.link()
                );
            }
            let mut results = Vec::new();
            for (i, face) in faces.iter().enumerate() {
                let inf = s
                    .client
                    .infer(&face.pixels)
                    .with_context(|| format!("face {}", face.name))?;
                if !json {
                    print_keypoints(&face.name, &inf, &info.cost_unit);
                }
                if let Some((k, [x, y])) = far_keypoint(&inf.points) {
                    eprintln!(
                        "warning: face {}: keypoint {k} ({}) at ({x}, {y}) lies far outside the picture",
                        face.name, KEYPOINT_NAMES[k]
                    );
                }
                if let Some(dir) = draw {
                    let path = dir.join(crate::data::image_io::annotated_file_name(i, &face.name));
                    crate::data::image_io::save_annotated(&path, &face.pixels, &inf.points)?;
                    if !json {
                        println!("  drawn: {}", path.display());
                    }
                }
                results.push(json_result(&face.name, &inf, &info.cost_unit));
            }
            if *json {
                println!("{}", serde_json::to_string_pretty(&results)?);
            }
            s.finish();
            Ok(())
        }
    }
}

/// Prints `Info` as text.
pub fn print_info(info: &BoardInfo) {
    println!("board:            {}", info.board);
    println!("firmware:         {}", info.firmware_version);
    println!("protocol:         {}", info.protocol);
    println!("input:            {0}x{0} grey", info.input_side);
    println!("network hash:     {:016x}", info.network_hash);
    match &info.model_error {
        None => println!("model:            ok, CRC-32 {:08x}", info.model_hash),
        Some(e) => println!("model:            REFUSED: {e}"),
    }
    println!("cost unit:        {}", info.cost_unit);
}

/// Prints one face's keypoints as a table, with the board's cost.
pub fn print_keypoints(name: &str, inf: &Inference, unit: &str) {
    println!(
        "{name}: cost {} {unit} (layers {})",
        grouped(inf.cost.total),
        inf.cost
            .layers
            .iter()
            .map(|&c| grouped(c.into()))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    println!("  {:<26} {:>7} {:>7}", "keypoint", "x", "y");
    for (k, name) in KEYPOINT_NAMES.iter().enumerate() {
        let [x, y] = inf.points[k];
        println!("  {name:<26} {x:>7.2} {y:>7.2}");
    }
}

#[derive(Serialize)]
struct JsonPoint {
    name: &'static str,
    x: f32,
    y: f32,
}

#[derive(Serialize)]
struct JsonCost {
    unit: String,
    total: u64,
    layers: Vec<u32>,
}

#[derive(Serialize)]
struct JsonResult {
    face: String,
    keypoints: Vec<JsonPoint>,
    cost: JsonCost,
}

fn json_result(face: &str, inf: &Inference, unit: &str) -> JsonResult {
    JsonResult {
        face: face.to_string(),
        keypoints: KEYPOINT_NAMES
            .iter()
            .zip(inf.points.iter())
            .map(|(&name, &[x, y])| JsonPoint { name, x, y })
            .collect(),
        cost: JsonCost {
            unit: unit.to_string(),
            total: inf.cost.total,
            layers: inf.cost.layers.to_vec(),
        },
    }
}
