//! MLPs: `layers.{i}` (linear + ReLU, `i = 0, 1, ...`) then `head` (linear), PyTorch names
//! `layers.{i}.weight`, `layers.{i}.bias`, `head.weight`, `head.bias` (biases optional).

use pleas_core::graph::{Graph, GraphError, Op, Shape, Weights};

/// Whether the tensor names look like an MLP of this family.
pub fn matches(weights: &Weights) -> bool {
    weights.contains_key("layers.0.weight")
        && weights.contains_key("head.weight")
        && weights["layers.0.weight"].shape().len() == 2
}

/// An MLP graph: input `d_in`, hidden widths `hidden`, `classes` outputs; `bias` says whether
/// every layer has a bias.
pub fn build(
    d_in: usize,
    hidden: &[usize],
    classes: usize,
    bias: bool,
) -> Result<Graph, GraphError> {
    let mut g = Graph::new(Shape::flat(d_in));
    let mut x = g.input();
    let mut width = d_in;
    for (i, &h) in hidden.iter().enumerate() {
        let name = format!("layers.{i}");
        x = g.push(
            name.clone(),
            Op::Linear {
                weight: format!("{name}.weight"),
                bias: bias.then(|| format!("{name}.bias")),
                in_features: width,
                out_features: h,
            },
            &[x],
        )?;
        x = g.push(format!("{name}.relu"), Op::Relu, &[x])?;
        width = h;
    }
    let head = g.push(
        "head",
        Op::Linear {
            weight: "head.weight".into(),
            bias: bias.then(|| "head.bias".into()),
            in_features: width,
            out_features: classes,
        },
        &[x],
    )?;
    g.add_output("head", head)?;
    Ok(g)
}

/// The MLP the tensors describe (widths from the weight shapes; a layer's bias is used when
/// present).
pub fn recognise(weights: &Weights) -> Result<Graph, GraphError> {
    let w0 = weights["layers.0.weight"].shape();
    let mut g = Graph::new(Shape::flat(w0[1]));
    let mut x = g.input();
    let mut width = w0[1];
    let mut i = 0;
    while let Some(w) = weights.get(&format!("layers.{i}.weight")) {
        let name = format!("layers.{i}");
        let out = w.shape().first().copied().unwrap_or(0);
        let bias = format!("{name}.bias");
        x = g.push(
            name.clone(),
            Op::Linear {
                weight: format!("{name}.weight"),
                bias: weights.contains_key(&bias).then_some(bias),
                in_features: width,
                out_features: out,
            },
            &[x],
        )?;
        x = g.push(format!("{name}.relu"), Op::Relu, &[x])?;
        width = out;
        i += 1;
    }
    let classes = weights["head.weight"].shape().first().copied().unwrap_or(0);
    let head = g.push(
        "head",
        Op::Linear {
            weight: "head.weight".into(),
            bias: weights
                .contains_key("head.bias")
                .then(|| "head.bias".into()),
            in_features: width,
            out_features: classes,
        },
        &[x],
    )?;
    g.add_output("head", head)?;
    Ok(g)
}
