//! ONNX models of the encoder and the decoder, lowered node by node from the
//! inference slices of the model's graph (`Graph::slice`, as `CpuModel`
//! runs them), so that the files compute what `encode` and `decode` compute.
//!
//! The graph's tensors are (rows, width) matrices; ONNX sees each as either
//! rows (N, width) or images (N, C, H, W), and a layer gets the layout it
//! needs through Flatten or Reshape. The batch dimension is the symbol `N`.

use std::collections::HashMap;

use prost::Message;

use super::proto::{
    self, AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, TypeProtoTensor, ValueInfoProto, attribute_type,
};
use crate::error::{Error, Result};
use crate::model::{Activation, Arch, Architecture, ConvGeom, Graph, Layer, LayerKind, ModelKind, Op, TensorId};

/// The default domain's operator set: 17 has Gemm, Conv, ConvTranspose, Erf
/// and Split with a `split` input; GELU is composed (its op came in 20).
pub const OPSET: i64 = 17;
/// The IR version that goes with opset 17.
pub const IR_VERSION: i64 = 8;
/// The symbolic batch dimension of every input and output.
pub const BATCH: &str = "N";

/// How an ONNX value lays out a (rows, width) tensor of the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// (N, width).
    Rows(usize),
    /// (N, C, H, W), flattened channel-major as the graph's rows are.
    Images { c: usize, h: usize, w: usize },
}

impl Layout {
    fn dims(self) -> Vec<usize> {
        match self {
            Layout::Rows(w) => vec![w],
            Layout::Images { c, h, w } => vec![c, h, w],
        }
    }
}

/// The layout of the images the encoder takes and the decoder returns:
/// planes for a convolutional model, flat rows for a dense one.
fn image_layout(arch: &Architecture) -> Layout {
    let c = &arch.config;
    match c.arch {
        Arch::Conv => Layout::Images { c: c.channels, h: c.image_rows, w: c.image_cols },
        Arch::Mlp => Layout::Rows(c.input_dim()),
    }
}

/// `encoder.onnx`: `images` in [0, 1] -> `mu` and `logvar` (N, L) for a VAE,
/// `code` (N, L) for an AE.
pub fn encoder(arch: &Architecture, params: &[f32]) -> Result<ModelProto> {
    let g = Graph::forward(arch, false);
    let slice = g.slice(g.input, g.code);
    let mut l = Lowering::new(arch, params);
    l.input(g.input, "images", image_layout(arch));
    l.labels(&g);
    let latent = arch.config.latent;
    let outputs = match arch.config.kind {
        ModelKind::Vae => {
            // The head is one layer with [mu | logvar] outputs, as in the graph.
            let mulv = l.lower(&slice, g.code, Some("mu_logvar"))?;
            let split = l.int64s("split.mu_logvar", &[latent as i64, latent as i64]);
            l.node("Split", &[&mulv, &split], &["mu", "logvar"], vec![int("axis", 1)]);
            vec![("mu", Layout::Rows(latent)), ("logvar", Layout::Rows(latent))]
        }
        ModelKind::Ae => {
            l.lower(&slice, g.code, Some("code"))?;
            vec![("code", Layout::Rows(latent))]
        }
    };
    Ok(l.model("encoder", &outputs))
}

/// `decoder.onnx`: `z` (N, L) -> `images` in [0, 1], laid out as the
/// encoder's input: sigmoid of the slice's logits, as `Inference::decode`.
pub fn decoder(arch: &Architecture, params: &[f32]) -> Result<ModelProto> {
    let g = Graph::forward(arch, false);
    let slice = g.slice(g.latent, g.logits);
    let mut l = Lowering::new(arch, params);
    l.input(g.latent, "z", Layout::Rows(arch.config.latent));
    l.labels(&g);
    let logits = l.lower(&slice, g.logits, Some("logits"))?;
    let want = image_layout(arch);
    let probs = if l.layout(g.logits) == want { "images" } else { "probabilities" };
    l.node("Sigmoid", &[&logits], &[probs], vec![]);
    if probs != "images" {
        l.relayout(probs, l.layout(g.logits), want, "images");
    }
    Ok(l.model("decoder", &[("images", want)]))
}

/// The protobuf bytes of a model.
pub fn to_bytes(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// The name of an op as the graph's Debug prints it: `Reparameterize`.
fn op_name(op: &Op) -> String {
    let text = format!("{op:?}");
    text.split(|c: char| !c.is_alphanumeric()).next().unwrap_or_default().to_string()
}

/// ONNX names: the graph's tensor names with `|` and spaces replaced.
fn clean_name(name: &str) -> String {
    name.chars().map(|c| if c.is_alphanumeric() || matches!(c, '.' | '_') { c } else { '_' }).collect()
}

fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto { name: name.into(), i: Some(i), r#type: attribute_type::INT, ..Default::default() }
}

fn float(name: &str, f: f32) -> AttributeProto {
    AttributeProto { name: name.into(), f: Some(f), r#type: attribute_type::FLOAT, ..Default::default() }
}

fn ints(name: &str, v: &[usize]) -> AttributeProto {
    let ints = v.iter().map(|&i| i as i64).collect();
    AttributeProto { name: name.into(), ints, r#type: attribute_type::INTS, ..Default::default() }
}

fn value_info(name: &str, layout: Layout) -> ValueInfoProto {
    let mut dim = vec![Dimension { dim_param: Some(BATCH.into()), dim_value: None }];
    dim.extend(layout.dims().into_iter().map(|d| Dimension { dim_value: Some(d as i64), dim_param: None }));
    let tensor = TypeProtoTensor { elem_type: proto::FLOAT, shape: Some(TensorShapeProto { dim }) };
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto { tensor_type: Some(tensor) }),
        doc_string: String::new(),
    }
}

/// One slice being written as an ONNX graph.
struct Lowering<'a> {
    arch: &'a Architecture,
    params: &'a [f32],
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    /// The ONNX value holding each graph tensor computed so far, and its layout.
    values: HashMap<TensorId, (String, Layout)>,
}

impl<'a> Lowering<'a> {
    fn new(arch: &'a Architecture, params: &'a [f32]) -> Self {
        assert_eq!(params.len(), arch.param_count, "parameters of the architecture");
        Lowering { arch, params, nodes: vec![], initializers: vec![], inputs: vec![], values: HashMap::new() }
    }

    /// Declares the graph input `name` holding the source tensor `t`.
    fn input(&mut self, t: TensorId, name: &str, layout: Layout) {
        self.inputs.push(value_info(name, layout));
        self.values.insert(t, (name.into(), layout));
    }

    /// A conditional model's second input `labels`: one-hot (N, classes).
    fn labels(&mut self, g: &Graph) {
        if let Some(labels) = g.labels {
            self.input(labels, "labels", Layout::Rows(g.width(labels)));
        }
    }

    fn layout(&self, t: TensorId) -> Layout {
        self.values[&t].1
    }

    fn node(&mut self, op: &str, inputs: &[&str], outputs: &[&str], attribute: Vec<AttributeProto>) {
        let name = format!("{op}:{}", outputs[0]);
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name,
            op_type: op.into(),
            attribute,
        });
    }

    /// An f32 initializer of `shape` from the flat parameters at `offset`.
    fn weights(&mut self, name: &str, offset: usize, shape: &[usize]) -> String {
        let len: usize = shape.iter().product();
        let values = &self.params[offset..offset + len];
        self.constant(name, shape, values)
    }

    fn constant(&mut self, name: &str, shape: &[usize], values: &[f32]) -> String {
        self.initializers.push(TensorProto {
            dims: shape.iter().map(|&d| d as i64).collect(),
            data_type: proto::FLOAT,
            name: name.into(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name.into()
    }

    fn int64s(&mut self, name: &str, values: &[i64]) -> String {
        self.initializers.push(TensorProto {
            dims: vec![values.len() as i64],
            data_type: proto::INT64,
            name: name.into(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name.into()
    }

    /// Writes value `x` (layout `from`) as `out` in layout `to`: both are the
    /// same row-major floats, so Flatten or Reshape.
    fn relayout(&mut self, x: &str, from: Layout, to: Layout, out: &str) {
        assert_eq!(from.dims().iter().product::<usize>(), to.dims().iter().product::<usize>(), "{x}: same width");
        match to {
            Layout::Rows(_) => self.node("Flatten", &[x], &[out], vec![int("axis", 1)]),
            Layout::Images { c, h, w } => {
                let shape = self.int64s(&format!("{out}.shape"), &[-1, c as i64, h as i64, w as i64]);
                self.node("Reshape", &[x, &shape], &[out], vec![]);
            }
        }
    }

    /// The value of `t` in layout `want`, converted under the name `as_name` when it is not.
    fn value_as(&mut self, t: TensorId, want: Layout, as_name: &str) -> String {
        let (name, layout) = self.values[&t].clone();
        if layout == want {
            return name;
        }
        self.relayout(&name, layout, want, as_name);
        as_name.into()
    }

    /// Lowers the nodes of `slice` (their sources declared with `input`);
    /// returns the name of the value holding `out`, `out_name` when given.
    fn lower(&mut self, slice: &Graph, out: TensorId, out_name: Option<&str>) -> Result<String> {
        for t in slice.sources() {
            if !self.values.contains_key(&t) {
                let what = format!("the graph input {} is not one the exporter declares", slice.tensors[t.0].name);
                return Err(Error::Unexportable { format: "ONNX", what });
            }
        }
        for node in &slice.nodes {
            let y = node.outputs[0];
            let name = match out_name {
                Some(n) if y == out => n.to_string(),
                _ => clean_name(&slice.tensors[y.0].name),
            };
            let layout = match &node.op {
                // Declared as the graph input `labels`.
                Op::Labels if self.values.contains_key(&y) => continue,
                Op::Concat => {
                    let parts: Vec<String> = (node.inputs.iter().enumerate())
                        .map(|(i, &x)| self.value_as(x, Layout::Rows(slice.width(x)), &format!("{name}.{i}")))
                        .collect();
                    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
                    self.node("Concat", &parts, &[&name], vec![int("axis", 1)]);
                    Layout::Rows(slice.width(y))
                }
                Op::Dense(layer) => self.dense(layer, node.inputs[0], &name),
                Op::Conv(layer) => self.conv(layer, node.inputs[0], &name),
                op => {
                    let what = format!("op {} (computing {}) has no ONNX form", op_name(op), slice.tensors[y.0].name);
                    return Err(Error::Unexportable { format: "ONNX", what });
                }
            };
            // A second output (the pre-activation) only feeds the backward pass.
            self.values.insert(y, (name, layout));
        }
        Ok(self.values.get(&out).expect("the slice computes its output").0.clone())
    }

    /// `Gemm` (y = x·Wᵀ + b, W [outputs, inputs] as stored) and the activation.
    fn dense(&mut self, layer: &Layer, x: TensorId, y: &str) -> Layout {
        let stem = clean_name(&layer.name);
        let x = self.value_as(x, Layout::Rows(layer.inputs), &format!("{stem}.flat"));
        let w = self.weights(&format!("{stem}.weight"), layer.weight, &[layer.outputs, layer.inputs]);
        let b = self.weights(&format!("{stem}.bias"), layer.bias, &[layer.outputs]);
        let pre = self.pre_name(layer, y);
        self.node("Gemm", &[&x, &w, &b], &[&pre], vec![int("transB", 1)]);
        self.activation(&pre, layer.activation, y);
        Layout::Rows(layer.outputs)
    }

    /// `Conv` or `ConvTranspose` with PyTorch's weight layouts (which are
    /// ONNX's), and the activation.
    fn conv(&mut self, layer: &Layer, x: TensorId, y: &str) -> Layout {
        let stem = clean_name(&layer.name);
        let (g, transposed) = match layer.kind {
            LayerKind::Conv2d(g) => (g, false),
            LayerKind::ConvTranspose2d(g) => (g, true),
            LayerKind::Dense => unreachable!("a Conv node holds a convolution"),
        };
        let (input, output) =
            (Layout::Images { c: g.in_c, h: g.in_h, w: g.in_w }, Layout::Images { c: g.out_c, h: g.out_h, w: g.out_w });
        // A transposed layer runs from the convolution's output shape to its input shape.
        let (input, output) = if transposed { (output, input) } else { (input, output) };
        let x = self.value_as(x, input, &format!("{stem}.images"));
        let k = g.kernel;
        let w = self.weights(&format!("{stem}.weight"), layer.weight, &[g.out_c, g.in_c, k, k]);
        let b = self.weights(&format!("{stem}.bias"), layer.bias, &[output.dims()[0]]);
        let pre = self.pre_name(layer, y);
        let mut attributes =
            vec![ints("kernel_shape", &[k, k]), ints("strides", &[g.stride, g.stride]), ints("pads", &[g.padding; 4])];
        if transposed {
            attributes.push(ints("output_padding", &output_padding(&g)));
            self.node("ConvTranspose", &[&x, &w, &b], &[&pre], attributes);
        } else {
            self.node("Conv", &[&x, &w, &b], &[&pre], attributes);
        }
        self.activation(&pre, layer.activation, y);
        output
    }

    /// The pre-activation's name: the output's own when there is no activation.
    fn pre_name(&self, layer: &Layer, y: &str) -> String {
        if layer.activation == Activation::Identity { y.into() } else { format!("{}.pre", clean_name(&layer.name)) }
    }

    /// y = act(x), as `ops::activate` computes it.
    fn activation(&mut self, x: &str, act: Activation, y: &str) {
        match act {
            Activation::Identity => {} // `pre_name` wrote y
            Activation::Relu => self.node("Relu", &[x], &[y], vec![]),
            Activation::LeakyRelu => self.node("LeakyRelu", &[x], &[y], vec![float("alpha", Activation::LEAKY_SLOPE)]),
            Activation::Tanh => self.node("Tanh", &[x], &[y], vec![]),
            Activation::Elu => self.node("Elu", &[x], &[y], vec![float("alpha", 1.0)]),
            // ln(1 + e^x): the CPU's x itself above 20 is within f32's rounding of it.
            Activation::Softplus => self.node("Softplus", &[x], &[y], vec![]),
            Activation::Silu => {
                let s = format!("{x}.sigmoid");
                self.node("Sigmoid", &[x], &[&s], vec![]);
                self.node("Mul", &[x, &s], &[y], vec![]);
            }
            // x·½(1 + erf(x/√2)), exact GELU; opset 17 has no Gelu op.
            Activation::Gelu => {
                let sqrt2 = self.shared_constant("gelu.sqrt2", std::f32::consts::SQRT_2);
                let one = self.shared_constant("gelu.one", 1.0);
                let half = self.shared_constant("gelu.half", 0.5);
                let (scaled, erf, cdf2, half_x) =
                    (format!("{x}.div"), format!("{x}.erf"), format!("{x}.erf1"), format!("{x}.half"));
                self.node("Div", &[x, &sqrt2], &[&scaled], vec![]);
                self.node("Erf", &[&scaled], &[&erf], vec![]);
                self.node("Add", &[&erf, &one], &[&cdf2], vec![]);
                self.node("Mul", &[x, &half], &[&half_x], vec![]);
                self.node("Mul", &[&half_x, &cdf2], &[y], vec![]);
            }
        }
    }

    /// A scalar initializer, written once however many layers use it.
    fn shared_constant(&mut self, name: &str, v: f32) -> String {
        if !self.initializers.iter().any(|t| t.name == name) {
            self.constant(name, &[], &[v]);
        }
        name.into()
    }

    fn model(self, name: &str, outputs: &[(&str, Layout)]) -> ModelProto {
        let c = &self.arch.config;
        let graph = GraphProto {
            node: self.nodes,
            name: format!("gpu-vae {name}"),
            initializer: self.initializers,
            doc_string: String::new(),
            input: self.inputs,
            output: outputs.iter().map(|&(n, layout)| value_info(n, layout)).collect(),
        };
        let meta = |k: &str, v: String| StringStringEntryProto { key: k.into(), value: v };
        let kind = match c.kind {
            ModelKind::Vae => "vae",
            ModelKind::Ae => "ae",
        };
        ModelProto {
            ir_version: IR_VERSION,
            producer_name: "gpu-vae".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: format!("The {name} of a gpu-vae {kind}; images are pixel values / 255 in [0, 1]."),
            graph: Some(graph),
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
            metadata_props: vec![
                meta("kind", kind.into()),
                meta("latent", c.latent.to_string()),
                meta("channels", c.channels.to_string()),
                meta("image_rows", c.image_rows.to_string()),
                meta("image_cols", c.image_cols.to_string()),
            ],
        }
    }
}

/// ConvTranspose's output_padding: what it takes for the output to be the
/// convolution's input size again (the stride's remainder, below the stride).
fn output_padding(g: &ConvGeom) -> [usize; 2] {
    let reached = |n: usize| (n - 1) * g.stride + g.kernel - 2 * g.padding;
    [g.in_h - reached(g.out_h), g.in_w - reached(g.out_w)]
}

/// The ONNX model computing `to` from the source `from` (an input named
/// `input`, laid out as rows) through `slice(from, to)` of the forward
/// graph `Graph::forward(arch, false)`, whose tensor ids these are: the encoder and decoder are two such slices; any other is
/// refused when it holds an op without an ONNX form.
pub fn slice(arch: &Architecture, params: &[f32], from: TensorId, to: TensorId) -> Result<ModelProto> {
    let g = Graph::forward(arch, false);
    let slice = g.slice(from, to);
    let mut l = Lowering::new(arch, params);
    l.input(from, "input", Layout::Rows(g.width(from)));
    l.lower(&slice, to, Some("output"))?;
    let out = l.layout(to);
    Ok(l.model("slice", &[("output", out)]))
}
