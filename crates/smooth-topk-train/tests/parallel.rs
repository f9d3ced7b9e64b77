//! Data-parallel training on two CPU "devices" (two workers on burn's one CPU device) against
//! one: the same run up to floating-point summation order for a model without batch norm.
//!
//! What differs and why: each worker computes its half of the batch's gradient, and the halves
//! are summed on the first device, so every gradient entry is a sum taken in another order than
//! one device takes it (a few float32 roundings per step). Nothing else differs: the batches,
//! crops, flips, learning rates and the optimiser are the same. With batch norm, each worker
//! would also normalise with its own half-batch statistics, as in PyTorch's DDP without
//! SyncBatchNorm; that is a real difference of the method, so the comparison uses the MLP.

use smooth_topk_data::{Loader, LoaderConfig};
use smooth_topk_train::{
    train, DataCache, DataSource, LossKind, ModelKind, Protocol, RunResults, Silent, Start,
};

fn run(devices: &[usize], loss: LossKind, model: ModelKind, name: &str) -> (RunResults, String) {
    let mut config = Protocol::CpuNoise.config(DataSource::Synthetic, loss);
    config.model = model;
    config.data.train_size = Some(600);
    config.data.valid_size = Some(200);
    config.data.test_size = 200;
    config.data.noise = 0.4;
    config.epochs = 3;
    config.batch_size = 50;
    config.lr_milestones = vec![3];
    config.devices = devices.to_vec();
    let out = std::env::temp_dir().join(format!(
        "smooth-topk-parallel-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&out);
    let loader = Loader::new(&LoaderConfig::default()).unwrap();
    let results = train(
        Start::New(&config),
        &out,
        &loader,
        &mut DataCache::default(),
        &mut Silent,
    )
    .unwrap();
    let metrics = std::fs::read_to_string(out.join("metrics.json")).unwrap();
    let _ = std::fs::remove_dir_all(&out);
    (results, metrics)
}

/// Every number of a metrics file with the key it sits under (accuracies under `accuracy`).
fn numbers(json: &str) -> Vec<(String, f64)> {
    fn walk(v: &serde_json::Value, out: &mut Vec<(String, f64)>, key: &str) {
        match v {
            serde_json::Value::Number(n) => out.push((key.to_string(), n.as_f64().unwrap())),
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out, key)),
            serde_json::Value::Object(o) => o.iter().for_each(|(k, x)| walk(x, out, k)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&serde_json::from_str(json).unwrap(), &mut out, "");
    out
}

#[test]
fn two_cpu_devices_train_as_one_up_to_rounding_and_batch_norm_models_run() {
    for loss in [LossKind::Svm, LossKind::Ce] {
        let (one, one_metrics) = run(&[0], loss, ModelKind::Mlp, &format!("one-{loss:?}"));
        let (two, two_metrics) = run(&[0, 1], loss, ModelKind::Mlp, &format!("two-{loss:?}"));
        assert_eq!(two.config.devices, [0, 1]);
        let (a, b) = (numbers(&one_metrics), numbers(&two_metrics));
        assert_eq!(a.len(), b.len());
        let mut compared = 0;
        for ((key, x), (key_b, y)) in a.iter().zip(&b) {
            assert_eq!(key, key_b);
            match key.as_str() {
                "seconds" => {}
                // Float32 rounding in the summation order only.
                "loss" => {
                    assert!(
                        (x - y).abs() <= 1e-4 * x.abs().max(1.0),
                        "{loss:?}: loss {x} vs {y}"
                    );
                    compared += 1;
                }
                // A near-tie between two logits may flip: one image of 200 is 0.5 points.
                "accuracy" | "train_true_accuracy" => {
                    assert!((x - y).abs() <= 0.5 + 1e-9, "{loss:?}: {key} {x} vs {y}");
                    compared += 1;
                }
                _ => assert_eq!(x, y, "{loss:?}: {key}"),
            }
        }
        assert!(compared > 30, "{compared}");
        let losses = |r: &RunResults| (r.best_top1.test.loss, r.best_topk.valid.loss);
        let (x, y) = (losses(&one), losses(&two));
        assert!(
            (x.0 - y.0).abs() < 1e-4 * x.0.abs().max(1.0),
            "{loss:?}: {x:?} vs {y:?}"
        );
        assert!(
            (x.1 - y.1).abs() < 1e-4 * x.1.abs().max(1.0),
            "{loss:?}: {x:?} vs {y:?}"
        );
        assert_eq!(one.best_top1.epoch, two.best_top1.epoch);
    }
    // Batch-norm models train too (each worker normalising its own half-batch). In the same
    // test as the comparison: runs in parallel threads would share the device's generator.
    let (bn, _) = run(&[0, 1], LossKind::Svm, ModelKind::Convnet, "bn");
    assert!(bn.best_topk.test.top(5) > 5.0, "{:?}", bn.best_topk);
    assert_eq!(bn.steps, 3 * 12);
}
