//! Standard output that reports its errors (a closed pipe, a full disk) instead of panicking as
//! `println!` does.

use std::io::Write;

/// Writes one line to standard output.
pub fn say(line: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write to standard output: {e}"))
}
