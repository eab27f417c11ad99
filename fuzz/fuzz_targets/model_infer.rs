//! Structure-aware model edits: values written into a valid model's fields
//! (biases, multipliers and shifts, weights, zero points, padding), often at
//! the edges of the bounds `Model::parse` enforces; the CRC recomputed; and
//! every model that parses runs the portable kernels on an image, with
//! overflow checks on, and gives finite keypoints within MAX_OUTPUT_UNIT.
#![no_main]

use arbitrary::Arbitrary;
use facemark_core::Model;
use facemark_core::model::{HEADER_LEN, Layout, MAX_OUTPUT_UNIT, max_abs_bias};
use facemark_core::network::{ARENA_LEN, INPUT_LEN, LAYER_COUNT, LAYERS};
use facemark_core::requant::Multiplier;
use libfuzzer_sys::fuzz_target;
use std::sync::Mutex;

#[derive(Arbitrary, Debug)]
enum Field {
    InZeroPoint,
    OutZeroPoint,
    Bias(u16),
    Mult(u16),
    Shift(u16),
    /// Multiplier and shift together, from an f32 scale.
    Scale(u16),
    Weight(u32),
    /// A byte anywhere in the payload.
    Byte(u32),
    /// A header byte (the weight types among them).
    Header(u8),
}

#[derive(Arbitrary, Debug)]
enum Value {
    Raw(i32),
    /// `+-(max_abs_bias(fan_in) + delta)`.
    BiasEdge {
        negative: bool,
        delta: i8,
    },
    /// A scale of `2^exp * (1 + frac / 2^16)`.
    Scale {
        exp: i8,
        frac: u16,
    },
    /// The largest last-layer scale for this channel's bias, times
    /// `1 + ulps * 2^-23`.
    ScaleEdge {
        ulps: i8,
    },
    Int8(i8),
}

#[derive(Arbitrary, Debug)]
struct Edit {
    layer: u8,
    field: Field,
    value: Value,
}

#[derive(Arbitrary, Debug)]
enum Image {
    Constant(u8),
    Tiled(Vec<u8>),
    Noise(u64),
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// The base model: int8, or with dense layer 1 in int4.
    int4: bool,
    edits: Vec<Edit>,
    image: Image,
}

fn i32_at(f: &[u8], o: usize) -> i32 {
    i32::from_le_bytes(f[o..o + 4].try_into().unwrap())
}

fn put(f: &mut [u8], o: usize, v: i32) {
    f[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

fn apply(f: &mut [u8], layout: &Layout, e: &Edit) {
    let i = e.layer as usize % LAYER_COUNT;
    let l = LAYERS[i];
    let c = l.out_ch;
    let fan = l.fan_in();
    let sec = &layout.sections[i];
    let off = sec.start;
    let bias_off = sec.bias.start;
    let mult_off = sec.mult.start;
    let shift_off = sec.shift.start;
    let w_off = sec.weights.start;
    let scale_of = |v: &Value, f: &[u8], ch: usize| -> Option<Multiplier> {
        match *v {
            Value::Scale { exp, frac } => {
                Multiplier::from_f32(2f32.powi(exp as i32) * (1.0 + frac as f32 / 65536.0))
            }
            Value::ScaleEdge { ulps } => {
                let bias = i32_at(f, bias_off + 4 * ch);
                let acc = bias.unsigned_abs() as f64 + 128.0 * 127.0 * fan as f64;
                let s = (MAX_OUTPUT_UNIT as f64 / acc) as f32;
                Multiplier::from_f32(f32::from_bits(s.to_bits().wrapping_add(ulps as i32 as u32)))
            }
            _ => None,
        }
    };
    let word = |v: &Value| -> i32 {
        match *v {
            Value::Raw(x) => x,
            Value::BiasEdge { negative, delta } => {
                let m = max_abs_bias(fan) + delta as i64;
                (if negative { -m } else { m }).clamp(i32::MIN as i64, i32::MAX as i64) as i32
            }
            Value::Int8(x) => x as i32,
            Value::Scale { exp, .. } => exp as i32,
            Value::ScaleEdge { ulps } => ulps as i32,
        }
    };
    match e.field {
        Field::InZeroPoint => put(f, off, word(&e.value)),
        Field::OutZeroPoint => put(f, off + 4, word(&e.value)),
        Field::Bias(ch) => put(f, bias_off + 4 * (ch as usize % c), word(&e.value)),
        Field::Mult(ch) => put(f, mult_off + 4 * (ch as usize % c), word(&e.value)),
        Field::Shift(ch) => put(f, shift_off + 4 * (ch as usize % c), word(&e.value)),
        Field::Scale(ch) => {
            let ch = ch as usize % c;
            if let Some(m) = scale_of(&e.value, f, ch) {
                put(f, mult_off + 4 * ch, m.mult);
                put(f, shift_off + 4 * ch, m.shift);
            }
        }
        Field::Weight(k) => {
            f[w_off + k as usize % sec.weights.len()] = word(&e.value) as u8;
        }
        Field::Byte(k) => {
            f[HEADER_LEN + k as usize % (layout.file_len - 4 - HEADER_LEN)] = word(&e.value) as u8;
        }
        Field::Header(k) => f[k as usize % HEADER_LEN] = word(&e.value) as u8,
    }
}

struct Base {
    bytes: Vec<u8>,
    layout: Layout,
}

impl Base {
    fn new(bytes: Vec<u8>) -> Self {
        let layout = Model::parse(&bytes)
            .expect("the base model parses")
            .layout();
        Self { bytes, layout }
    }
}

struct State {
    bases: [Base; 2],
    work: Vec<u8>,
    arena: Box<facemark_core::Arena>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fuzz_target!(|input: Input| {
    let mut guard = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let st = guard.get_or_insert_with(|| State {
        bases: [
            Base::new(facemark_fuzz::base_model()),
            Base::new(facemark_fuzz::base_model_int4()),
        ],
        work: Vec::new(),
        arena: Box::new([0; ARENA_LEN]),
    });
    // Restore what the last input changed (restoring the file wholesale is
    // simplest).
    let base = &st.bases[input.int4 as usize];
    st.work.clear();
    st.work.extend_from_slice(&base.bytes);
    for e in input.edits.iter().take(16) {
        apply(&mut st.work, &base.layout, e);
    }
    facemark_fuzz::fix_crc(&mut st.work);
    let Ok(model) = Model::parse(&st.work) else {
        return;
    };
    let mut image = [0u8; INPUT_LEN];
    match &input.image {
        Image::Constant(v) => image.fill(*v),
        Image::Tiled(t) if !t.is_empty() => {
            for (d, s) in image.iter_mut().zip(t.iter().cycle()) {
                *d = *s;
            }
        }
        Image::Tiled(_) => {}
        Image::Noise(seed) => {
            let mut x = *seed | 1;
            for d in image.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *d = x as u8;
            }
        }
    }
    let k = facemark_core::infer_with::<facemark_core::kernels::Portable>(
        &model,
        &image,
        &mut st.arena,
        |_, _| {},
    );
    for (j, v) in k.unit.iter().enumerate() {
        assert!(
            v.is_finite() && v.abs() <= MAX_OUTPUT_UNIT * (1.0 + 1e-6),
            "output {j} = {v}"
        );
    }
    for p in k.pixels() {
        assert!(p.0.is_finite() && p.1.is_finite());
    }
});
