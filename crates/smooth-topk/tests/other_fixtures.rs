//! Parity with the authors' packages on fixed inputs, from the fixture that
//! `scripts/other_losses_fixtures.py` writes (float64, batch means and their gradients):
//!
//! * `pytopk` 0.1.0 (noised top-k hinge, balanced and imbalanced) under the same noise `Z`: the
//!   loss agrees to 1e-12 (the same arithmetic up to the order of a mean), the gradient to 1e-7
//!   of its largest entry: the package's backward counts the draws in a float32 tensor
//!   (`torch.zeros` of the default dtype), so `1 / n_sample` carries float32 rounding. The package
//!   stores the imbalanced margins in float32; [`NoisedTopkHinge::ldam_margins`] gives them in
//!   float64, equal to the package's within float32 rounding, and the parity check uses the
//!   package's margins.
//! * `difftopk` 0.2.0 (`TopKCrossEntropyLoss` with NeuralSort, every top-1 mode, with and
//!   without `m`): loss and gradient to 1e-12 (measured: 2.2e-15 at most). The package evaluates
//!   `-ln(f + (1 - 2f) D)` from the probabilities, this crate in log space; both in float64.

use serde_json::Value;
use smooth_topk::{Loss, NoisedTopkHinge, Reduction, Top1Mode, TopkCrossEntropy};

const FIXTURE: &str = include_str!("fixtures/other_losses.json");

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("integer") as usize)
        .collect()
}

fn field(c: &Value, name: &str) -> usize {
    c[name].as_u64().expect(name) as usize
}

fn doc() -> Value {
    serde_json::from_str(FIXTURE).expect("fixture JSON")
}

fn assert_close(
    what: &str,
    got: (f64, Vec<f64>),
    want: (f64, Vec<f64>),
    loss_tol: f64,
    grad_tol: f64,
) {
    let (l, g) = got;
    let (wl, wg) = want;
    assert!(
        (l - wl).abs() <= loss_tol * (1.0 + wl.abs()),
        "{what}: loss {l} vs {wl}"
    );
    let size = wg.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let err = g
        .iter()
        .zip(&wg)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        err <= grad_tol * (1.0 + size),
        "{what}: gradient off by {err}"
    );
    eprintln!(
        "{what}: loss {:.1e} relative, gradient {:.1e}",
        (l - wl).abs() / wl.abs().max(1e-300),
        err / size.max(1e-300)
    );
}

#[test]
fn noised_hinge_agrees_with_pytopk_under_the_same_noise() {
    let doc = doc();
    for (i, c) in doc["noised"].as_array().unwrap().iter().enumerate() {
        let n = field(c, "n");
        let loss = NoisedTopkHinge::balanced(
            field(c, "k"),
            c["epsilon"].as_f64().unwrap(),
            field(c, "n_sample"),
        )
        .unwrap();
        let got = loss
            .loss_and_grad_with_noise(
                &floats(&c["scores"]),
                &usizes(&c["labels"]),
                n,
                &floats(&c["noise"]),
                Reduction::Mean,
            )
            .unwrap();
        assert_close(
            &format!("balanced case {i}"),
            got,
            (c["loss"].as_f64().unwrap(), floats(&c["grad"])),
            1e-12,
            1e-7,
        );
    }
    for (i, c) in doc["imbalanced"].as_array().unwrap().iter().enumerate() {
        let n = field(c, "n");
        let theirs = floats(&c["margins"]);
        let counts: Vec<u64> = usizes(&c["class_counts"])
            .iter()
            .map(|&v| v as u64)
            .collect();
        let ours = NoisedTopkHinge::ldam_margins(&counts, c["max_m"].as_f64().unwrap()).unwrap();
        for (a, b) in ours.iter().zip(&theirs) {
            assert!(
                (a - b).abs() <= 1e-7 * b.abs(),
                "case {i}: margin {a} vs {b} (float32)"
            );
        }
        let (k, eps, draws) = (
            field(c, "k"),
            c["epsilon"].as_f64().unwrap(),
            field(c, "n_sample"),
        );
        let loss = NoisedTopkHinge::imbalanced(k, eps, draws, theirs, c["scale"].as_f64().unwrap())
            .unwrap();
        let got = loss
            .loss_and_grad_with_noise(
                &floats(&c["scores"]),
                &usizes(&c["labels"]),
                n,
                &floats(&c["noise"]),
                Reduction::Mean,
            )
            .unwrap();
        assert_close(
            &format!("imbalanced case {i}"),
            got,
            (c["loss"].as_f64().unwrap(), floats(&c["grad"])),
            1e-12,
            1e-7,
        );
    }
}

#[test]
fn topk_cross_entropy_agrees_with_difftopk_neuralsort() {
    let doc = doc();
    for (i, c) in doc["topk_ce"].as_array().unwrap().iter().enumerate() {
        let n = field(c, "n");
        let m = c["m"].as_u64().map(|v| v as usize);
        let top1 = match c["top1_mode"].as_str().unwrap() {
            "sm" => Top1Mode::Softmax,
            "sort" => Top1Mode::Sort,
            "smce" => Top1Mode::SoftmaxCe,
            other => panic!("mode {other}"),
        };
        let tau = 1.0 / c["inverse_temperature"].as_f64().unwrap();
        let loss = TopkCrossEntropy::new(&floats(&c["p_k"]), tau, m)
            .unwrap()
            .with_top1(top1);
        let got = loss
            .loss_and_grad(
                &floats(&c["scores"]),
                &usizes(&c["labels"]),
                n,
                Reduction::Mean,
            )
            .unwrap();
        assert_close(
            &format!("case {i}"),
            got,
            (c["loss"].as_f64().unwrap(), floats(&c["grad"])),
            1e-12,
            1e-12,
        );
    }
}
