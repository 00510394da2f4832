//! The forward pass's elementwise kernels (ReLU, residual add) on every SIMD path: bit for bit
//! their scalar definitions, special values included (NaN becomes 0 under ReLU, -0 becomes +0,
//! infinities and subnormals pass), over lengths that leave every vector remainder.

use pleas_core::forward::layers::{add_assign, relu};
use pleas_tests::rng::Rng;
use pleas_tests::simd_paths::for_each_path;

/// Random values mixed with the special ones.
fn values(rng: &mut Rng, n: usize) -> Vec<f32> {
    let special = [
        f32::NAN,
        -0.0,
        0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MIN_POSITIVE / 2.0,
        -f32::MIN_POSITIVE / 2.0,
        f32::MAX,
    ];
    (0..n)
        .map(|_| match rng.below(4) {
            0 => special[rng.below(special.len())],
            _ => rng.normal() as f32,
        })
        .collect()
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn relu_is_the_scalar_select_on_every_path() {
    let mut rng = Rng::new(31);
    for n in (0..70).chain([255, 256, 1000, 4099]) {
        let x = values(&mut rng, n);
        let want: Vec<f32> = x.iter().map(|&v| if v > 0.0 { v } else { 0.0 }).collect();
        for_each_path(|path| {
            let mut got = x.clone();
            relu(&mut got);
            assert_eq!(bits(&got), bits(&want), "{path}: length {n}");
        });
    }
}

#[test]
fn add_assign_is_the_scalar_sum_on_every_path() {
    let mut rng = Rng::new(32);
    for n in (0..70).chain([255, 256, 1000, 4099]) {
        let (a, b) = (values(&mut rng, n), values(&mut rng, n));
        let want: Vec<f32> = a.iter().zip(&b).map(|(&x, &y)| x + y).collect();
        for_each_path(|path| {
            let mut got = a.clone();
            add_assign(&mut got, &b);
            // NaN payloads may differ between paths; every other value must match bit for bit.
            let same = got
                .iter()
                .zip(&want)
                .all(|(g, w)| g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()));
            assert!(same, "{path}: length {n}");
        });
    }
}
