//! Every bad input gets a typed error naming the value, and nothing is written.

use smooth_topk::{
    log_elementary_symmetric, topk_accuracy, CrossEntropy, HardTopkSvm, Loss, Reduction,
    SmoothTopkSvm, TopkError,
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
