//! Reading labelled score vectors: JSON Lines (`{"scores": [...], "label": 3}`) or CSV
//! (`label,s0,s1,...`), one sample per line; lines may have different numbers of classes.

use clap::ValueEnum;
use serde::Deserialize;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// Input format of `loss` and `metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    /// One JSON object per line: {"scores": [...], "label": 3}.
    Jsonl,
    /// One sample per line: the label, then the scores, comma-separated.
    Csv,
}

/// One labelled sample and the (1-based) input line it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub line: usize,
    pub scores: Vec<f64>,
    pub label: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonSample {
    scores: Vec<f64>,
    label: usize,
}

/// Opens a file, or standard input for `None` or `-`.
pub fn open(path: Option<&Path>) -> Result<Box<dyn Read>, String> {
    match path {
        None => Ok(Box::new(std::io::stdin())),
        Some(p) if p.as_os_str() == "-" => Ok(Box::new(std::io::stdin())),
        Some(p) => std::fs::File::open(p)
            .map(|f| Box::new(f) as Box<dyn Read>)
            .map_err(|e| format!("cannot open {}: {e}", p.display())),
    }
}

fn parse_csv(text: &str) -> Result<(Vec<f64>, usize), String> {
    let mut fields = text.split(',').map(str::trim);
    let label_text = fields.next().unwrap_or("");
    let label = label_text
        .parse::<usize>()
        .map_err(|_| format!("label {label_text:?} is not a non-negative integer"))?;
    let scores = fields
        .enumerate()
        .map(|(i, f)| {
            f.parse::<f64>()
                .map_err(|_| format!("score {i} ({f:?}) is not a number"))
        })
        .collect::<Result<Vec<f64>, String>>()?;
    Ok((scores, label))
}

/// Parses every non-blank line; the first malformed line is an error naming it.
pub fn read_samples(reader: impl Read, format: InputFormat) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (i, line) in BufReader::new(reader).lines().enumerate() {
        let line_no = i + 1;
        let text = line.map_err(|e| format!("line {line_no}: cannot read input: {e}"))?;
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let (scores, label) = match format {
            InputFormat::Jsonl => serde_json::from_str::<JsonSample>(text)
                .map(|s| (s.scores, s.label))
                .map_err(|e| format!("line {line_no}: invalid JSON sample: {e}"))?,
            InputFormat::Csv => parse_csv(text).map_err(|e| format!("line {line_no}: {e}"))?,
        };
        if scores.is_empty() {
            return Err(format!("line {line_no}: no scores"));
        }
        out.push(Sample {
            line: line_no,
            scores,
            label,
        });
    }
    if out.is_empty() {
        return Err("no samples in input".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_formats_and_names_bad_lines() {
        let text = "{\"scores\": [1, 2.5, -3], \"label\": 1}\n\n{\"scores\":[0,0],\"label\":0}\n";
        let got = read_samples(text.as_bytes(), InputFormat::Jsonl).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            Sample {
                line: 1,
                scores: vec![1.0, 2.5, -3.0],
                label: 1
            }
        );
        assert_eq!(got[1].line, 3);
        let csv = read_samples("2, 0.5,1,2\n0,1,1\n".as_bytes(), InputFormat::Csv).unwrap();
        assert_eq!(csv[0].scores, vec![0.5, 1.0, 2.0]);
        assert_eq!(csv[0].label, 2);

        let err = read_samples("{\"scores\": [1]}\n".as_bytes(), InputFormat::Jsonl).unwrap_err();
        assert!(
            err.starts_with("line 1: invalid JSON sample") && err.contains("label"),
            "{err}"
        );
        let err = read_samples("ok\n".as_bytes(), InputFormat::Jsonl).unwrap_err();
        assert!(err.starts_with("line 1:"));
        let err = read_samples("1,2,x\n".as_bytes(), InputFormat::Csv).unwrap_err();
        assert_eq!(err, "line 1: score 1 (\"x\") is not a number");
        let err = read_samples(
            "{\"scores\":[1],\"label\":-1}".as_bytes(),
            InputFormat::Jsonl,
        )
        .unwrap_err();
        assert!(err.starts_with("line 1: invalid JSON sample"), "{err}");
        assert_eq!(
            read_samples("\n \n".as_bytes(), InputFormat::Csv).unwrap_err(),
            "no samples in input"
        );
        let err = read_samples("{\"scores\":[],\"label\":0}".as_bytes(), InputFormat::Jsonl);
        assert_eq!(err.unwrap_err(), "line 1: no scores");
    }
}
