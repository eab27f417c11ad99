//! ONNX in: the float weights of a seed network as PyTorch's
//! `torch.onnx.export` writes it from the seed's `nn.Sequential` (or as
//! `facemark export` writes it), checked node by node against the network
//! table.
//!
//! Accepted: per conv layer `Conv` (3x3, padding 1, stride 1) -> `Relu` ->
//! `MaxPool` (2x2, stride 2); then `Flatten` (axis 1) or a `Reshape` to
//! `[N, -1]`; per dense layer `Gemm` (`transB` 1 as PyTorch's `Linear`
//! writes it, or 0 as `facemark export` does) -> `Relu` where the table has
//! one. `Dropout` and `Identity` nodes pass anywhere (a no-op at inference).
//! Anything else, a node not fed by the one before, or a shape that differs
//! from the table is an error naming the node and what was expected.
//!
//! The network must take what the seed takes: a `[N, 1, 96, 96]` image
//! scaled to [0, 1], and give 30 coordinates in [-1, 1].

use crate::float::weights::{FloatWeights, LayerWeights};
use anyhow::{Context, Result, bail, ensure};
use facemark_core::network::{INPUT_SIDE, LAYERS, Layer};
use prost::Message;
use std::collections::HashMap;
use std::path::Path;
use tract_onnx::pb::{self, ModelProto, NodeProto, TensorProto, tensor_proto::DataType};

/// True for a path named `*.onnx`.
pub fn is_onnx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// Reads an ONNX file's float weights (see the module docs).
pub fn load(path: &Path) -> Result<FloatWeights> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    from_bytes(&bytes).with_context(|| format!("{}: not the seed network", path.display()))
}

/// [`load`] from the file's bytes.
pub fn from_bytes(bytes: &[u8]) -> Result<FloatWeights> {
    let model = ModelProto::decode(bytes).context("not an ONNX protobuf")?;
    from_model(&model)
}

/// [`load`] from a decoded model.
pub fn from_model(model: &ModelProto) -> Result<FloatWeights> {
    let graph = model.graph.as_ref().context("the model has no graph")?;
    let inits: HashMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    // Names that are weights, not activations.
    let graph_input = graph
        .input
        .iter()
        .find(|i| !inits.contains_key(i.name.as_str()))
        .context("the graph has no image input")?;
    check_input_shape(graph_input)?;
    // Constant nodes (older exporters put shapes and weights there).
    let mut constants: HashMap<&str, &TensorProto> = HashMap::new();
    let mut nodes = Vec::new();
    for (index, node) in graph.node.iter().enumerate() {
        if node.op_type == "Constant" {
            let t = node
                .attribute
                .iter()
                .find(|a| a.name == "value")
                .and_then(|a| a.t.as_ref())
                .with_context(|| {
                    format!("{}: a Constant without a tensor value", at(index, node))
                })?;
            for o in &node.output {
                constants.insert(o.as_str(), t);
            }
        } else {
            nodes.push((index, node));
        }
    }
    let tensor = |name: &str| inits.get(name).or_else(|| constants.get(name)).copied();

    let mut walk = Walk {
        nodes: &nodes,
        next: 0,
        current: graph_input.name.clone(),
    };
    let mut layers = Vec::with_capacity(LAYERS.len());
    for (i, l) in LAYERS.iter().enumerate() {
        if l.is_conv() {
            let (index, conv) = walk.expect("Conv", &format!("layer {i}'s convolution"))?;
            check_conv(index, conv)?;
            let weight = float_input(tensor, index, conv, 1, &[l.out_ch, l.in_ch, 3, 3])?;
            let bias = match conv.input.get(2).filter(|n| !n.is_empty()) {
                Some(_) => float_input(tensor, index, conv, 2, &[l.out_ch])?,
                None => vec![0.0; l.out_ch],
            };
            walk.expect("Relu", &format!("layer {i}'s ReLU"))?;
            let (index, pool) = walk.expect("MaxPool", &format!("layer {i}'s 2x2 max pool"))?;
            check_pool(index, pool)?;
            layers.push(LayerWeights { weight, bias });
        } else {
            if i > 0 && LAYERS[i - 1].is_conv() {
                let (index, flat) = walk.expect_any(
                    &["Flatten", "Reshape"],
                    &format!("the flatten before layer {i}"),
                )?;
                check_flatten(index, flat, tensor)?;
            }
            let (index, gemm) = walk.expect("Gemm", &format!("layer {i}'s dense (Gemm)"))?;
            layers.push(dense_weights(tensor, index, gemm, l)?);
            if l.relu() {
                walk.expect("Relu", &format!("layer {i}'s ReLU"))?;
            }
        }
    }
    walk.skip_pass_through();
    if let Some((index, node)) = nodes.get(walk.next) {
        bail!(
            "{}: the network table ends after layer {}, the graph goes on",
            at(*index, node),
            LAYERS.len() - 1
        );
    }
    let output = graph.output.first().context("the graph has no output")?;
    ensure!(
        output.name == walk.current,
        "the graph's output '{}' is not the last layer's ('{}')",
        output.name,
        walk.current
    );
    let w = FloatWeights { layers };
    w.check()?;
    Ok(w)
}

/// The chain of nodes from the image to the output.
struct Walk<'a> {
    nodes: &'a [(usize, &'a NodeProto)],
    next: usize,
    /// The activation the next node must read.
    current: String,
}

impl<'a> Walk<'a> {
    fn skip_pass_through(&mut self) {
        // A no-op at inference: its (first) output is its input.
        while let Some((_, node)) = self.nodes.get(self.next) {
            if !matches!(node.op_type.as_str(), "Dropout" | "Identity") {
                break;
            }
            if node.input.first() == Some(&self.current) {
                self.current = node.output.first().cloned().unwrap_or_default();
            }
            self.next += 1;
        }
    }

    fn expect(&mut self, op: &str, what: &str) -> Result<(usize, &'a NodeProto)> {
        self.expect_any(&[op], what)
    }

    fn expect_any(&mut self, ops: &[&str], what: &str) -> Result<(usize, &'a NodeProto)> {
        self.skip_pass_through();
        let Some(&(index, node)) = self.nodes.get(self.next) else {
            bail!(
                "the graph ends where the network table has {what} ({})",
                ops.join(" or ")
            );
        };
        ensure!(
            ops.contains(&node.op_type.as_str()),
            "{}: expected {what} ({}), found {}",
            at(index, node),
            ops.join(" or "),
            node.op_type
        );
        ensure!(
            node.input.first() == Some(&self.current),
            "{}: reads '{}', expected the previous node's output '{}' (the seed network is one chain)",
            at(index, node),
            node.input.first().map_or("", |s| s.as_str()),
            self.current
        );
        ensure!(
            node.output.len() == 1,
            "{}: {} outputs, expected 1",
            at(index, node),
            node.output.len()
        );
        self.current = node.output.first().cloned().unwrap_or_default();
        self.next += 1;
        Ok((index, node))
    }
}

/// "node 7 ('/features/features.3/Conv', Conv)".
fn at(index: usize, node: &NodeProto) -> String {
    format!("node {index} ('{}', {})", node.name, node.op_type)
}

fn ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.ints.clone())
}

fn int(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

fn float_attr(node: &NodeProto, name: &str) -> Option<f32> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.f)
}

fn check_attr(
    index: usize,
    node: &NodeProto,
    name: &str,
    got: Option<Vec<i64>>,
    want: &[i64],
    default_ok: bool,
) -> Result<()> {
    match got {
        Some(v) if v == want => Ok(()),
        None if default_ok => Ok(()),
        Some(v) => bail!(
            "{}: {name} {v:?}, the network has {want:?}",
            at(index, node)
        ),
        None => bail!("{}: no {name}, the network has {want:?}", at(index, node)),
    }
}

fn check_conv(index: usize, n: &NodeProto) -> Result<()> {
    check_attr(
        index,
        n,
        "kernel_shape",
        ints(n, "kernel_shape"),
        &[3, 3],
        true,
    )?;
    check_attr(index, n, "pads", ints(n, "pads"), &[1, 1, 1, 1], false)?;
    check_attr(index, n, "strides", ints(n, "strides"), &[1, 1], true)?;
    check_attr(index, n, "dilations", ints(n, "dilations"), &[1, 1], true)?;
    if let Some(g) = int(n, "group").filter(|&g| g != 1) {
        bail!("{}: group {g}, the network has 1", at(index, n));
    }
    if let Some(p) = n.attribute.iter().find(|a| a.name == "auto_pad") {
        let v = String::from_utf8_lossy(&p.s);
        ensure!(
            v == "NOTSET" || v.is_empty(),
            "{}: auto_pad {v}, the network pads explicitly by 1",
            at(index, n)
        );
    }
    Ok(())
}

fn check_pool(index: usize, n: &NodeProto) -> Result<()> {
    check_attr(
        index,
        n,
        "kernel_shape",
        ints(n, "kernel_shape"),
        &[2, 2],
        false,
    )?;
    check_attr(index, n, "strides", ints(n, "strides"), &[2, 2], false)?;
    if let Some(p) = ints(n, "pads") {
        ensure!(
            p.iter().all(|&v| v == 0),
            "{}: pads {p:?}, the network's pool has none",
            at(index, n)
        );
    }
    if let Some(d) = ints(n, "dilations") {
        ensure!(
            d.iter().all(|&v| v == 1),
            "{}: dilations {d:?}, the network has none",
            at(index, n)
        );
    }
    if let Some(c) = int(n, "ceil_mode").filter(|&c| c != 0) {
        bail!("{}: ceil_mode {c}, the network floors", at(index, n));
    }
    ensure!(
        n.output.len() == 1,
        "{}: a MaxPool with indices, the network has none",
        at(index, n)
    );
    Ok(())
}

fn check_flatten<'t>(
    index: usize,
    n: &NodeProto,
    tensor: impl Fn(&str) -> Option<&'t TensorProto>,
) -> Result<()> {
    if n.op_type == "Flatten" {
        let axis = int(n, "axis").unwrap_or(1);
        ensure!(
            axis == 1,
            "{}: axis {axis}, the network flattens from axis 1",
            at(index, n)
        );
        return Ok(());
    }
    // Reshape to [N, -1], [N, 4608], [-1, 4608] or [0, -1].
    let name = n.input.get(1).context("a Reshape without a shape")?;
    let t =
        tensor(name).with_context(|| format!("{}: its shape is not a constant", at(index, n)))?;
    let shape = i64_values(t).with_context(|| format!("{}: its shape", at(index, n)))?;
    let flat = LAYERS.iter().find(|l| !l.is_conv()).map_or(0, |l| l.in_ch) as i64;
    ensure!(
        shape.len() == 2 && (shape[1] == -1 || shape[1] == flat),
        "{}: reshapes to {shape:?}, the network flattens to [N, {flat}]",
        at(index, n)
    );
    Ok(())
}

fn dense_weights<'t>(
    tensor: impl Fn(&str) -> Option<&'t TensorProto> + Copy,
    index: usize,
    gemm: &NodeProto,
    l: &Layer,
) -> Result<LayerWeights> {
    for (name, want) in [("alpha", 1.0f32), ("beta", 1.0)] {
        if let Some(v) = float_attr(gemm, name).filter(|&v| v != want) {
            bail!(
                "{}: {name} {v}, the network's dense layers use 1",
                at(index, gemm)
            );
        }
    }
    if let Some(t) = int(gemm, "transA").filter(|&t| t != 0) {
        bail!("{}: transA {t}, the network has 0", at(index, gemm));
    }
    let trans_b = int(gemm, "transB").unwrap_or(0);
    let (rows, cols) = match trans_b {
        // PyTorch's Linear: W is [out, in].
        1 => (l.out_ch, l.in_ch),
        0 => (l.in_ch, l.out_ch),
        t => bail!("{}: transB {t}", at(index, gemm)),
    };
    let w = float_input(tensor, index, gemm, 1, &[rows, cols])?;
    // Ours is [in][out].
    let weight = if trans_b == 1 {
        let mut t = vec![0.0; w.len()];
        for o in 0..l.out_ch {
            for i in 0..l.in_ch {
                t[i * l.out_ch + o] = w[o * l.in_ch + i];
            }
        }
        t
    } else {
        w
    };
    let bias = match gemm.input.get(2).filter(|n| !n.is_empty()) {
        Some(_) => float_input(tensor, index, gemm, 2, &[l.out_ch])?,
        None => vec![0.0; l.out_ch],
    };
    Ok(LayerWeights { weight, bias })
}

/// Input `k` of `node` as a float tensor of exactly `dims`.
fn float_input<'t>(
    tensor: impl Fn(&str) -> Option<&'t TensorProto>,
    index: usize,
    node: &NodeProto,
    k: usize,
    dims: &[usize],
) -> Result<Vec<f32>> {
    let name = node
        .input
        .get(k)
        .with_context(|| format!("{}: no input {k}", at(index, node)))?;
    let t = tensor(name).with_context(|| {
        format!(
            "{}: input {k} ('{name}') is not a weight in the file (an initializer or a Constant)",
            at(index, node)
        )
    })?;
    let got: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
    ensure!(
        got == dims,
        "{}: '{name}' has shape {got:?}, the network table needs {dims:?}",
        at(index, node)
    );
    ensure!(
        t.data_type == DataType::Float as i32,
        "{}: '{name}' is of ONNX type {}, expected float32",
        at(index, node),
        t.data_type
    );
    ensure!(
        t.data_location != Some(pb::tensor_proto::DataLocation::External as i32),
        "{}: '{name}' is stored outside the file (external data): export with the weights inside",
        at(index, node)
    );
    let n: usize = dims.iter().product();
    let v: Vec<f32> = if !t.raw_data.is_empty() {
        ensure!(
            t.raw_data.len() == 4 * n,
            "{}: '{name}' holds {} bytes, {n} floats need {}",
            at(index, node),
            t.raw_data.len(),
            4 * n
        );
        t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        ensure!(
            t.float_data.len() == n,
            "{}: '{name}' holds {} floats, expected {n}",
            at(index, node),
            t.float_data.len()
        );
        t.float_data.clone()
    };
    if let Some(p) = v.iter().position(|x| !x.is_finite()) {
        bail!(
            "{}: '{name}' value {p} is {}, weights must be finite",
            at(index, node),
            v[p]
        );
    }
    Ok(v)
}

fn i64_values(t: &TensorProto) -> Result<Vec<i64>> {
    ensure!(
        t.data_type == DataType::Int64 as i32,
        "ONNX type {}, expected int64",
        t.data_type
    );
    Ok(if !t.raw_data.is_empty() {
        t.raw_data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect()
    } else {
        t.int64_data.clone()
    })
}

/// The image input must be `[N, 1, 96, 96]` float (N any or symbolic).
fn check_input_shape(input: &pb::ValueInfoProto) -> Result<()> {
    use pb::tensor_shape_proto::dimension::Value;
    let Some(pb::type_proto::Value::TensorType(t)) =
        input.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Ok(());
    };
    ensure!(
        t.elem_type == DataType::Float as i32,
        "the image input '{}' is of ONNX type {}, expected float32",
        input.name,
        t.elem_type
    );
    let Some(shape) = &t.shape else {
        return Ok(());
    };
    let dims: Vec<Option<i64>> = shape
        .dim
        .iter()
        .map(|d| match d.value {
            Some(Value::DimValue(v)) => Some(v),
            _ => None,
        })
        .collect();
    let side = INPUT_SIDE as i64;
    let ok = dims.len() == 4
        && dims[1..]
            .iter()
            .zip([1, side, side])
            .all(|(d, want)| d.is_none_or(|d| d == want));
    ensure!(
        ok,
        "the image input '{}' has shape {dims:?}, the network takes [N, 1, {side}, {side}]",
        input.name
    );
    Ok(())
}
