//! The burn op on the Flex CPU backend against the numeric core, finite differences and the
//! upstream-gradient contract.

mod common;

use burn::nn::loss::Reduction;
use burn::tensor::{Device, Int, Tensor, TensorData};
use common::{labels, scores};
use smooth_topk::{Loss, SmoothTopkSvm};
use smooth_topk_burn::{
    topk_loss_per_sample, AnyLoss, HardTopkSvmLossConfig, SmoothTopkSvmLossConfig, TopkError,
};

fn to_vec(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_to_vec_as::<f32>().unwrap()
}

#[test]
fn loss_and_gradient_equal_the_core() {
    let device = Device::flex().autodiff();
    for &n in &[10usize, 100, 1000] {
        for &k in &[1usize, 2, 5] {
            for &tau in &[0.1, 1.0, 5.0] {
                let batch = 6;
                let x = scores(batch * n, (n * 31 + k) as u64, 2.0);
                let y = labels(batch, n, k as u64);
                let logits =
                    Tensor::<2>::from_data(TensorData::new(x.clone(), [batch, n]), &device)
                        .require_grad();
                let targets =
                    Tensor::<1, Int>::from_data(TensorData::new(y.clone(), [batch]), &device);
                let loss = SmoothTopkSvmLossConfig::new()
                    .with_k(k)
                    .with_tau(tau)
                    .init()
                    .unwrap();
                let value = loss.forward(logits.clone(), targets);
                let got_loss = value.clone().into_data().try_to_vec_as::<f32>().unwrap()[0];
                let grads = value.backward();
                let got_grad = to_vec(logits.grad(&grads).unwrap());

                let core = SmoothTopkSvm::new(k, tau, 1.0).unwrap();
                let yu: Vec<usize> = y.iter().map(|&v| v as usize).collect();
                let (want_loss, want_grad) = core
                    .loss_and_grad(&x, &yu, n, smooth_topk::Reduction::Mean)
                    .unwrap();
                assert!(
                    (f64::from(got_loss) - want_loss).abs() <= 1e-6 * want_loss.abs().max(1.0),
                    "n={n} k={k} tau={tau}: {got_loss} vs {want_loss}"
                );
                for (a, b) in got_grad.iter().zip(&want_grad) {
                    assert!((a - b).abs() <= 1e-6, "n={n} k={k} tau={tau}: {a} vs {b}");
                }
            }
        }
    }
}

#[test]
fn gradient_matches_finite_differences_of_the_op() {
    let device = Device::flex().autodiff();
    let (batch, n, k) = (2usize, 7usize, 3usize);
    let x = scores(batch * n, 5, 1.0);
    let y = labels(batch, n, 3);
    let loss = SmoothTopkSvmLossConfig::new()
        .with_k(k)
        .with_tau(0.7)
        .init()
        .unwrap();
    let plain = device.clone().inner();
    let eval = |v: &[f32]| -> f64 {
        let logits = Tensor::<2>::from_data(TensorData::new(v.to_vec(), [batch, n]), &plain);
        let targets = Tensor::<1, Int>::from_data(TensorData::new(y.clone(), [batch]), &plain);
        f64::from(
            loss.forward(logits, targets)
                .into_data()
                .try_to_vec_as::<f32>()
                .unwrap()[0],
        )
    };
    let logits =
        Tensor::<2>::from_data(TensorData::new(x.clone(), [batch, n]), &device).require_grad();
    let targets = Tensor::<1, Int>::from_data(TensorData::new(y.clone(), [batch]), &device);
    let grads = loss.forward(logits.clone(), targets).backward();
    let g = to_vec(logits.grad(&grads).unwrap());
    let h = 1e-2f32;
    for i in 0..batch * n {
        let (mut p, mut m) = (x.clone(), x.clone());
        p[i] += h;
        m[i] -= h;
        let fd = (eval(&p) - eval(&m)) / (2.0 * f64::from(h));
        assert!(
            (fd - f64::from(g[i])).abs() < 2e-4,
            "entry {i}: fd {fd} vs {}",
            g[i]
        );
    }
}

#[test]
fn upstream_gradient_and_reductions_are_honoured() {
    let device = Device::flex().autodiff();
    let (batch, n) = (4usize, 12usize);
    let x = scores(batch * n, 9, 1.5);
    let y = labels(batch, n, 1);
    let make = || {
        (
            Tensor::<2>::from_data(TensorData::new(x.clone(), [batch, n]), &device).require_grad(),
            Tensor::<1, Int>::from_data(TensorData::new(y.clone(), [batch]), &device),
        )
    };
    let core = AnyLoss::from(SmoothTopkSvm::new(5, 1.0, 1.0).unwrap());
    // Weighted sum of per-sample losses: row b of the gradient scales by w_b.
    let weights = [0.5f32, -2.0, 0.0, 3.0];
    let (logits, targets) = make();
    let per_sample = topk_loss_per_sample(logits.clone(), targets, core.clone()).unwrap();
    let w = Tensor::<1>::from_data(TensorData::new(weights.to_vec(), [batch]), &device);
    let g_weighted = to_vec(logits.grad(&(per_sample * w).sum().backward()).unwrap());
    let (logits, targets) = make();
    let per_sample = topk_loss_per_sample(logits.clone(), targets, core).unwrap();
    let g_plain = to_vec(logits.grad(&per_sample.sum().backward()).unwrap());
    for b in 0..batch {
        for i in 0..n {
            let (a, p) = (g_weighted[b * n + i], g_plain[b * n + i]);
            assert!((a - weights[b] * p).abs() <= 1e-6, "b={b} i={i}");
        }
    }
    // Mean is Sum / batch.
    let grad_of = |reduction: Reduction| {
        let (logits, targets) = make();
        let loss = SmoothTopkSvmLossConfig::new()
            .with_reduction(reduction)
            .init()
            .unwrap();
        to_vec(
            logits
                .grad(&loss.forward(logits.clone(), targets).backward())
                .unwrap(),
        )
    };
    let (mean, sum) = (grad_of(Reduction::Mean), grad_of(Reduction::Sum));
    for (m, s) in mean.iter().zip(&sum) {
        assert!((m * batch as f32 - s).abs() <= 1e-6);
    }
    assert_eq!(sum, g_plain);
}

/// The NdArray CPU backend runs the same host path: same numbers as Flex, gradient included.
#[cfg(feature = "ndarray")]
#[test]
#[allow(deprecated)]
fn ndarray_backend_matches_flex() {
    let (batch, n) = (3usize, 40usize);
    let x = scores(batch * n, 21, 2.0);
    let y = labels(batch, n, 2);
    let run = |device: Device| {
        let logits =
            Tensor::<2>::from_data(TensorData::new(x.clone(), [batch, n]), &device).require_grad();
        let targets = Tensor::<1, Int>::from_data(TensorData::new(y.clone(), [batch]), &device);
        let loss = SmoothTopkSvmLossConfig::new().init().unwrap();
        let value = loss.forward(logits.clone(), targets);
        let v = value.clone().into_data().try_to_vec_as::<f32>().unwrap();
        (v, to_vec(logits.grad(&value.backward()).unwrap()))
    };
    assert_eq!(
        run(Device::ndarray().autodiff()),
        run(Device::flex().autodiff())
    );
}

#[test]
fn hard_loss_and_plain_backend_work() {
    let device = Device::flex();
    let logits = Tensor::<2>::from_floats([[5.0, 1.0, 1.0, 1.0, 0.0]], &device);
    let targets = Tensor::<1, Int>::from_data(TensorData::new(vec![4i64], [1]), &device);
    let hard = HardTopkSvmLossConfig::new().with_k(2).init().unwrap();
    let v = hard
        .forward(logits.clone(), targets.clone())
        .into_data()
        .try_to_vec_as::<f32>()
        .unwrap();
    assert_eq!(v, vec![1.5]);
    let smooth = SmoothTopkSvmLossConfig::new().with_k(2).init().unwrap();
    let per = smooth
        .forward_per_sample(logits, targets)
        .into_data()
        .try_to_vec_as::<f32>()
        .unwrap();
    assert!(per[0] > 0.0 && per[0].is_finite());
}

#[test]
fn invalid_configurations_and_shapes_are_errors_not_panics() {
    assert_eq!(
        SmoothTopkSvmLossConfig::new().with_k(0).init().unwrap_err(),
        TopkError::ZeroK
    );
    assert_eq!(
        SmoothTopkSvmLossConfig::new()
            .with_tau(-1.0)
            .init()
            .unwrap_err(),
        TopkError::InvalidTau(-1.0)
    );
    assert_eq!(
        HardTopkSvmLossConfig::new()
            .with_alpha(-0.5)
            .init()
            .unwrap_err(),
        TopkError::InvalidAlpha(-0.5)
    );
    let device = Device::flex();
    let logits = Tensor::<2>::from_floats([[1.0, 2.0, 3.0]], &device);
    let targets = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64], [1]), &device);
    let loss = SmoothTopkSvmLossConfig::new().init().unwrap(); // k = 5 > n - 1
    assert_eq!(
        loss.try_forward(logits.clone(), targets).unwrap_err(),
        TopkError::TooFewClasses { n: 3, min: 6 }
    );
    let two = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1], [2]), &device);
    let k1 = SmoothTopkSvmLossConfig::new().with_k(1).init().unwrap();
    assert_eq!(
        k1.try_forward(logits, two).unwrap_err(),
        TopkError::ShapeMismatch {
            what: "targets",
            got: 2,
            expected: 1
        }
    );
}

#[test]
fn try_forward_returns_label_and_finiteness_errors_and_tau_is_set_validated() {
    let device = Device::flex();
    let logits = Tensor::<2>::from_floats([[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]], &device);
    let targets = |v: Vec<i64>| Tensor::<1, Int>::from_data(TensorData::new(v, [2]), &device);
    let mut loss = SmoothTopkSvmLossConfig::new().with_k(1).init().unwrap();
    assert!(loss
        .try_forward(logits.clone(), targets(vec![0, 2]))
        .is_ok());
    assert_eq!(
        loss.try_forward(logits.clone(), targets(vec![0, 3]))
            .unwrap_err(),
        TopkError::LabelOutOfRange {
            sample: 1,
            label: 3,
            n: 3
        }
    );
    assert!(matches!(
        loss.try_forward(logits.clone(), targets(vec![-1, 0]))
            .unwrap_err(),
        TopkError::LabelOutOfRange {
            sample: 0,
            n: 3,
            ..
        }
    ));
    let nan = Tensor::<2>::from_floats([[1.0, 2.0, 3.0], [0.5, f32::NAN, -1.0]], &device);
    assert!(matches!(
        loss.try_forward(nan, targets(vec![0, 0])).unwrap_err(),
        TopkError::NonFiniteScore {
            sample: 1,
            index: 1,
            ..
        }
    ));
    // Annealing: validated, and a refused value changes nothing.
    assert_eq!(loss.set_tau(-1.0), Err(TopkError::InvalidTau(-1.0)));
    assert_eq!(loss.tau(), 1.0);
    loss.set_tau(0.25).unwrap();
    assert_eq!((loss.k(), loss.tau(), loss.alpha()), (1, 0.25, 1.0));
    let shown = format!("{loss}");
    assert!(
        shown.contains("k: 1") && shown.contains("tau: 0.25") && shown.contains("Mean"),
        "{shown}"
    );
    let per_sample = loss.forward_no_reduction(logits.clone(), targets(vec![0, 2]));
    assert_eq!(per_sample.dims(), [2]);
    let want = SmoothTopkSvm::new(1, 0.25, 1.0)
        .unwrap()
        .loss(
            &[1.0f32, 2.0, 3.0, 0.5, 0.0, -1.0],
            &[0, 2],
            3,
            smooth_topk::Reduction::Mean,
        )
        .unwrap();
    let got = loss
        .try_forward(logits, targets(vec![0, 2]))
        .unwrap()
        .into_scalar::<f32>();
    assert!((f64::from(got) - want).abs() <= 1e-6 * want.abs());
}

/// The field's other losses: each module's loss and autodiff gradient equal the core's.
#[test]
fn other_loss_modules_equal_the_core() {
    use smooth_topk::{NoisedTopkHinge, TopkCrossEntropy, TruncatedTopkEntropy};
    use smooth_topk_burn::{
        NoisedTopkHingeLossConfig, TopkCrossEntropyLossConfig, TruncatedTopkEntropyLossConfig,
    };
    let device = Device::flex().autodiff();
    let (batch, n) = (5usize, 40usize);
    let x = scores(batch * n, 77, 2.0);
    let y = labels(batch, n, 3);
    let yu: Vec<usize> = y.iter().map(|&v| v as usize).collect();
    let run = |forward: &dyn Fn(Tensor<2>, Tensor<1, Int>) -> Tensor<1>| {
        let logits =
            Tensor::<2>::from_data(TensorData::new(x.clone(), [batch, n]), &device).require_grad();
        let targets = Tensor::<1, Int>::from_data(TensorData::new(y.clone(), [batch]), &device);
        let value = forward(logits.clone(), targets);
        let got = f64::from(value.clone().into_data().try_to_vec_as::<f32>().unwrap()[0]);
        let grads = value.backward();
        (got, to_vec(logits.grad(&grads).unwrap()))
    };
    let compare = |what: &str, got: (f64, Vec<f32>), want: (f64, Vec<f32>)| {
        assert!(
            (got.0 - want.0).abs() <= 1e-6 * want.0.abs().max(1.0),
            "{what}: {} vs {}",
            got.0,
            want.0
        );
        for (a, b) in got.1.iter().zip(&want.1) {
            assert!((a - b).abs() <= 1e-6, "{what}: {a} vs {b}");
        }
    };
    let mean = smooth_topk::Reduction::Mean;

    let entr = TruncatedTopkEntropyLossConfig::new()
        .with_k(3)
        .init()
        .unwrap();
    let want = TruncatedTopkEntropy::new(3)
        .unwrap()
        .loss_and_grad(&x, &yu, n, mean)
        .unwrap();
    compare("entropy", run(&|l, t| entr.forward(l, t)), want);

    let ce = TopkCrossEntropyLossConfig::new()
        .with_m(Some(12))
        .with_tau(0.5)
        .init()
        .unwrap();
    let want = TopkCrossEntropy::new(&[0.2; 5], 0.5, Some(12))
        .unwrap()
        .loss_and_grad(&x, &yu, n, mean)
        .unwrap();
    compare("top-k ce", run(&|l, t| ce.forward(l, t)), want);

    // The noised hinge draws step 0's noise on the first call, step 1's on the second.
    let noised = NoisedTopkHingeLossConfig::new()
        .with_k(2)
        .with_seed(9)
        .init()
        .unwrap();
    let core =
        smooth_topk::AnyLoss::from(NoisedTopkHinge::balanced(2, 1.0, 5).unwrap().with_seed(9));
    let first = run(&|l, t| noised.forward(l, t));
    compare(
        "noised, step 0",
        first.clone(),
        core.for_step(0).loss_and_grad(&x, &yu, n, mean).unwrap(),
    );
    let second = run(&|l, t| noised.forward(l, t));
    compare(
        "noised, step 1",
        second.clone(),
        core.for_step(1).loss_and_grad(&x, &yu, n, mean).unwrap(),
    );
    assert_ne!(first.0, second.0);
    assert_eq!(noised.steps(), 2);

    // Settings are validated at init; margins must match the class count at forward.
    assert!(NoisedTopkHingeLossConfig::new()
        .with_epsilon(-1.0)
        .init()
        .is_err());
    assert!(TopkCrossEntropyLossConfig::new()
        .with_p_k(vec![0.5])
        .init()
        .is_err());
    let imbalanced = NoisedTopkHingeLossConfig::new()
        .with_margins(Some(vec![0.5; 7]))
        .init()
        .unwrap();
    let logits = Tensor::<2>::from_data(TensorData::new(x.clone(), [batch, n]), &device);
    let targets = Tensor::<1, Int>::from_data(TensorData::new(y.clone(), [batch]), &device);
    assert!(matches!(
        imbalanced.try_forward(logits, targets),
        Err(TopkError::ShapeMismatch { .. })
    ));
}
