//! Every bad input gets a typed error naming the value, and nothing is written.

use smooth_topk::{
    log_elementary_symmetric, topk_accuracy, AnyLoss, CrossEntropy, HardTopkSvm, Loss,
    NoisedTopkHinge, Reduction, SmoothTopkSvm, TopkCrossEntropy, TopkError, TruncatedTopkEntropy,
};

#[test]
fn configuration_errors_name_the_value() {
    assert_eq!(SmoothTopkSvm::new(0, 1.0, 1.0), Err(TopkError::ZeroK));
    assert_eq!(
        SmoothTopkSvm::new(1, 0.0, 1.0),
        Err(TopkError::InvalidTau(0.0))
    );
    assert_eq!(
        SmoothTopkSvm::new(1, -2.0, 1.0),
        Err(TopkError::InvalidTau(-2.0))
    );
    assert!(
        matches!(SmoothTopkSvm::new(1, f64::NAN, 1.0), Err(TopkError::InvalidTau(t)) if t.is_nan())
    );
    assert_eq!(
        SmoothTopkSvm::new(1, f64::INFINITY, 1.0),
        Err(TopkError::InvalidTau(f64::INFINITY))
    );
    assert_eq!(
        SmoothTopkSvm::new(1, 1.0, -0.5),
        Err(TopkError::InvalidAlpha(-0.5))
    );
    assert!(matches!(
        SmoothTopkSvm::new(1, 1.0, f64::NAN),
        Err(TopkError::InvalidAlpha(_))
    ));
    assert_eq!(HardTopkSvm::new(0, 1.0), Err(TopkError::ZeroK));
    assert_eq!(
        HardTopkSvm::new(3, -1.0),
        Err(TopkError::InvalidAlpha(-1.0))
    );
    let msg = SmoothTopkSvm::new(1, -2.0, 1.0).unwrap_err().to_string();
    assert!(msg.contains("tau = -2"), "{msg}");
}

#[test]
fn batch_errors_leave_outputs_untouched() {
    let loss = SmoothTopkSvm::new(3, 1.0, 1.0).unwrap();
    let scores = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
    let mut losses = [-7.0f32; 2];
    let mut grad = [-7.0f32; 8];
    let mut run = |s: &[f32], l: &[usize], n: usize| {
        let r = loss.loss_and_grad_per_sample(s, l, n, &mut losses, &mut grad);
        assert!(losses.iter().chain(grad.iter()).all(|&v| v == -7.0));
        r
    };
    assert_eq!(
        run(&scores, &[0, 4], 4),
        Err(TopkError::LabelOutOfRange {
            sample: 1,
            label: 4,
            n: 4
        })
    );
    assert_eq!(
        run(&scores[..6], &[0, 1], 3),
        Err(TopkError::TooFewClasses { n: 3, min: 4 })
    );
    assert_eq!(run(&[], &[], 4), Err(TopkError::EmptyBatch));
    assert_eq!(
        run(&scores[..7], &[0, 1], 4),
        Err(TopkError::ShapeMismatch {
            what: "scores",
            got: 7,
            expected: 8
        })
    );
    let mut bad = scores;
    bad[6] = f32::NAN;
    assert!(matches!(
        run(&bad, &[0, 1], 4),
        Err(TopkError::NonFiniteScore { sample: 1, index: 2, value }) if value.is_nan()
    ));
    bad[6] = f32::NEG_INFINITY;
    assert!(matches!(
        run(&bad, &[0, 1], 4),
        Err(TopkError::NonFiniteScore {
            sample: 1,
            index: 2,
            ..
        })
    ));
    let mut short = [0.0f32; 1];
    assert_eq!(
        loss.loss_per_sample(&scores, &[0, 1], 4, &mut short),
        Err(TopkError::ShapeMismatch {
            what: "losses",
            got: 1,
            expected: 2
        })
    );
}

#[test]
fn k_must_be_below_n_for_the_svms_only() {
    let s = [0.5f64, 0.1];
    assert_eq!(
        SmoothTopkSvm::new(2, 1.0, 1.0)
            .unwrap()
            .loss(&s, &[0], 2, Reduction::Mean),
        Err(TopkError::TooFewClasses { n: 2, min: 3 })
    );
    assert!(SmoothTopkSvm::new(1, 1.0, 1.0)
        .unwrap()
        .loss(&s, &[0], 2, Reduction::Mean)
        .is_ok());
    assert!(HardTopkSvm::new(2, 1.0)
        .unwrap()
        .loss(&s, &[0], 2, Reduction::Mean)
        .is_err());
    // Cross-entropy accepts a single class (loss 0).
    assert_eq!(
        CrossEntropy.loss(&[3.0f64], &[0], 1, Reduction::Mean),
        Ok(0.0)
    );
}

#[test]
fn helper_functions_validate_too() {
    assert!(matches!(
        log_elementary_symmetric(&[0.0, f64::INFINITY], 2),
        Err(TopkError::NonFiniteScore { index: 1, .. })
    ));
    assert_eq!(
        topk_accuracy(&[0.0f32; 4], &[0], 4, 0),
        Err(TopkError::ZeroK)
    );
    assert_eq!(
        topk_accuracy::<f32>(&[], &[], 4, 1),
        Err(TopkError::EmptyBatch)
    );
}

proptest::proptest! {
    /// Any k at all, up to usize::MAX: the losses refuse what no batch can satisfy with a typed
    /// error (never a wrapped k + 1 or a panic), and the helpers never allocate k entries
    /// they cannot have.
    #[test]
    fn any_k_is_an_answer_or_a_typed_error(k in proptest::prelude::any::<usize>(), n in 2usize..40) {
        let scores: Vec<f32> = (0..2 * n).map(|i| (i % 7) as f32 * 0.3).collect();
        let labels = [0, n - 1];
        for loss in [
            SmoothTopkSvm::new(k.max(1), 1.0, 1.0).map(AnyLoss::from),
            HardTopkSvm::new(k.max(1), 1.0).map(AnyLoss::from),
            TruncatedTopkEntropy::new(k.max(1)).map(AnyLoss::from),
            NoisedTopkHinge::balanced(k.max(1), 0.5, 2).map(AnyLoss::from),
            TopkCrossEntropy::top_k_only(k.max(1), 1.0, None).map(AnyLoss::from),
        ] {
            let loss = match loss {
                Ok(loss) => loss,
                // p_k would need k entries.
                Err(e) => {
                    let too_large = matches!(e, TopkError::TooLarge { .. });
                    proptest::prop_assert!(k > 1 << 20 && too_large, "{:?}", e);
                    continue;
                }
            };
            let got = loss.loss_and_grad(&scores, &labels, n, Reduction::Mean);
            if k.max(1) < n {
                proptest::prop_assert!(got.is_ok());
            } else {
                let refused = matches!(got, Err(TopkError::TooFewClasses { .. }));
                proptest::prop_assert!(refused, "k = {}, n = {}: {:?}", k, n, got);
            }
        }
        let acc = topk_accuracy(&scores, &labels, n, k);
        match k {
            0 => proptest::prop_assert_eq!(acc, Err(TopkError::ZeroK)),
            // Every label is among the top n.
            k if k <= 1 << 20 => proptest::prop_assert!(acc.unwrap()[n - 1..].iter().all(|&a| a == 1.0)),
            _ => {
                let answered = matches!(acc, Err(TopkError::TooLarge { .. }) | Ok(_));
                proptest::prop_assert!(answered);
            }
        }
        let esp = log_elementary_symmetric(&[0.5, -1.0], k);
        if k <= 1 << 20 {
            proptest::prop_assert_eq!(esp.unwrap().len(), k + 1);
        } else {
            let answered = matches!(esp, Err(TopkError::TooLarge { what: "k", .. }) | Ok(_));
            proptest::prop_assert!(answered);
        }
    }
}

#[test]
fn extreme_k_and_labels_are_errors_not_panics() {
    assert!(matches!(
        log_elementary_symmetric(&[], usize::MAX),
        Err(TopkError::TooLarge { what: "k", .. })
    ));
    assert!(matches!(
        topk_accuracy(&[0.0f32, 1.0], &[1], 2, usize::MAX),
        Err(TopkError::TooLarge { what: "max_k", .. })
    ));
    assert!(matches!(
        smooth_topk::label_rank(&[0.0f32, 1.0], 2),
        Err(TopkError::LabelOutOfRange { label: 2, n: 2, .. })
    ));
    assert_eq!(smooth_topk::label_rank(&[0.0f32, 1.0, 1.0], 1), Ok(1));
    // k + 1 would wrap to 0 and pass the class count check.
    assert_eq!(
        SmoothTopkSvm::new(usize::MAX, 1.0, 1.0).unwrap().loss(
            &[0.0f64, 1.0, 2.0],
            &[0],
            3,
            Reduction::Mean
        ),
        Err(TopkError::TooFewClasses {
            n: 3,
            min: usize::MAX
        })
    );
}

/// Huge finite scores: a right loss, or an error — never a wrong number, an infinity or a NaN.
#[test]
fn huge_finite_scores_give_the_right_loss_or_an_error() {
    // (s_i - s_y) / (k tau) up to about 3e15 / k: computed in the extended range, exactly.
    // Here 1e15 and 2.5e14: the loss is tau (x_[2] - x_y) + alpha + tau ln(1 + ...) = 2.5e13 + 1.
    let s = [2e14f64, 5e13, 0.0, 0.0, 0.0, 0.0, 0.0];
    let loss = SmoothTopkSvm::new(2, 0.1, 1.0).unwrap();
    let (l, g) = loss.loss_and_grad(&s, &[2], 7, Reduction::Mean).unwrap();
    assert!((l - (2.5e13 + 1.0)).abs() <= 1e-15 * l, "{l:e}");
    let want = [0.0, 0.5, -0.5, 0.0, 0.0, 0.0, 0.0];
    assert!(
        g.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-15),
        "{g:?}"
    );
    // A moderate loss that depends on a small difference next to a huge one.
    let s = [1e15f64, 3.0, 0.0];
    let (l, _) = SmoothTopkSvm::new(2, 1.0, 1.0)
        .unwrap()
        .loss_and_grad(&s, &[2], 3, Reduction::Mean)
        .unwrap();
    // log r = alpha / tau + ln(w_a w_b / (w_a + w_b)) - x_y = 1 + 1.5 (w_b / w_a underflows).
    let want = (1.0f64 + 2.5f64.exp()).ln();
    assert!((l - want).abs() <= 1e-12 * want, "{l} vs {want}");
    // Beyond that range (the row: 5e300 and 2.5e300 in units of k tau) the loss is
    // refused, not guessed (a clamp used to return 1e299 here, for a true 2.5e299).
    let huge = [1e300f64, 5e299, 0.0, 0.0, 0.0, 0.0, 0.0];
    assert_eq!(
        loss.loss(&huge, &[2], 7, Reduction::Mean),
        Err(TopkError::NotRepresentable { sample: 0 })
    );
    // Cross-entropy of [1.7e308, -1.7e308, 0] is 3.4e308: beyond f64.
    assert_eq!(
        CrossEntropy.loss(&[1.7e308f64, -1.7e308, 0.0], &[1], 3, Reduction::Mean),
        Err(TopkError::NotRepresentable { sample: 0 })
    );
    // float32: 6e38 overflows the output type; in f64 the same row is fine.
    assert_eq!(
        CrossEntropy.loss_per_sample(&[3e38f32, -3e38], &[1], 2, &mut [0.0f32]),
        Err(TopkError::NotRepresentable { sample: 0 })
    );
    assert!(CrossEntropy
        .loss(&[3e38f64, -3e38], &[1], 2, Reduction::Mean)
        .is_ok_and(|l| (l - 6e38).abs() <= 1e-15 * 6e38));
    // tau = 1e300 in float32: tau ln 2 overflows f32.
    let big_tau = SmoothTopkSvm::new(1, 1e300, 1.0).unwrap();
    assert_eq!(
        big_tau.loss_per_sample(&[0.0f32, 1.0], &[0], 2, &mut [0.0f32]),
        Err(TopkError::NotRepresentable { sample: 0 })
    );
    assert!(big_tau
        .loss(&[0.0f64, 1.0], &[0], 2, Reduction::Mean)
        .is_ok_and(|l| l.is_finite()));
}
