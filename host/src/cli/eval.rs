//! `facemark eval`: a model's accuracy on a data set, as a table or JSON.

use crate::cli::progress::Bars;
use crate::data::LoadOptions;
use crate::eval::{
    FlipAveraged, Predictor, compare_table, evaluate, format_table, predictor_for_path,
};
use crate::float::net::Backend;
use anyhow::Result;
use std::path::PathBuf;

/// `facemark eval MODEL DATA [--json]`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Model: an int8 model file (.fmq), a float checkpoint (.bpk), a
    /// training run directory (its best.bpk), or an ONNX file of the seed
    /// network (as PyTorch's `torch.onnx.export` writes it).
    pub model: PathBuf,
    /// Data: Kaggle CSV (.csv, .csv.gz or .zip).
    pub data: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Test-time flip averaging (a host-side extra: each face and its
    /// mirror image, the keypoints averaged; twice the cost, not on the
    /// board).
    #[arg(long)]
    pub flip_average: bool,
    /// burn backend for the float model.
    #[arg(long, value_enum, default_value_t = Backend::Flex)]
    pub backend: Backend,
    /// Skip malformed rows (and report how many) instead of failing.
    #[arg(long)]
    pub skip_bad_rows: bool,
    /// Also evaluate this model (e.g. the float checkpoint of an .fmq) and
    /// print both side by side: COMPARE as A, MODEL as B.
    #[arg(long)]
    pub compare: Option<PathBuf>,
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let bars = Bars::new(!args.json);
    let data = crate::cli::load_data_file(
        &args.data,
        LoadOptions {
            skip_bad_rows: args.skip_bad_rows,
        },
        "data",
        &bars,
    )?;
    let load = |path: &std::path::Path| -> Result<Box<dyn Predictor>> {
        let p = predictor_for_path(path, args.backend)?;
        Ok(if args.flip_average {
            Box::new(FlipAveraged(p))
        } else {
            p
        })
    };
    let m = evaluate(load(&args.model)?.as_ref(), &data, &bars)?;
    let base = match &args.compare {
        Some(p) => Some(evaluate(load(p)?.as_ref(), &data, &bars)?),
        None => None,
    };
    match (&base, args.json) {
        (None, true) => println!("{}", serde_json::to_string_pretty(&m)?),
        (None, false) => print!("{}", format_table(&m)),
        (Some(a), true) => {
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({ "a": a, "b": &m, "b_score_fraction_of_a": m.score / a.score })
                )?
            )
        }
        (Some(a), false) => {
            print!("{}\n{}\n", format_table(a), format_table(&m));
            print!("{}", compare_table(a, &m));
        }
    }
    Ok(())
}
