//! ONNX export of the network, float and int8, written with tract's protobuf
//! types. Both graphs are built from the network table.
//!
//! The int8 graph carries exactly the integers and scales of the `.fmq` file:
//! `QuantizeLinear` (the image) -> `QLinearConv` + `MaxPool` per conv layer ->
//! `Flatten`/`Reshape` -> `QLinearConv` 1x1 (first dense) -> `Reshape` ->
//! `MatMulInteger` + `Add` (int32 bias) -> `Cast` -> `Mul` (per-output scale).

use crate::float::weights::FloatWeights;
use crate::quant::quantize::QuantModel;
use anyhow::{Context, Result};
use facemark_core::network::{INPUT_SIDE, LAYERS, OUTPUTS};
use prost::Message;
use std::path::Path;
use tract_onnx::pb::{
    self, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TypeProto, ValueInfoProto, attribute_proto::AttributeType, tensor_proto::DataType,
    tensor_shape_proto, type_proto,
};

/// Name of the graph input: `[batch, 1, 96, 96]` float, pixel / 255.
pub const INPUT_NAME: &str = "image";
/// Name of the graph output: `[batch, 30]` float, [-1, 1] units.
pub const OUTPUT_NAME: &str = "keypoints";
/// Name of layer `i`'s output when intermediates are exposed (int8 in the
/// quantized graph, NCHW; the dense one is `[batch, 256]`).
pub fn layer_output_name(i: usize) -> String {
    format!("layer{i}")
}

/// A graph under construction.
#[derive(Default)]
struct Graph {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
}

enum Attr {
    Int(i64),
    Ints(Vec<i64>),
}

impl Graph {
    fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        output: &str,
        attrs: Vec<(&str, Attr)>,
    ) {
        let attribute = attrs
            .into_iter()
            .map(|(n, a)| match a {
                Attr::Int(i) => AttributeProto {
                    name: n.into(),
                    r#type: AttributeType::Int as i32,
                    i,
                    ..Default::default()
                },
                Attr::Ints(ints) => AttributeProto {
                    name: n.into(),
                    r#type: AttributeType::Ints as i32,
                    ints,
                    ..Default::default()
                },
            })
            .collect();
        self.nodes.push(NodeProto {
            op_type: op.into(),
            name: name.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            attribute,
            ..Default::default()
        });
    }

    fn tensor(&mut self, name: &str, dt: DataType, dims: &[usize], raw: Vec<u8>) -> String {
        self.inits.push(TensorProto {
            name: name.into(),
            data_type: dt as i32,
            dims: dims.iter().map(|&d| d as i64).collect(),
            raw_data: raw,
            ..Default::default()
        });
        name.into()
    }
    fn f32s(&mut self, name: &str, dims: &[usize], v: &[f32]) -> String {
        self.tensor(
            name,
            DataType::Float,
            dims,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    }
    fn i8s(&mut self, name: &str, dims: &[usize], v: &[i8]) -> String {
        self.tensor(
            name,
            DataType::Int8,
            dims,
            v.iter().map(|&x| x as u8).collect(),
        )
    }
    fn i32s(&mut self, name: &str, dims: &[usize], v: &[i32]) -> String {
        self.tensor(
            name,
            DataType::Int32,
            dims,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    }
    fn i64s(&mut self, name: &str, dims: &[usize], v: &[i64]) -> String {
        self.tensor(
            name,
            DataType::Int64,
            dims,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    }

    fn finish(self, batch: usize, outputs: Vec<ValueInfoProto>, doc: &str) -> ModelProto {
        let input = value_info(
            INPUT_NAME,
            DataType::Float,
            &[batch, 1, INPUT_SIDE, INPUT_SIDE],
        );
        ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            producer_name: "facemark".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: doc.into(),
            graph: Some(GraphProto {
                name: "facemark".into(),
                node: self.nodes,
                initializer: self.inits,
                input: vec![input],
                output: outputs,
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

fn value_info(name: &str, dt: DataType, dims: &[usize]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| tensor_shape_proto::Dimension {
            value: Some(tensor_shape_proto::dimension::Value::DimValue(d as i64)),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: dt as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Shape of layer `i`'s output in ONNX (NCHW for conv layers).
fn layer_dims(i: usize, batch: usize) -> Vec<usize> {
    let l = &LAYERS[i];
    if l.is_conv() {
        vec![batch, l.out_ch, l.out_side(), l.out_side()]
    } else {
        vec![batch, l.out_ch]
    }
}

fn pool_attrs() -> Vec<(&'static str, Attr)> {
    vec![
        ("kernel_shape", Attr::Ints(vec![2, 2])),
        ("strides", Attr::Ints(vec![2, 2])),
    ]
}
fn conv_attrs(k: i64) -> Vec<(&'static str, Attr)> {
    let p = if k == 3 { 1 } else { 0 };
    vec![
        ("kernel_shape", Attr::Ints(vec![k, k])),
        ("pads", Attr::Ints(vec![p, p, p, p])),
        ("strides", Attr::Ints(vec![1, 1])),
    ]
}

/// The float network. With `expose`, every layer's output is a graph output too.
pub fn float_model(w: &FloatWeights, batch: usize, expose: bool) -> Result<ModelProto> {
    w.check()?;
    let mut g = Graph::default();
    let mut x = INPUT_NAME.to_string();
    let mut outputs = vec![];
    for (i, (l, lw)) in LAYERS.iter().zip(&w.layers).enumerate() {
        let last = i + 1 == LAYERS.len();
        let out = if last {
            OUTPUT_NAME.to_string()
        } else {
            layer_output_name(i)
        };
        let wn = g.f32s(
            &format!("w{i}"),
            &if l.is_conv() {
                vec![l.out_ch, l.in_ch, 3, 3]
            } else {
                vec![l.in_ch, l.out_ch]
            },
            &lw.weight,
        );
        let bn = g.f32s(&format!("b{i}"), &[l.out_ch], &lw.bias);
        if l.is_conv() {
            g.node(
                "Conv",
                &format!("conv{i}"),
                &[&x, &wn, &bn],
                &format!("conv{i}"),
                conv_attrs(3),
            );
            g.node(
                "Relu",
                &format!("relu{i}"),
                &[&format!("conv{i}")],
                &format!("relu{i}"),
                vec![],
            );
            g.node(
                "MaxPool",
                &format!("pool{i}"),
                &[&format!("relu{i}")],
                &out,
                pool_attrs(),
            );
        } else {
            if !LAYERS[i - 1].is_conv() {
                // input already flat
            } else {
                g.node(
                    "Flatten",
                    "flatten",
                    &[&x],
                    "flat",
                    vec![("axis", Attr::Int(1))],
                );
                x = "flat".into();
            }
            let gemm_out = if l.relu() {
                format!("gemm{i}")
            } else {
                out.clone()
            };
            g.node(
                "Gemm",
                &format!("gemm{i}"),
                &[&x, &wn, &bn],
                &gemm_out,
                vec![],
            );
            if l.relu() {
                g.node("Relu", &format!("relu{i}"), &[&gemm_out], &out, vec![]);
            }
        }
        if expose && !last {
            outputs.push(value_info(&out, DataType::Float, &layer_dims(i, batch)));
        }
        x = out;
    }
    outputs.insert(
        0,
        value_info(OUTPUT_NAME, DataType::Float, &[batch, OUTPUTS]),
    );
    Ok(g.finish(batch, outputs, "Facemark keypoint network, float32. Input: pixel/255, NCHW. Output: 15 (x, y) in [-1, 1], pixel = 48 * v + 48."))
}

/// The int8 network, carrying the integers and scales of `q` exactly.
pub fn quantized_model(q: &QuantModel, batch: usize, expose: bool) -> Result<ModelProto> {
    let mut g = Graph::default();
    let mut outputs = vec![];
    let s_in = g.f32s("image_scale", &[], &[q.input_scale]);
    let z_in = g.i8s("image_zero_point", &[], &[q.input_zero_point as i8]);
    g.node(
        "QuantizeLinear",
        "quantize",
        &[INPUT_NAME, &s_in, &z_in],
        "q_image",
        vec![],
    );
    let mut x = "q_image".to_string();
    let (mut xs, mut xz) = (s_in, z_in);
    let n_layers = LAYERS.len();
    for (i, (l, ql)) in LAYERS.iter().zip(&q.layers).enumerate() {
        let last = i + 1 == n_layers;
        let out = if last {
            OUTPUT_NAME.to_string()
        } else {
            layer_output_name(i)
        };
        let oc = l.out_ch;
        let ws = g.f32s(&format!("w{i}_scale"), &[oc], &ql.weight_scales);
        let wz = g.i8s(&format!("w{i}_zero_point"), &[oc], &vec![0; oc]);
        if !last {
            let ys = g.f32s(&format!("y{i}_scale"), &[], &[ql.out_scale]);
            let yz = g.i8s(&format!("y{i}_zero_point"), &[], &[ql.out_zero_point as i8]);
            let b = g.i32s(&format!("b{i}"), &[oc], &ql.bias);
            if l.is_conv() {
                let w = g.i8s(&format!("w{i}"), &[oc, l.in_ch, 3, 3], &ql.onnx_weights);
                let c = format!("qconv{i}");
                g.node(
                    "QLinearConv",
                    &c,
                    &[&x, &xs, &xz, &w, &ws, &wz, &ys, &yz, &b],
                    &c,
                    conv_attrs(3),
                );
                g.node("MaxPool", &format!("pool{i}"), &[&c], &out, pool_attrs());
            } else {
                let flat_in = if LAYERS[i - 1].is_conv() {
                    g.node(
                        "Flatten",
                        "flatten",
                        &[&x],
                        "q_flat",
                        vec![("axis", Attr::Int(1))],
                    );
                    "q_flat".to_string()
                } else {
                    x.clone()
                };
                let s4 = g.i64s(
                    &format!("shape4_{i}"),
                    &[4],
                    &[batch as i64, l.in_ch as i64, 1, 1],
                );
                g.node(
                    "Reshape",
                    &format!("to4d{i}"),
                    &[&flat_in, &s4],
                    &format!("q4d{i}"),
                    vec![],
                );
                let w = g.i8s(&format!("w{i}"), &[oc, l.in_ch, 1, 1], &ql.onnx_weights);
                let c = format!("qdense{i}");
                g.node(
                    "QLinearConv",
                    &c,
                    &[&format!("q4d{i}"), &xs, &xz, &w, &ws, &wz, &ys, &yz, &b],
                    &c,
                    conv_attrs(1),
                );
                let s2 = g.i64s(&format!("shape2_{i}"), &[2], &[batch as i64, oc as i64]);
                g.node("Reshape", &format!("to2d{i}"), &[&c, &s2], &out, vec![]);
            }
            if expose {
                outputs.push(value_info(&out, DataType::Int8, &layer_dims(i, batch)));
            }
            xs = ys;
            xz = yz;
        } else {
            // Last layer: exact int32 accumulators, then one f32 scale per output.
            let w = g.i8s(&format!("w{i}"), &[l.in_ch, oc], &ql.onnx_weights);
            let bz = g.i8s(&format!("w{i}_zero"), &[], &[0]);
            g.node(
                "MatMulInteger",
                "matmul_int",
                &[&x, &w, &xz, &bz],
                "acc",
                vec![],
            );
            let b = g.i32s(&format!("b{i}"), &[oc], &ql.bias);
            g.node("Add", "add_bias", &["acc", &b], "acc_b", vec![]);
            g.node(
                "Cast",
                "to_float",
                &["acc_b"],
                "acc_f",
                vec![("to", Attr::Int(DataType::Float as i64))],
            );
            let s = g.f32s("out_scale", &[oc], &ql.out_scales);
            g.node("Mul", "dequantize", &["acc_f", &s], &out, vec![]);
        }
        x = out;
    }
    outputs.insert(
        0,
        value_info(OUTPUT_NAME, DataType::Float, &[batch, OUTPUTS]),
    );
    Ok(g.finish(
        batch,
        outputs,
        "Facemark keypoint network, int8 (per-channel symmetric weights, asymmetric activations), the same integers as the .fmq file.",
    ))
}

/// Serialises a model to `path`.
pub fn save(model: &ModelProto, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, model.encode_to_vec())
        .with_context(|| format!("writing {}", path.display()))
}

/// Serialised bytes of a model.
pub fn to_bytes(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}
