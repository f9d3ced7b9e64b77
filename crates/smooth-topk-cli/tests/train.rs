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
fn reproduce_selects_learning_rates_and_writes_the_report() {
    let out = scratch("grid");
    let grid = || {
        run(&[
            "reproduce",
            "cifar100-noise",
            "--scale",
            "cpu",
            "--noise-levels",
            "0,0.6",
            "--seeds",
            "0,1",
            "--lr-grid",
            "0.01,0.1",
            "--epochs",
            "2",
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
    let stdout = text(&o.stdout);
    assert!(stdout.contains("estimated time: "), "{stdout}");
    let table = std::fs::read_to_string(out.join("table.md")).unwrap();
    let rows: Vec<&str> = table
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert!(
        rows[0].starts_with("| 0 | ce |") && rows[3].starts_with("| 0.6 | svm |"),
        "{table}"
    );
    assert!(table.contains(" ± "), "{table}");
    assert!(table.contains("over 2 seeds"), "{table}");
    assert!(stdout.contains(&table));
    for png in ["topk.png", "top1.png", "curves-0.png", "curves-0.6.png"] {
        assert_eq!(
            &std::fs::read(out.join(png)).unwrap()[1..4],
            b"PNG",
            "{png}"
        );
    }
    let csv = std::fs::read_to_string(out.join("table.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5);
    // Every cell tried both rates with the first seed and ran the chosen one with the second.
    let results: Value = json(&out.join("table.json"));
    for row in results["rows"].as_array().unwrap() {
        let trials = row["trials"].as_array().unwrap();
        assert_eq!(trials.len(), 2);
        let lr = row["lr"].as_f64().unwrap();
        assert!(lr == 0.01 || lr == 0.1, "{row}");
        let best = trials
            .iter()
            .map(|t| t["valid_topk"].as_f64().unwrap())
            .fold(f64::MIN, f64::max);
        let chosen = trials
            .iter()
            .find(|t| t["lr"].as_f64() == Some(lr))
            .unwrap();
        assert_eq!(chosen["valid_topk"].as_f64().unwrap(), best, "{row}");
        let level = row["level"]["noise"].as_f64().unwrap();
        let loss = row["kind"].as_str().unwrap();
        let cell = out.join(format!("{level}/{loss}/lr-{lr}/seed-1/results.json"));
        assert!(cell.is_file(), "{}", cell.display());
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for needle in [
        "## What the paper claims",
        "## What this run measured",
        "mean test top-5 is higher than cross-entropy's at",
        "![test top-5](topk.png)",
        "## Learning rates",
        "\"model\": \"mlp\"",
    ] {
        assert!(report.contains(needle), "{needle}: {report}");
    }

    // Started again, the grid reads the finished runs back instead of training.
    let again = grid();
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(!text(&again.stdout).contains("epoch   1/2"));
    assert!(text(&again.stdout).contains("every run of the grid has finished"));
    assert_eq!(
        std::fs::read_to_string(out.join("table.md")).unwrap(),
        table
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_paper_scale_grid_asks_for_its_data() {
    let o = run(&["reproduce", "imagenet-subsets"]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("needs its data: --data-dir") && err.contains("--scale cpu"),
        "{err}"
    );
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

/// A small MLP run on the built-in data (cheap enough for several per test).
fn mlp_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "--model",
        "mlp",
        "--train-size",
        "500",
        "--valid-size",
        "100",
        "--test-size",
        "100",
        "--batch-size",
        "50",
        "--out",
        out,
    ];
    args.extend(extra);
    args
}

#[test]
fn divergence_stops_cleanly_and_a_lower_rate_resumes() {
    let out = scratch("diverge");
    // Epoch 1 at lr 0.01; from epoch 2 the schedule multiplies it by 1e30.
    let args = mlp_args(
        out.to_str().unwrap(),
        &[
            "--epochs",
            "3",
            "--lr",
            "0.01",
            "--lr-schedule",
            "2",
            "--lr-decay",
            "1e30",
        ],
    );
    let o = run(&args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
    let err = text(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("training diverged at epoch 2, step ")
            && err.contains("lr 10000000000000000000000000000"),
        "{err}"
    );
    assert!(
        err.contains("the checkpoint of epoch 1") && err.contains("--resume"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let state = json(&out.join("checkpoint/state.json"));
    assert_eq!(state["epochs_done"], 1);
    assert_eq!(json(&out.join("best-top1/meta.json"))["epoch"], 1);
    assert!(!out.join("results.json").exists());

    // Resuming at a base rate of 1e-32 gives 1e-32 x 1e30 = 0.01 from epoch 2 on.
    let o = run(&["train", "--resume", out.to_str().unwrap(), "--lr", "1e-32"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("resumed after epoch 1"));
    let config = json(&out.join("config.json"));
    assert_eq!(config["lr_restarts"][0]["from_epoch"], 2);
    assert_eq!(config["lr_restarts"][0]["lr"], 1e-32);
    let history = json(&out.join("metrics.json"));
    let lrs: Vec<f64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["lr"].as_f64().unwrap())
        .collect();
    assert_eq!(lrs, [0.01, 0.01, 0.01]);
    assert_eq!(json(&out.join("results.json"))["epochs_trained"], 3);

    // Other flags than --lr are refused with --resume.
    let o = run(&["train", "--resume", out.to_str().unwrap(), "--epochs", "9"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("only --lr may be given"),
        "{}",
        text(&o.stderr)
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_huge_learning_rate_never_panics() {
    for loss in ["svm", "hard-svm", "ce"] {
        let out = scratch(&format!("lr-{loss}"));
        let args = mlp_args(
            out.to_str().unwrap(),
            &["--epochs", "2", "--lr", "1e30", "--loss", loss],
        );
        let o = run(&args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{loss}: {err}");
        assert!(
            err.contains("training diverged at epoch 1"),
            "{loss}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{loss}: {err}");
        let _ = std::fs::remove_dir_all(&out);
    }
}

#[test]
fn a_run_directory_has_one_writer_and_its_state_is_checked() {
    let out = scratch("writers");
    let o = run(&mlp_args(out.to_str().unwrap(), &["--epochs", "2"]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let finished = results(&out);

    // While another process (here: this test) holds the lock, nothing else may write.
    let lock = std::fs::File::open(out.join("lock")).unwrap();
    lock.try_lock().unwrap();
    let o = run(&["train", "--resume", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("is being written by another run"),
        "{}",
        text(&o.stderr)
    );
    drop(lock);
    let o = run(&mlp_args(out.to_str().unwrap(), &["--epochs", "2"]));
    assert!(
        text(&o.stderr).contains("already holds a run"),
        "{}",
        text(&o.stderr)
    );

    // Killed between the checkpoint swap and the metrics rewrite: the metrics lose the last
    // epoch and a stale copy of the old checkpoint is left; resuming rebuilds both.
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let short: Vec<&str> = csv.lines().take(2).collect();
    std::fs::write(out.join("metrics.csv"), short.join("\n") + "\n").unwrap();
    std::fs::remove_file(out.join("results.json")).unwrap();
    copy_dir(&out.join("checkpoint"), &out.join("checkpoint.old"));
    let o = run(&["train", "--resume", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(out.join("metrics.csv")).unwrap(),
        csv
    );
    assert!(!out.join("checkpoint.old").exists());
    assert_eq!(results(&out), finished);

    // A state naming a selection outside the run is refused before anything is touched.
    let victim = out
        .parent()
        .unwrap()
        .join(format!("victim-{}", std::process::id()));
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("keep"), "x").unwrap();
    let state_path = out.join("checkpoint/state.json");
    let good_state = std::fs::read_to_string(&state_path).unwrap();
    let mut state: Value = serde_json::from_str(&good_state).unwrap();
    let escape = format!("x/../../{}", victim.file_name().unwrap().to_str().unwrap());
    state["improved"] = serde_json::json!([escape]);
    std::fs::write(&state_path, state.to_string()).unwrap();
    let o = run(&["train", "--resume", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("unknown selection"),
        "{}",
        text(&o.stderr)
    );
    assert!(victim.join("keep").is_file());
    std::fs::write(&state_path, &good_state).unwrap();

    // An edited configuration is refused before the first step, naming what changed.
    let config_path = out.join("config.json");
    let mut config: Value = json(&config_path);
    config["loss"]["k"] = serde_json::json!(3);
    config["report_k"] = serde_json::json!(3);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let o = run(&["train", "--resume", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("loss.k") || err.contains("reports top-1..top-5"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&victim);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

#[test]
fn output_errors_are_reported_not_panics() {
    let out = scratch("full");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let o = bin()
        .args(mlp_args(out.to_str().unwrap(), &["--epochs", "1"]))
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("cannot write to standard output") && err.contains("the run finished"),
        "{err}"
    );
    assert!(out.join("results.json").is_file());
    let best = out.join("best-top1");
    for args in [
        vec!["eval", "--checkpoint", best.to_str().unwrap(), "--json"],
        vec!["eval", "--checkpoint", best.to_str().unwrap()],
    ] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let o = bin().args(&args).stdout(full).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            text(&o.stderr).contains("cannot write to standard output"),
            "{args:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// train/ of 4 classes x 8 PNGs of 40x40 noise (class in the red channel), val/ 2 per class.
/// The blue channel is the same everywhere: its standard deviation is 0, which must not make
/// the normalised inputs infinite.
fn write_folder(root: &Path) {
    use std::io::Write as _;
    let mut seed = 1u32;
    let mut next = || {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
        (seed >> 16) as u8
    };
    for (split, per_class) in [("train", 8), ("val", 2)] {
        for class in 0..4u8 {
            let dir = root.join(format!("{split}/c{class}"));
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..per_class {
                let pixels: Vec<u8> = (0..40 * 40)
                    .flat_map(|_| [class * 60, next(), 77])
                    .collect();
                let image = image::RgbImage::from_raw(40, 40, pixels).unwrap();
                let mut file = std::fs::File::create(dir.join(format!("{i}.png"))).unwrap();
                let mut bytes = Vec::new();
                image
                    .write_to(
                        &mut std::io::Cursor::new(&mut bytes),
                        image::ImageFormat::Png,
                    )
                    .unwrap();
                file.write_all(&bytes).unwrap();
            }
        }
    }
}

#[test]
fn folders_stream_skip_unreadable_images_on_request_and_eval_reads_one_split() {
    let data = scratch("folder-data");
    write_folder(&data);
    std::fs::write(data.join("train/c2/5.png"), b"not a png").unwrap();
    let out = scratch("folder-run");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "train",
            "--data",
            "folder",
            "--data-dir",
            data.to_str().unwrap(),
            "--model",
            "mlp",
            "--image-size",
            "36",
            "--crop",
            "32",
            "--valid-size",
            "4",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--k",
            "2",
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let o = bin().args(args(&[])).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("c2/5.png: cannot decode image") && err.lines().count() == 1,
        "{err}"
    );
    assert!(!out.join("results.json").exists());
    let _ = std::fs::remove_dir_all(&out);

    let o = bin().args(args(&["--skip-unreadable"])).output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stdout = text(&o.stdout);
    assert!(
        stdout.contains("(4 classes; 28 train / 4 valid / 8 test"),
        "{stdout}"
    );
    let history = json(&out.join("metrics.json"));
    let skipped: u64 = history
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["skipped"].as_u64().unwrap())
        .sum();
    // Unless the broken file was drawn into the validation images, each epoch skips it.
    assert!(skipped == 2 || skipped == 0, "{history}");

    // eval of the test split lists only val/ (and train/'s class names): with the training
    // images gone it still works.
    for class in 0..4 {
        for entry in std::fs::read_dir(data.join(format!("train/c{class}"))).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
    }
    let best = out.join("best-top1");
    let o = run(&[
        "eval",
        "--checkpoint",
        best.to_str().unwrap(),
        "--k",
        "2",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let eval: Value = serde_json::from_str(&text(&o.stdout)).unwrap();
    assert_eq!(eval["images"], 8);
    assert_eq!(
        eval["metrics"]["accuracy"],
        results(&out)["best_top1"]["test"]["accuracy"]
    );
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&data);
}
