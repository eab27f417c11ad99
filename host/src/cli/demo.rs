//! `facemark demo`: boots the emulated board (the firmware in QEMU), runs a
//! few faces through it over its UART, prints their keypoints and the
//! board's cost, checks them against the host's run of the same int8 model,
//! and writes the faces with their keypoints drawn.
//!
//! Faces come from `--data` (a Kaggle CSV), else from
//! `../shared/data/faces96-val.csv.gz` beside the repository when it is
//! there, else they are drawn (synthetic faces).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use facemark_core::Model;

use crate::board::grouped;
use crate::board::qemu::{Machine, Qemu, QemuOptions, board_elf};
use crate::cli::board::print_keypoints;
use crate::data::image_io::{Face, annotated_file_name, load_csv, save_annotated};
use crate::data::synthetic::synthetic_face;

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// How many faces to run.
    #[arg(long, default_value_t = 4)]
    pub faces: usize,
    /// Where to write the annotated faces (PNG).
    #[arg(long, default_value = "demo-out")]
    pub out: PathBuf,
    /// A Kaggle CSV to take faces from.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Use drawn faces even if the Kaggle data is there.
    #[arg(long, conflicts_with = "data")]
    pub synthetic: bool,
    /// The firmware ELF (default: build firmware/ and use its release ELF).
    #[arg(long)]
    pub elf: Option<PathBuf>,
    /// The emulated board: the MPS2 AN386 (int8 model) or the 1 MB-flash
    /// STM32F405 of QEMU's netduinoplus2 (int4 model).
    #[arg(long, value_enum, default_value_t = Machine::An386)]
    pub machine: Machine,
    /// The model file for the host's reference run (default: the one the
    /// board embeds: `$FACEMARK_MODEL` when set, as for the firmware build,
    /// else models/facemark.fmq or models/facemark-int4.fmq).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Seconds to wait for each answer.
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
}

use crate::board::qemu::repo_root;

/// The Kaggle validation faces beside the repository, if they are there.
pub fn default_data() -> Option<PathBuf> {
    let rel = Path::new("../shared/data/faces96-val.csv.gz");
    [rel.to_path_buf(), repo_root().join(rel)]
        .into_iter()
        .find(|p| p.is_file())
}

fn pick_faces(a: &DemoArgs) -> anyhow::Result<Vec<Face>> {
    let data = if a.synthetic {
        None
    } else {
        a.data.clone().or_else(default_data)
    };
    match data {
        Some(p) => {
            println!("faces: the first {} of {}", a.faces, p.display());
            load_csv(&p, Some(a.faces))
        }
        None => {
            println!("faces: {} synthetic (no Kaggle data found)", a.faces);
            Ok((0..a.faces)
                .map(|i| Face {
                    name: format!("synthetic-{}", i + 1),
                    pixels: synthetic_face(i as u64 + 1),
                })
                .collect())
        }
    }
}

pub fn run(a: &DemoArgs) -> anyhow::Result<()> {
    let faces = pick_faces(a)?;
    anyhow::ensure!(!faces.is_empty(), "no faces to run");
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;

    let elf = match &a.elf {
        Some(e) => e.clone(),
        None => {
            println!(
                "firmware: cargo build --release in {} ...",
                a.machine.crate_dir().display()
            );
            board_elf(a.machine, true, &crate::cli::progress::Bars::new(false))?
        }
    };
    println!(
        "booting {} in qemu-system-arm ({}) ...",
        elf.display(),
        a.machine.qemu_machine()
    );
    let opts = QemuOptions {
        machine: a.machine,
        ..QemuOptions::default()
    };
    let (qemu, mut client) = Qemu::boot(&elf, &opts)?;
    client.timeout = std::time::Duration::try_from_secs_f64(a.timeout)
        .ok()
        .filter(|d| !d.is_zero())
        .context("--timeout must be a positive number of seconds")?;
    let info = client.info()?;
    crate::cli::board::print_info(&info);
    if let Some(e) = &info.model_error {
        anyhow::bail!("the firmware's model failed its checks: {e}");
    }

    // The host's run of the same model file, for a bit-exact comparison.
    let model_path = a
        .model
        .clone()
        .or_else(|| std::env::var_os("FACEMARK_MODEL").map(PathBuf::from))
        .unwrap_or_else(|| repo_root().join(a.machine.model_file()));
    let model_bytes = std::fs::read(&model_path).ok();
    let reference = model_bytes
        .as_deref()
        .and_then(|b| Model::parse(b).ok())
        .filter(|m| m.model_hash() == info.model_hash);
    if reference.is_none() {
        println!(
            "(no host reference: {} is missing or is not the board's model)",
            model_path.display()
        );
    }
    let mut arena = Box::new([0i8; facemark_core::network::ARENA_LEN]);

    let mut matches = 0;
    let mut costs = Vec::new();
    for (i, face) in faces.iter().enumerate() {
        let t = Instant::now();
        let inf = client
            .infer(&face.pixels)
            .with_context(|| format!("face {}", face.name))?;
        let wall = t.elapsed();
        println!();
        print_keypoints(&face.name, &inf, &info.cost_unit);
        if let Some(m) = &reference {
            let host = facemark_core::infer(m, &face.pixels, &mut arena);
            let same = (0..inf.points.len()).all(|k| {
                let (x, y) = host.pixel(k);
                inf.points[k][0].to_bits() == x.to_bits()
                    && inf.points[k][1].to_bits() == y.to_bits()
            });
            matches += usize::from(same);
            println!(
                "  host reference: {}",
                if same {
                    "identical, bit for bit"
                } else {
                    "DIFFERENT"
                }
            );
        }
        let path = a.out.join(annotated_file_name(i, &face.name));
        save_annotated(&path, &face.pixels, &inf.points)?;
        println!("  round trip {wall:.2?}; drawn: {}", path.display());
        costs.push(inf.cost.total);
    }

    println!();
    if let (Some(min), Some(max)) = (costs.iter().min(), costs.iter().max()) {
        println!(
            "board cost per inference: {} to {} {} ({} MACs)",
            grouped(*min),
            grouped(*max),
            info.cost_unit,
            grouped(facemark_core::network::MACS as u64)
        );
    }
    if reference.is_some() {
        println!(
            "board vs host: {matches} of {} faces identical",
            faces.len()
        );
    }
    if let Ok(lines) = qemu.decoded_log()
        && let Some(hw) = crate::board::log::stack_high_water(&lines)
    {
        println!("firmware stack high-water mark: {hw} bytes");
    }
    drop(qemu);
    if reference.is_some() && matches != faces.len() {
        anyhow::bail!("the board and the host disagree on some faces");
    }
    Ok(())
}
