//! ONNX in: the seed network as PyTorch exports it (`models/seed-pytorch.onnx`,
//! made by `scripts/seed_pytorch.py`), read into the float weights, run by
//! burn against tract running the same file (its quantization is checked
//! against tract's int8 graph in `int8_parity`); and every way a graph can
//! differ from the network table refused naming the node. None of it needs
//! PyTorch.

use facemark::float::net::{Backend, Net};
use facemark::float::onnx_in;
use facemark::float::weights::FloatWeights;
use facemark::quant::onnx::{float_model, to_bytes};
use facemark::quant::reference::{TractModel, f32s};
use facemark_tests::{assert_float_parity, test_images};
use std::path::PathBuf;
use tract_onnx::pb::{AttributeProto, ModelProto, NodeProto};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/seed-pytorch.onnx")
}

fn pytorch_model() -> ModelProto {
    use prost::Message;
    let bytes = std::fs::read(fixture()).expect("models/seed-pytorch.onnx is committed");
    ModelProto::decode(&bytes[..]).unwrap()
}

#[track_caller]
fn error_of(m: &ModelProto) -> String {
    match onnx_in::from_model(m) {
        Ok(_) => panic!("the edited graph was accepted"),
        Err(e) => format!("{e:#}"),
    }
}

fn nodes(m: &mut ModelProto) -> &mut Vec<NodeProto> {
    &mut m.graph.as_mut().unwrap().node
}

/// Index of the `k`-th node of type `op`.
fn nth(m: &ModelProto, op: &str, k: usize) -> usize {
    m.graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .enumerate()
        .filter(|(_, n)| n.op_type == op)
        .nth(k)
        .unwrap_or_else(|| panic!("no {op} #{k}"))
        .0
}

fn set_ints(node: &mut NodeProto, name: &str, v: &[i64]) {
    let a = node
        .attribute
        .iter_mut()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("no attribute {name}"));
    a.ints = v.to_vec();
}

#[test]
fn pytorchs_seed_network_runs_in_burn_as_in_tract() {
    let w = onnx_in::load(&fixture()).unwrap();
    let device = Backend::Flex.device();
    let net = Net::from_float_weights(&w, &device).unwrap();
    let images = test_images(11);
    let refs: Vec<&[u8]> = images.iter().map(|(_, im)| im.as_slice()).collect();
    let burn = net.predict(&refs, &device).unwrap();
    // tract runs PyTorch's own file, not our re-export of it.
    let tract = TractModel::from_path(&fixture(), refs.len()).unwrap();
    let out = f32s(&tract.run(&refs).unwrap()[0]).unwrap();
    let worst = assert_float_parity("PyTorch's ONNX", &images, &burn, &out);
    // A trained network, not a constant: the faces get different answers.
    let spread = (0..30)
        .map(|c| (burn[0][c] - burn[1][c]).abs())
        .fold(0f32, f32::max);
    assert!(spread > 1e-3, "outputs barely differ: {spread}");
    eprintln!("PyTorch's ONNX: burn vs tract max abs difference {worst:.3e} (bound 1e-4)");
}

#[test]
fn our_float_export_reads_back_exactly() {
    let w = FloatWeights::random(5, 0.05);
    let bytes = to_bytes(&float_model(&w, 1, false).unwrap());
    assert_eq!(onnx_in::from_bytes(&bytes).unwrap(), w);
}

#[test]
fn dropout_and_identity_nodes_pass() {
    let base = onnx_in::from_model(&pytorch_model()).unwrap();
    let mut m = pytorch_model();
    // Dropout after the last pool (where the seed has Dropout2d), Identity
    // before the first conv.
    let pool = nth(&m, "MaxPool", 3);
    let pool_out = nodes(&mut m)[pool].output[0].clone();
    let reader = nodes(&mut m)
        .iter()
        .position(|n| n.input.first() == Some(&pool_out))
        .unwrap();
    nodes(&mut m)[reader].input[0] = "dropped".into();
    let dropout = NodeProto {
        op_type: "Dropout".into(),
        name: "drop".into(),
        input: vec![pool_out],
        output: vec!["dropped".into(), "mask".into()],
        ..Default::default()
    };
    nodes(&mut m).insert(pool + 1, dropout);
    let input = m.graph.as_ref().unwrap().input[0].name.clone();
    let conv = nth(&m, "Conv", 0);
    nodes(&mut m)[conv].input[0] = "same".into();
    nodes(&mut m).insert(
        0,
        NodeProto {
            op_type: "Identity".into(),
            input: vec![input],
            output: vec!["same".into()],
            ..Default::default()
        },
    );
    assert_eq!(onnx_in::from_model(&m).unwrap(), base);
}

#[test]
fn graphs_that_differ_from_the_network_table_are_refused_naming_the_node() {
    // Another pool size.
    let mut m = pytorch_model();
    let i = nth(&m, "MaxPool", 1);
    set_ints(&mut nodes(&mut m)[i], "kernel_shape", &[3, 3]);
    let e = error_of(&m);
    assert!(
        e.contains(&format!("node {i} (")) && e.contains("kernel_shape [3, 3]"),
        "{e}"
    );

    // No padding on a conv.
    let mut m = pytorch_model();
    let i = nth(&m, "Conv", 2);
    set_ints(&mut nodes(&mut m)[i], "pads", &[0, 0, 0, 0]);
    let e = error_of(&m);
    assert!(
        e.contains(&format!("node {i} (")) && e.contains("pads"),
        "{e}"
    );

    // A missing ReLU: the pool reads the conv.
    let mut m = pytorch_model();
    let relu = nth(&m, "Relu", 0);
    let conv_out = nodes(&mut m)[relu].input[0].clone();
    nodes(&mut m).remove(relu);
    nodes(&mut m)[relu].input[0] = conv_out;
    let e = error_of(&m);
    assert!(
        e.contains("expected layer 0's ReLU (Relu), found MaxPool"),
        "{e}"
    );

    // A layer of another width: 31 outputs.
    let mut m = pytorch_model();
    let last = nth(&m, "Gemm", 1);
    let wname = nodes(&mut m)[last].input[1].clone();
    let g = m.graph.as_mut().unwrap();
    let t = g.initializer.iter_mut().find(|t| t.name == wname).unwrap();
    t.dims[0] = 31;
    t.raw_data.extend([0u8; 4 * 256]);
    let e = error_of(&m);
    assert!(
        e.contains(&format!("node {last} (")) && e.contains("[31, 256]") && e.contains("[30, 256]"),
        "{e}"
    );

    // A node the seed does not have, at the end.
    let mut m = pytorch_model();
    let out = m.graph.as_ref().unwrap().output[0].name.clone();
    let n = nodes(&mut m).len();
    nodes(&mut m)[n - 1].output[0] = "pre".into();
    nodes(&mut m).push(NodeProto {
        op_type: "Sigmoid".into(),
        name: "squash".into(),
        input: vec!["pre".into()],
        output: vec![out],
        ..Default::default()
    });
    let e = error_of(&m);
    assert!(
        e.contains("'squash', Sigmoid") && e.contains("the graph goes on"),
        "{e}"
    );

    // A branch: the second conv reads the image, not the first pool.
    let mut m = pytorch_model();
    let input = m.graph.as_ref().unwrap().input[0].name.clone();
    let i = nth(&m, "Conv", 1);
    nodes(&mut m)[i].input[0] = input;
    let e = error_of(&m);
    assert!(e.contains("one chain"), "{e}");

    // A grouped conv.
    let mut m = pytorch_model();
    let i = nth(&m, "Conv", 1);
    let conv = &mut nodes(&mut m)[i];
    conv.attribute.retain(|a| a.name != "group");
    conv.attribute.push(AttributeProto {
        name: "group".into(),
        i: 2,
        ..Default::default()
    });
    let e = error_of(&m);
    assert!(e.contains("group 2"), "{e}");

    // Non-finite weights.
    let mut m = pytorch_model();
    let i = nth(&m, "Conv", 0);
    let wname = nodes(&mut m)[i].input[1].clone();
    let g = m.graph.as_mut().unwrap();
    let t = g.initializer.iter_mut().find(|t| t.name == wname).unwrap();
    t.raw_data[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
    let e = error_of(&m);
    assert!(e.contains("value 2 is NaN"), "{e}");

    // Not ONNX at all.
    let e = format!("{:#}", onnx_in::from_bytes(b"\x08\x01garbage").unwrap_err());
    assert!(e.contains("ONNX"), "{e}");
}
