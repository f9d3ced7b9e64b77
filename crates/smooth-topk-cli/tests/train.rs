//! `train`, `eval` and `reproduce` end to end on small built-in data: the files a run writes,
//! resuming a killed run, evaluating a saved model, the grid table, and one-line errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_smooth-topk"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("smooth-topk-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A run small enough for CI: 100 classes, 10 images each, 3 epochs.
const SMALL: [&str; 14] = [
    "--train-size",
    "1000",
    "--valid-size",
    "200",
    "--test-size",
    "200",
    "--epochs",
    "3",
    "--batch-size",
    "50",
    "--lr-schedule",
    "3",
    "--noise",
    "0.4",
];

fn train_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["train", "--loss", "svm", "--seed", "5", "--out", out];
    args.extend(SMALL);
    args.extend(extra);
    args
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `results.json` without the wall-clock time.
fn results(dir: &Path) -> Value {
    let mut r = json(&dir.join("results.json"));
    r.as_object_mut().unwrap().remove("seconds");
    r
}

/// `metrics.csv` without its seconds column.
fn metrics_without_time(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("metrics.csv"))
        .unwrap()
        .lines()
        .map(|l| {
            let cols: Vec<&str> = l.split(',').collect();
            [&cols[..2], &cols[3..]].concat().join(",")
        })
        .collect()
}

#[test]
fn killed_run_resumes_to_the_same_results_as_an_uninterrupted_one() {
    let whole = scratch("whole");
    let o = run(&train_args(whole.to_str().unwrap(), &[]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.matches("epoch ").count() >= 3, "{out}");
    assert!(out.contains("final: best valid top1"), "{out}");
    for file in [
        "config.json",
        "metrics.csv",
        "metrics.json",
        "results.json",
        "best-top1/model.bpk",
        "best-top5/meta.json",
        "checkpoint/state.json",
    ] {
        assert!(whole.join(file).is_file(), "missing {file}");
    }
    for png in ["accuracy.png", "loss.png"] {
        let bytes = std::fs::read(whole.join(png)).unwrap();
        assert_eq!(&bytes[1..4], b"PNG", "{png}");
    }
    assert_eq!(metrics_without_time(&whole).len(), 4); // header + 3 epochs

    // The same run, killed once its first checkpoint exists (so during epoch 2), then resumed.
    let killed = scratch("killed");
    let mut child = bin()
        .args(train_args(killed.to_str().unwrap(), &[]))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let state = killed.join("checkpoint/state.json");
    let start = Instant::now();
    while !state.exists() {
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done = json(&state)["epochs_done"].as_u64().unwrap();
    assert!(done < 3, "the run finished before it was killed");
    assert!(!killed.join("results.json").exists());

    let o = run(&["train", "--resume", killed.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains(&format!("resumed after epoch {done}")));
    assert_eq!(results(&killed), results(&whole));
    assert_eq!(metrics_without_time(&killed), metrics_without_time(&whole));

    // eval of the saved best-top-1 model gives the test metrics recorded in results.json.
    let best = whole.join("best-top1");
    let o = run(&["eval", "--checkpoint", best.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let eval: Value = serde_json::from_str(&text(&o.stdout)).unwrap();
    let recorded = &results(&whole)["best_top1"]["test"];
    assert_eq!(eval["metrics"]["accuracy"], recorded["accuracy"]);
    assert_eq!(eval["images"], 200);

    let _ = std::fs::remove_dir_all(&whole);
    let _ = std::fs::remove_dir_all(&killed);
}

#[test]
fn reproduce_writes_the_table_and_plot() {
    let out = scratch("grid");
    let grid = || {
        run(&[
            "reproduce",
            "cifar100-noise",
            "--noise-levels",
            "0,0.6",
            "--epochs",
            "1",
            "--train-size",
            "500",
            "--valid-size",
            "100",
            "--test-size",
            "100",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let o = grid();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let table = std::fs::read_to_string(out.join("table.md")).unwrap();
    let rows: Vec<&str> = table.lines().skip(2).collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert!(
        rows[0].starts_with("| 0 | ce |") && rows[3].starts_with("| 0.6 | svm("),
        "{table}"
    );
    assert!(text(&o.stdout).contains(&table));
    assert_eq!(&std::fs::read(out.join("topk.png")).unwrap()[1..4], b"PNG");
    let csv = std::fs::read_to_string(out.join("table.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5);

    // Started again, the grid reads the finished runs back instead of training.
    let again = grid();
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(!text(&again.stdout).contains("epoch   1/1"));
    assert_eq!(
        std::fs::read_to_string(out.join("table.md")).unwrap(),
        table
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn bad_settings_fail_with_one_line() {
    let cases: [(&[&str], &str); 5] = [
        (&["train", "--data", "cifar100"], "--data-dir is required"),
        (
            &[
                "train",
                "--data",
                "cifar100",
                "--data-dir",
                "/nonexistent/cifar",
            ],
            "/nonexistent/cifar",
        ),
        (&["train", "--noise", "1.5"], "noise = 1.5"),
        (&["train", "--k", "0"], "k"),
        (
            &["eval", "--checkpoint", "/nonexistent/best-top1"],
            "/nonexistent/best-top1",
        ),
    ];
    for (args, needle) in cases {
        let o = run(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = text(&o.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("smooth-topk: ") && err.contains(needle),
            "{args:?}: {err}"
        );
    }
}

/// CIFAR-100 records: coarse label, fine label, 3072 pixel bytes.
fn write_cifar(path: &Path, per_class: usize, salt: u8) {
    let mut bytes = Vec::new();
    for fine in 0..100u8 {
        for i in 0..per_class {
            bytes.extend([fine / 5, fine]);
            bytes.extend(
                (0..3072).map(|p| (p as u8).wrapping_mul(fine).wrapping_add(i as u8 ^ salt)),
            );
        }
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn trains_and_evaluates_on_cifar100_binaries() {
    let dir = scratch("cifar-data");
    std::fs::create_dir_all(&dir).unwrap();
    write_cifar(&dir.join("train.bin"), 3, 0);
    write_cifar(&dir.join("test.bin"), 1, 7);
    let out = scratch("cifar-run");
    let args = [
        "train",
        "--data",
        "cifar100",
        "--data-dir",
        dir.to_str().unwrap(),
        "--model",
        "convnet",
        "--loss",
        "ce",
        "--epochs",
        "1",
        "--valid-size",
        "100",
        "--noise",
        "0.5",
        "--noise-grouping",
        "coarse",
        "--ten-crop",
        "--out",
        out.to_str().unwrap(),
    ];
    let o = run(&args);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stdout = text(&o.stdout);
    assert!(
        stdout.contains("(100 classes; 200 train / 100 valid / 100 test, noise 0.5"),
        "{stdout}"
    );
    let results = results(&out);
    assert_eq!(results["config"]["data"]["source"]["kind"], "cifar100");
    assert_eq!(results["best_top1"]["epoch"], 1);

    // A truncated file is one clear line naming the file.
    let bytes = std::fs::read(dir.join("test.bin")).unwrap();
    std::fs::write(dir.join("test.bin"), &bytes[..bytes.len() - 10]).unwrap();
    let o = run(&[
        "eval",
        "--checkpoint",
        out.join("best-top1").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("test.bin") && err.lines().count() == 1,
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&out);
}
