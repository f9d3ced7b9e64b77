//! The `smooth-topk` binary end to end: outputs agree with the library, errors are one line
//! naming the input line, and the bench writes its JSON records.

use smooth_topk::{Loss, SmoothTopkSvm};
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_smooth-topk"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[test]
fn loss_lines_round_trip_and_match_the_library() {
    let input = "{\"scores\": [2.0, 0.5, 1.0, -1.0], \"label\": 2}\n\n\
                 {\"scores\": [0.1, 3.0, 0.2, 7.5, -2.25, 1e-3], \"label\": 5}\n";
    let o = run(
        &[
            "loss",
            "--k",
            "2",
            "--tau",
            "0.5",
            "--alpha",
            "1",
            "--precision",
            "f64",
        ],
        input,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let loss = SmoothTopkSvm::new(2, 0.5, 1.0).unwrap();
    let rows: [(&[f64], usize); 2] = [
        (&[2.0, 0.5, 1.0, -1.0], 2),
        (&[0.1, 3.0, 0.2, 7.5, -2.25, 1e-3], 5),
    ];
    for ((scores, label), line) in rows.iter().zip(&lines) {
        let n = scores.len();
        let mut l = [0.0];
        let mut g = vec![0.0; n];
        loss.loss_and_grad_per_sample(scores, &[*label], n, &mut l, &mut g)
            .unwrap();
        // Printed with round-trip precision: parsing gives back the exact f64.
        assert_eq!(line["loss"].as_f64().unwrap(), l[0]);
        let got: Vec<f64> = line["grad"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(got, g);
    }
    // float32 output parses back to the f32 results exactly.
    let o = run(&["loss", "--k", "2", "--tau", "0.5"], input);
    let first: serde_json::Value =
        serde_json::from_str(stdout(&o).lines().next().unwrap()).unwrap();
    let s32 = [2.0f32, 0.5, 1.0, -1.0];
    let mut l = [0.0f32];
    let mut g = [0.0f32; 4];
    loss.loss_and_grad_per_sample(&s32, &[2], 4, &mut l, &mut g)
        .unwrap();
    assert_eq!(first["loss"].as_f64().unwrap() as f32, l[0]);
    assert_eq!(first["grad"][1].as_f64().unwrap() as f32, g[1]);
}

#[test]
fn f64_scores_are_parsed_exactly() {
    // The hard top-1 loss with alpha = 0 returns s_other - s_y: the parsed value itself. The
    // default serde_json float parser is off by one ulp on inputs like this one.
    let o = run(
        &[
            "loss",
            "--loss",
            "hard-svm",
            "--k",
            "1",
            "--alpha",
            "0",
            "--precision",
            "f64",
        ],
        "{\"scores\": [42.247710745128316, 0], \"label\": 1}",
    );
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["loss"].as_f64().unwrap(), 42.247710745128316);
}

#[test]
fn csv_input_and_other_losses() {
    let o = run(
        &[
            "loss",
            "--format",
            "csv",
            "--loss",
            "hard-svm",
            "--k",
            "2",
            "--precision",
            "f64",
        ],
        "2,2,0.5,1,-1\n",
    );
    assert!(o.status.success());
    assert_eq!(
        stdout(&o).trim(),
        "{\"loss\":0.75,\"grad\":[0.0,0.5,-0.5,0.0]}"
    );
    let o = run(
        &["loss", "--loss", "ce", "--precision", "f64"],
        "{\"scores\":[0,0],\"label\":0}",
    );
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!((v["loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() < 1e-15);
}

#[test]
fn the_fields_other_losses_have_cli_names() {
    let loss_of = |args: &[&str], input: &str| -> f64 {
        let mut all = vec!["loss", "--precision", "f64"];
        all.extend_from_slice(args);
        let o = run(&all, input);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        v["loss"].as_f64().unwrap()
    };
    // The largest competitor (3) is left out: ln(1 + e^1 + e^2).
    let row = "{\"scores\":[0,3,1,2],\"label\":0}";
    let want = (1.0 + 1f64.exp() + 2f64.exp()).ln();
    assert!((loss_of(&["--loss", "entr", "--k", "2"], row) - want).abs() < 1e-14);
    // Without noise the hinge max(0, 1 + s_[2] - s_y) with s_[2] = 1.
    let row = "{\"scores\":[2,0.5,1,-1],\"label\":1}";
    let args = ["--loss", "noised", "--k", "1", "--epsilon", "0"];
    assert!((loss_of(&args, row) - 1.5).abs() < 1e-15);
    // p_k = [1] with the softmax top-1 and no floor is cross-entropy.
    let args = ["--loss", "topk-ce", "--p-k", "1", "--floor", "0"];
    let ce = (2f64.exp() + 0.5f64.exp() + 1f64.exp() + (-1f64).exp()).ln() - 0.5;
    assert!((loss_of(&args, row) - ce).abs() < 1e-14);
    let o = run(&["loss", "--loss", "topk-ce", "--p-k", "0.3,0.3"], row);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("sum of p_k") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn errors_are_one_line_naming_the_input_line() {
    let cases: [(&[&str], &str, &str); 7] = [
        (
            &["loss"],
            "{\"scores\":[1,2,3,4,5,6],\"label\":0}\n{\"scores\":[1,2,3,4,5,6],\"label\":9}\n{\"scores\":[1],\"label\":0}\n",
            "line 2: label 9 is out of range",
        ),
        (
            &["loss", "--k", "3"],
            "{\"scores\":[1,2,3],\"label\":0}\n",
            "line 1: 3 scores is too few",
        ),
        (
            &["loss"],
            "{\"scores\":[1,2,3,4,5,6],\"label\":0}\nnot json\n",
            "line 2: invalid JSON sample",
        ),
        (&["loss", "--tau", "0"], "", "tau = 0 is invalid"),
        (&["loss", "--alpha", "-1"], "", "alpha = -1 is invalid"),
        (&["loss"], "\n", "no samples in input"),
        (
            &["metrics", "--k", "2"],
            "{\"scores\":[1e39,2],\"label\":0}\n{\"scores\":[1],\"label\":3}",
            "line 2: label 3 is out of range",
        ),
    ];
    for (args, input, want) in cases {
        let o = run(args, input);
        assert!(!o.status.success(), "{args:?}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(want), "{err} lacks {want}");
        assert!(stdout(&o).is_empty(), "nothing is printed half-way");
    }
    let o = run(&["loss"], "{\"scores\":[1e39,2,3,4,5,6],\"label\":0}");
    assert!(
        stderr(&o).contains("line 1: score 0 = 1e39 overflows"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn metrics_report_top_k_accuracy() {
    let input = "{\"scores\": [2.0, 0.5, 1.0, -1.0], \"label\": 2}\n{\"scores\": [0.1, 3.0, 0.2], \"label\": 1}\n";
    let o = run(&["metrics", "--k", "3", "--json"], input);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["samples"], 2);
    let acc: Vec<f64> = v["topk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["accuracy"].as_f64().unwrap())
        .collect();
    assert_eq!(acc, vec![0.5, 1.0, 1.0]);
}

/// `bench` on a small batch with the given extra flags: its stdout and JSON records.
fn bench_records(extra: &[&str], tag: &str) -> (String, Vec<serde_json::Value>) {
    let path = std::env::temp_dir().join(format!(
        "smooth-topk-bench-{}-{tag}.json",
        std::process::id()
    ));
    let mut args = vec![
        "bench",
        "--batch",
        "8",
        "--n",
        "20,50",
        "--tau",
        "1",
        "--min-time-ms",
        "1",
        "--threads",
        "2",
        "--json",
        path.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = run(&args, "");
    assert!(o.status.success(), "{}", stderr(&o));
    let records: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    std::fs::remove_file(&path).ok();
    (stdout(&o), records)
}

#[test]
fn bench_prints_tables_and_json_records() {
    let (out, records) = bench_records(&["--no-torch"], "plain");
    assert!(out.contains("svm ") && out.contains("copy ") && out.contains("ns/score"));
    assert!(out.contains("PyTorch: not timed (--no-torch)"));
    // 2 n x 2 thread counts x (6 losses x 2 passes + the copy floor).
    assert_eq!(records.len(), 52);
    for r in &records {
        let names = ["svm", "hard-svm", "ce", "entr", "noised", "topk-ce", "copy"];
        assert!(names.contains(&r["loss"].as_str().unwrap()));
        assert!(["forward", "forward+backward"].contains(&r["pass"].as_str().unwrap()));
        assert!(r["median_ms"].as_f64().unwrap() > 0.0);
        assert!(r["ns_per_score"].as_f64().unwrap() > 0.0);
        assert_eq!(r["batch"], 8);
    }
}

#[test]
fn bench_times_pytorch_on_the_same_scores_when_it_can() {
    let has_torch = std::process::Command::new("python3")
        .args(["-c", "import torch, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    let (out, records) = bench_records(&[], "torch");
    let torch: Vec<_> = records.iter().filter(|r| r["loss"] == "torch-ce").collect();
    if has_torch {
        // 2 n x 2 thread counts x 2 passes.
        assert_eq!(torch.len(), 8, "{out}");
        assert!(torch.iter().all(|r| r["median_ms"].as_f64().unwrap() > 0.0));
        assert!(out.contains("torch-ce ") && out.contains("scripts/bench_reference.py"));
    } else {
        assert!(
            torch.is_empty() && out.contains("PyTorch: not timed ("),
            "{out}"
        );
    }
    // A Python that does not exist is a note, not a failure.
    let (out, records) = bench_records(&["--python", "/nonexistent/python"], "missing");
    assert!(
        out.contains("PyTorch: not timed (cannot run /nonexistent/python"),
        "{out}"
    );
    assert!(records.iter().all(|r| r["loss"] != "torch-ce"));
}

#[test]
fn bench_refuses_sizes_and_scales_it_cannot_run() {
    for (args, needle) in [
        (&["bench", "--score-std", "nan"][..], "--score-std NaN"),
        (&["bench", "--score-std", "1e300"][..], "--score-std 1e300"),
        (
            &["bench", "--batch", "100000000000"][..],
            "more than 2^31 scores",
        ),
        (&["bench", "--threads", "0"][..], "must be positive"),
    ] {
        let o = run(args, "");
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = stderr(&o);
        assert!(
            err.contains(needle) && err.lines().count() == 1,
            "{args:?}: {err}"
        );
    }
}

#[test]
fn the_smooth_svm_has_one_name_with_the_old_one_as_an_alias() {
    let line = r#"{"scores": [2.0, 0.5, 1.0, -1.0], "label": 2}"#;
    let a = run(&["loss", "--loss", "svm", "--k", "2"], line);
    let b = run(&["loss", "--loss", "smooth-svm", "--k", "2"], line);
    assert!(a.status.success() && b.status.success());
    assert_eq!(stdout(&a), stdout(&b));
}

#[test]
fn extreme_k_flags_are_one_line_errors() {
    let line = r#"{"scores": [1.0, 2.0, 3.0], "label": 0}"#;
    for (args, needle) in [
        // k + 1 would wrap to 0 and pass the class check.
        (
            &["loss", "--k", "18446744073709551615"][..],
            "need at least 18446744073709551615",
        ),
        (
            &["loss", "--loss", "hard-svm", "--k", "18446744073709551615"][..],
            "k < n",
        ),
        // 800 GB of counters, allocated before.
        (
            &["metrics", "--k", "100000000000"][..],
            "more than the 3 classes",
        ),
    ] {
        let o = run(args, line);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = stderr(&o);
        assert!(
            err.contains(needle) && err.lines().count() == 1,
            "{args:?}: {err}"
        );
    }
    let o = run(&["metrics", "--k", "3"], line);
    assert!(o.status.success());
    assert!(stdout(&o).contains("top-3     1.0000  (1/1)"));
}

/// A .npy file written by hand (version 1.0 header), independent of the tool's own writer.
fn npy_bytes(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// The float32 payload of a .npy file the tool wrote (after its header).
fn npy_f32(path: &std::path::Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    bytes[10 + len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn npy_scores_give_the_same_losses_as_json_lines_and_bad_files_are_refused() {
    let dir = std::env::temp_dir().join(format!("smooth-topk-npy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = |name: &str| dir.join(name);
    let rows = [
        [0.5f32, -1.0, 2.0, 0.25],
        [1.0, 1.0, -0.5, 3.0],
        [0.0, 0.1, 0.2, 0.3],
    ];
    let labels = [2i64, 0, 3];
    let data: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(p("s.npy"), npy_bytes("<f4", "(3, 4)", &data)).unwrap();
    let label_bytes: Vec<u8> = labels.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(p("y.npy"), npy_bytes("<i8", "(3,)", &label_bytes)).unwrap();
    let s = |name: &str| p(name).to_str().unwrap().to_string();
    let npy_run = |scores: &str, extra: &[&str]| {
        let mut args = vec!["loss", "--k", "2", "--format", "npy"];
        let (sc, y) = (s(scores), s("y.npy"));
        args.extend([sc.as_str(), "--labels", y.as_str()]);
        args.extend_from_slice(extra);
        run(&args, "")
    };
    let (out_l, out_g) = (s("l.npy"), s("g.npy"));
    let o = npy_run("s.npy", &["--out-loss", &out_l, "--out-grad", &out_g]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text: String = rows
        .iter()
        .zip(labels)
        .map(|(r, y)| format!("{{\"scores\": {r:?}, \"label\": {y}}}\n"))
        .collect();
    let o = run(&["loss", "--k", "2"], &text);
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (losses, grads) = (npy_f32(&p("l.npy")), npy_f32(&p("g.npy")));
    assert_eq!((losses.len(), grads.len()), (3, 12));
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["loss"].as_f64().unwrap() as f32, losses[i]);
        for j in 0..4 {
            assert_eq!(line["grad"][j].as_f64().unwrap() as f32, grads[i * 4 + j]);
        }
    }
    let o = run(
        &[
            "metrics",
            "--format",
            "npy",
            &s("s.npy"),
            "--labels",
            &s("y.npy"),
            "--k",
            "4",
        ],
        "",
    );
    assert!(
        stdout(&o).contains("top-4     1.0000  (3/3)"),
        "{}",
        stdout(&o)
    );

    // Refused before any allocation or output: each is one line, and no output file appears.
    let bad = [
        (
            "trunc.npy",
            npy_bytes("<f4", "(3, 4)", &data[..40]),
            "truncated",
        ),
        (
            "huge.npy",
            npy_bytes("<f4", "(1099511627776, 1099511627776)", &data),
            "too large",
        ),
        (
            "wide.npy",
            npy_bytes("<f4", "(2, 6)", &data),
            "labels must have shape [2]",
        ),
        ("be.npy", npy_bytes(">f4", "(3, 4)", &data), "big-endian"),
        (
            "int.npy",
            npy_bytes("<i4", "(3, 4)", &data),
            "float32 or float64",
        ),
        (
            "flat.npy",
            npy_bytes("<f4", "(12,)", &data),
            "shape [batch, n]",
        ),
        ("junk.npy", b"not numpy at all".to_vec(), "magic"),
    ];
    let out = s("never.npy");
    for (name, bytes, needle) in bad {
        std::fs::write(p(name), bytes).unwrap();
        let o = npy_run(name, &["--out-loss", &out]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{name}");
        assert!(
            err.contains(needle) && err.lines().count() == 1,
            "{name}: {err}"
        );
        assert!(!p("never.npy").exists(), "{name}");
    }
    // A label out of range is found while computing: still no output file.
    let y_bad: Vec<u8> = [2i64, 0, 4].iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(p("y.npy"), npy_bytes("<i8", "(3,)", &y_bad)).unwrap();
    let o = npy_run("s.npy", &["--out-loss", &out]);
    assert!(
        stderr(&o).contains("sample 2: label 4 is out of range"),
        "{}",
        stderr(&o)
    );
    assert!(!p("never.npy").exists());
    let leftovers = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".tmp")
        })
        .count();
    assert_eq!(leftovers, 0);
    std::fs::remove_dir_all(&dir).ok();
}
