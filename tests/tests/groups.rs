//! Permutation groups (docs/ALGORITHM.md section 1) and cost accounting on the fixture models and on
//! torchvision ResNets built here.

use pleas::io::arch::resnet::{TorchvisionSpec, build_torchvision};
use pleas::model::Model;
use pleas_core::graph::{Graph, cost, permutation_groups};
use pleas_tests::models::fixture_models;

fn torchvision(depth: usize) -> Graph {
    let spec = TorchvisionSpec::standard(depth, 1000).unwrap();
    build_torchvision(&spec, spec.default_input()).unwrap()
}

fn has(g: &pleas_core::graph::PermGroup, tensor: &str, axis: usize) -> bool {
    g.members
        .iter()
        .any(|m| m.tensor == tensor && m.axis == axis)
}

#[test]
fn resnet20_fixture_has_12_groups_with_the_residual_streams() {
    let path = fixture_models()
        .into_iter()
        .find(|p| p.to_string_lossy().contains("rn20w1_split"))
        .unwrap();
    let m = Model::load(&path, None).unwrap();
    let groups = permutation_groups(&m.graph);
    assert_eq!(groups.len(), 12);
    let widths: Vec<usize> = groups.groups().iter().map(|g| g.width).collect();
    assert_eq!(widths.iter().filter(|&&w| w == 16).count(), 4, "{widths:?}");
    assert_eq!(widths.iter().filter(|&&w| w == 32).count(), 4, "{widths:?}");
    assert_eq!(widths.iter().filter(|&&w| w == 64).count(), 4, "{widths:?}");
    // Stage 1 residual stream: stem conv, its BN, every stage-1 block output, and the inputs of
    // block 3's conv1 and shortcut.
    let stem = &groups.groups()[groups.of_node(m.graph.find("bn1").unwrap()).unwrap()];
    for (t, a) in [
        ("conv1.weight", 0),
        ("bn1.running_var", 0),
        ("layers.0.conv1.weight", 1),
        ("layers.0.bn2.weight", 0),
        ("layers.2.conv2.weight", 0),
        ("layers.3.conv1.weight", 1),
        ("layers.3.shortcut.0.weight", 1),
    ] {
        assert!(has(stem, t, a), "{t}[{a}] missing from the stem group");
    }
    // Stage 2 stream: block 3's conv2 + shortcut outputs are tied by the add.
    let s2 = &groups.groups()[groups
        .of_node(m.graph.find("layers.3.add").unwrap())
        .unwrap()];
    assert!(has(s2, "layers.3.conv2.weight", 0) && has(s2, "layers.3.shortcut.0.weight", 0));
    assert!(has(s2, "layers.5.bn2.bias", 0) && has(s2, "layers.6.shortcut.0.weight", 1));
    // Inner group of block 4: conv1 out, bn1, conv2 in; nothing else.
    let inner = &groups.groups()[groups
        .of_node(m.graph.find("layers.4.conv1").unwrap())
        .unwrap()];
    assert_eq!(inner.members.len(), 6, "{:?}", inner.members);
    assert!(has(inner, "layers.4.conv2.weight", 1));
    // Axes touching the input (conv1 axis 1) or the output (head axis 0) are in no group.
    for g in groups.groups() {
        assert!(!has(g, "conv1.weight", 1) && !has(g, "head.weight", 0) && !has(g, "head.bias", 0));
    }
    let last = &groups.groups()[groups
        .of_node(m.graph.find("layers.8.relu2").unwrap())
        .unwrap()];
    assert!(has(last, "head.weight", 1));
}

#[test]
fn every_layer_axis_is_in_exactly_one_group_or_touches_the_boundary() {
    for path in fixture_models() {
        let m = Model::load(&path, None).unwrap();
        let groups = permutation_groups(&m.graph);
        let mut seen = std::collections::BTreeMap::new();
        for g in groups.groups() {
            for a in &g.members {
                *seen.entry((a.tensor.clone(), a.axis)).or_insert(0) += 1;
                let t = &m.weights[&a.tensor];
                assert_eq!(
                    t.shape()[a.axis],
                    g.width,
                    "{}[{}] in {}",
                    a.tensor,
                    a.axis,
                    g.name
                );
            }
        }
        assert!(
            seen.values().all(|&c| c == 1),
            "{}: an axis is in two groups",
            path.display()
        );
        // Every tensor but the head's and the first layer's input axis is covered.
        for (name, t) in &m.weights {
            if name.starts_with("head.") {
                continue;
            }
            assert!(
                seen.contains_key(&(name.clone(), 0)),
                "{name}[0] in no group"
            );
            if t.shape().len() > 1 && name != "conv1.weight" && name != "layers.0.weight" {
                assert!(
                    seen.contains_key(&(name.clone(), 1)),
                    "{name}[1] in no group"
                );
            }
        }
    }
}

#[test]
fn mlp_fixture_has_one_group_per_hidden_layer() {
    for path in fixture_models()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("mlp"))
    {
        let m = Model::load(&path, None).unwrap();
        let groups = permutation_groups(&m.graph);
        assert_eq!(groups.len(), 2, "{}", path.display());
        let g0 = &groups.groups()[0];
        let names: Vec<(&str, usize)> = g0
            .members
            .iter()
            .map(|a| (a.tensor.as_str(), a.axis))
            .collect();
        assert_eq!(
            names,
            vec![
                ("layers.0.weight", 0),
                ("layers.0.bias", 0),
                ("layers.1.weight", 1)
            ]
        );
    }
}

#[test]
fn torchvision_group_counts_match_algorithm_md() {
    for (depth, expected) in [(18, 12), (34, 20), (50, 37), (101, 71)] {
        let g = torchvision(depth);
        assert_eq!(permutation_groups(&g).len(), expected, "ResNet-{depth}");
    }
}

#[test]
fn torchvision_costs_match_the_published_counts() {
    // Parameters as torchvision reports them (sum of p.numel() over parameters); conv + linear
    // multiply-adds at 224x224 (ResNet-50's is the widely quoted 4.09 G; ResNet-18's 1.814 G is
    // the same sum of out_c * out_h * out_w * in_c * kh * kw + fc, recomputed by hand).
    for (depth, params, macs) in [
        (18, 11_689_512u64, 1_814_073_344u64),
        (50, 25_557_032, 4_089_184_256),
    ] {
        let c = cost(&torchvision(depth));
        assert_eq!(c.params, params, "ResNet-{depth} parameters");
        assert_eq!(c.macs, macs, "ResNet-{depth} multiply-adds");
    }
}

#[test]
fn fixture_parameter_counts_match_the_training_reports() {
    // `params` of each folder's report_*.json (PyTorch's count of learnable parameters).
    for path in fixture_models() {
        let m = Model::load(&path, None).unwrap();
        let report_dir = path.parent().unwrap();
        let report = std::fs::read_dir(report_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "json"))
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        let expected = v[&stem]["params"].as_u64().unwrap();
        assert_eq!(cost(&m.graph).params, expected, "{stem}");
    }
}
