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
    /// A NumPy .npy file of scores [batch, n] (float32 or float64) with --labels LABELS.npy
    /// (integers [batch]).
    Npy,
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

/// Labelled samples read from text a chunk at a time, so that memory is bounded by the chunk,
/// not by the input.
pub struct Samples<R: Read> {
    lines: std::io::Lines<BufReader<R>>,
    format: InputFormat,
    line_no: usize,
    /// A sample read but not yet returned (it did not fit the last chunk).
    pending: Option<Sample>,
    seen: usize,
}

impl<R: Read> Samples<R> {
    /// A reader of JSON Lines or CSV (not `Npy`, which is read in place by `npy`).
    pub fn new(reader: R, format: InputFormat) -> Self {
        Samples {
            lines: BufReader::new(reader).lines(),
            format,
            line_no: 0,
            pending: None,
            seen: 0,
        }
    }

    /// The next samples, holding about `max_scores` scores (at least one sample); empty at the
    /// end. The first malformed line is an error naming it; "no samples in input" if the whole
    /// input had none.
    pub fn next_chunk(&mut self, max_scores: usize) -> Result<Vec<Sample>, String> {
        let mut out: Vec<Sample> = self.pending.take().into_iter().collect();
        let mut scores: usize = out.iter().map(|s| s.scores.len()).sum();
        for line in self.lines.by_ref() {
            self.line_no += 1;
            let line_no = self.line_no;
            let text = line.map_err(|e| format!("line {line_no}: cannot read input: {e}"))?;
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let (values, label) = match self.format {
                InputFormat::Jsonl => serde_json::from_str::<JsonSample>(text)
                    .map(|s| (s.scores, s.label))
                    .map_err(|e| format!("line {line_no}: invalid JSON sample: {e}"))?,
                InputFormat::Csv => parse_csv(text).map_err(|e| format!("line {line_no}: {e}"))?,
                InputFormat::Npy => return Err("a .npy file is not read line by line".into()),
            };
            if values.is_empty() {
                return Err(format!("line {line_no}: no scores"));
            }
            self.seen += 1;
            let sample = Sample {
                line: line_no,
                scores: values,
                label,
            };
            if !out.is_empty() && scores + sample.scores.len() > max_scores {
                self.pending = Some(sample);
                return Ok(out);
            }
            scores += sample.scores.len();
            out.push(sample);
        }
        if self.seen == 0 {
            return Err("no samples in input".into());
        }
        Ok(out)
    }
}

/// Every sample of the input at once (the tests).
#[cfg(test)]
pub fn read_samples(reader: impl Read, format: InputFormat) -> Result<Vec<Sample>, String> {
    let mut samples = Samples::new(reader, format);
    let mut out = Vec::new();
    loop {
        let chunk = samples.next_chunk(usize::MAX)?;
        if chunk.is_empty() {
            return Ok(out);
        }
        out.extend(chunk);
    }
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

    #[test]
    fn chunks_hold_a_bounded_number_of_scores() {
        let text: String = (0..10)
            .map(|i| format!("{{\"scores\":[1,2,3],\"label\":{}}}\n", i % 3))
            .collect();
        let mut reader = Samples::new(text.as_bytes(), InputFormat::Jsonl);
        let mut sizes = Vec::new();
        let mut lines = Vec::new();
        loop {
            let chunk = reader.next_chunk(7).unwrap();
            if chunk.is_empty() {
                break;
            }
            sizes.push(chunk.len());
            lines.extend(chunk.iter().map(|s| s.line));
        }
        assert_eq!(sizes, vec![2; 5]);
        assert_eq!(lines, (1..=10).collect::<Vec<_>>());
        // A sample larger than the bound still comes, alone.
        let mut reader = Samples::new("0,1,2,3,4\n0,1\n".as_bytes(), InputFormat::Csv);
        assert_eq!(reader.next_chunk(2).unwrap().len(), 1);
        assert_eq!(reader.next_chunk(2).unwrap().len(), 1);
        assert!(reader.next_chunk(2).unwrap().is_empty());
    }
}
