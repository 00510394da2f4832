//! `pleas eval` on every fixture model reproduces the `test_acc` in its metadata: our forward
//! pass against PyTorch's on real trained networks.
//!
//! A sample whose top-2 logit margin is below `NEAR_TIE_LOGIT_MARGIN` may legitimately be
//! classified differently by PyTorch's conv algorithms; the correct count may differ from the
//! metadata's by at most the number of such near ties (zero near ties: exact equality).

use pleas::cli::run;
use pleas::io::data::{DataSpec, Normalize, load};
use pleas::model::Model;
use pleas_core::forward::Forward;
use pleas_tests::models::{fashion_eval, fixture_models};
use pleas_tests::tolerance::NEAR_TIE_LOGIT_MARGIN;

fn eval_json(model: &std::path::Path) -> serde_json::Value {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let args = [
        "pleas".into(),
        "eval".into(),
        model.as_os_str().to_owned(),
        "--data".into(),
        fashion_eval().into_os_string(),
        "--json".into(),
    ];
    let code = run(args, &mut out, &mut err);
    assert_eq!(code, 0, "stderr: {}", String::from_utf8_lossy(&err));
    serde_json::from_slice(&out).unwrap()
}

/// Samples of the head's classes whose top-2 margin is a near tie.
fn near_ties(m: &Model) -> usize {
    let data = load(&DataSpec {
        path: fashion_eval(),
        data_key: "x_test".into(),
        label_key: Some("y_test".into()),
        labels_path: None,
        normalize: Normalize::Symmetric,
    })
    .unwrap();
    let labels = data.labels.as_ref().unwrap();
    let classes = &m.heads[0].classes;
    let idx: Vec<usize> = (0..data.n)
        .filter(|&i| classes.contains(&labels[i]))
        .collect();
    let mut fwd = Forward::new(&m.graph, &m.weights).unwrap();
    let mut ties = 0;
    for chunk in idx.chunks(500) {
        let x: Vec<f32> = chunk
            .iter()
            .flat_map(|&i| data.x[i * 784..(i + 1) * 784].to_vec())
            .collect();
        let out = fwd.logits(&x, chunk.len()).unwrap();
        for row in out[0].chunks(classes.len()) {
            let mut s = row.to_vec();
            s.sort_by(|a, b| b.total_cmp(a));
            if s[0] - s[1] < NEAR_TIE_LOGIT_MARGIN {
                ties += 1;
            }
        }
    }
    ties
}

#[test]
fn eval_reproduces_the_metadata_accuracy_of_every_fixture() {
    let models = fixture_models();
    assert_eq!(models.len(), 10);
    let mut exact = 0;
    for path in &models {
        let m = Model::load(path, None).unwrap();
        let expected: f64 = m.metadata["test_acc"].parse().unwrap();
        let v = eval_json(path);
        let acc = v["accuracy"].as_f64().unwrap();
        let head = &v["heads"][0];
        let samples = head["samples"].as_u64().unwrap() as f64;
        assert_eq!(head["name"], "head");
        assert_eq!(
            head["classes"].as_array().unwrap().len(),
            m.heads[0].classes.len()
        );
        // Split tasks count only their own 5 classes (1000 test images each).
        let expected_samples = if m.heads[0].classes.len() == 5 {
            5000.0
        } else {
            10000.0
        };
        assert_eq!(samples, expected_samples);
        let ours = (acc * samples).round() as i64;
        let theirs = (expected * samples).round() as i64;
        let printed = format!("{acc:.4}");
        eprintln!(
            "{}: {printed} (metadata {})",
            path.display(),
            m.metadata["test_acc"]
        );
        if printed == m.metadata["test_acc"] {
            exact += 1;
            continue;
        }
        let ties = near_ties(&m);
        eprintln!(
            "  differs by {} samples; {ties} near ties",
            (ours - theirs).abs()
        );
        assert!(
            (ours - theirs).unsigned_abs() as usize <= ties,
            "{}: {printed} vs metadata {} with only {ties} near ties",
            path.display(),
            m.metadata["test_acc"]
        );
    }
    eprintln!("{exact} of {} fixtures match to 4 decimals", models.len());
}

#[test]
fn eval_text_output_prints_the_accuracy_with_4_decimals() {
    let path = fixture_models()
        .into_iter()
        .find(|p| p.to_string_lossy().contains("mlp64"))
        .unwrap();
    let m = Model::load(&path, None).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let args = [
        "pleas".into(),
        "eval".into(),
        path.clone().into_os_string(),
        "--data".into(),
        fashion_eval().into_os_string(),
    ];
    assert_eq!(run::<_, std::ffi::OsString>(args, &mut out, &mut err), 0);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(
        text.lines().next().unwrap(),
        format!("accuracy {}", m.metadata["test_acc"])
    );
}

#[test]
fn min_accuracy_check_fails_with_exit_code_1() {
    let path = fixture_models()
        .into_iter()
        .find(|p| p.to_string_lossy().contains("mlp64"))
        .unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let args = [
        "pleas".into(),
        "eval".into(),
        path.into_os_string(),
        "--data".into(),
        fashion_eval().into_os_string(),
        "--min-accuracy".into(),
        "0.99".into(),
    ];
    assert_eq!(run::<_, std::ffi::OsString>(args, &mut out, &mut err), 1);
}
