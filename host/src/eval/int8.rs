//! The int8 model on the host: the board's arithmetic, bit for bit, with the
//! fastest kernel tier this CPU has (`facemark_core::kernels::detected`).

use anyhow::{Context, Result, ensure};
use facemark_core::network::{ARENA_LEN, INPUT_LEN, OUTPUTS};
use facemark_core::{Model, infer};
use std::path::Path;

/// A checked `.fmq` file held in memory.
pub struct Int8Model {
    bytes: Vec<u8>,
}

impl Int8Model {
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Model::parse(&bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Self { bytes })
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_bytes(bytes).with_context(|| format!("model file {}", path.display()))
    }

    pub fn model(&self) -> Model<'_> {
        Model::parse(&self.bytes).expect("checked when loaded")
    }

    /// Keypoints in [-1, 1] units for each image (9216 bytes each), in
    /// parallel over the machine's cores.
    pub fn predict(&self, images: &[&[u8]]) -> Result<Vec<[f32; OUTPUTS]>> {
        for (i, im) in images.iter().enumerate() {
            ensure!(
                im.len() == INPUT_LEN,
                "image {i} has {} bytes, expected {INPUT_LEN} (96x96 grey)",
                im.len()
            );
        }
        let model = self.model();
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let chunk = images.len().div_ceil(threads).max(1);
        let mut out = vec![[0f32; OUTPUTS]; images.len()];
        std::thread::scope(|s| {
            for (ims, outs) in images.chunks(chunk).zip(out.chunks_mut(chunk)) {
                s.spawn(move || {
                    let mut arena = Box::new([0i8; ARENA_LEN]);
                    for (im, o) in ims.iter().zip(outs) {
                        let image: &[u8; INPUT_LEN] =
                            (*im).try_into().expect("length checked above");
                        // `infer` runs the fastest tier this CPU has (detected once).
                        *o = infer(&model, image, &mut arena).unit;
                    }
                });
            }
        });
        Ok(out)
    }
}

/// `facemark eval` on an `.fmq`: the board's arithmetic, run on the host.
pub struct Int8Predictor {
    pub model: Int8Model,
    pub name: String,
}

impl Int8Predictor {
    pub fn load(path: &Path) -> Result<Self> {
        let model = Int8Model::load(path)?;
        let hash = model.model().model_hash();
        Ok(Self {
            model,
            name: format!("int8 {} (model hash {hash:08x})", path.display()),
        })
    }
}

impl crate::eval::Predictor for Int8Predictor {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn predict(&self, images: &[&[u8]]) -> Result<Vec<[f32; OUTPUTS]>> {
        self.model.predict(images)
    }
}
