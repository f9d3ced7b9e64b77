//! NumPy `.npy` files: the header read and checked (element type, byte order, C order, shape,
//! and a file size that matches the shape) before anything is allocated, the data read a chunk
//! at a time, and outputs written with a version 1.0 header. Only little-endian, C-order arrays
//! of the element types below are accepted.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Element types this tool reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F64,
    /// Signed or unsigned integers of 1, 2, 4 or 8 bytes (labels).
    Int {
        bytes: usize,
        signed: bool,
    },
}

impl Dtype {
    fn parse(descr: &str) -> Result<Self, String> {
        let (order, kind) = descr.split_at(descr.len().min(1));
        let little = match order {
            "<" | "|" => true,
            ">" => false,
            "=" => cfg!(target_endian = "little"),
            _ => return Err(format!("dtype {descr:?} is not understood")),
        };
        let dtype = match kind {
            "f4" => Dtype::F32,
            "f8" => Dtype::F64,
            "i1" | "i2" | "i4" | "i8" | "u1" | "u2" | "u4" | "u8" => Dtype::Int {
                bytes: kind[1..].parse().unwrap_or(8),
                signed: kind.starts_with('i'),
            },
            _ => {
                return Err(format!(
                    "dtype {descr:?} is not supported (float32, float64 or integers)"
                ))
            }
        };
        let single_byte = matches!(dtype, Dtype::Int { bytes: 1, .. });
        if !little && !single_byte {
            return Err(format!(
                "dtype {descr:?} is big-endian: convert with arr.astype(arr.dtype.newbyteorder('<'))"
            ));
        }
        Ok(dtype)
    }

    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F64 => 8,
            Dtype::Int { bytes, .. } => bytes,
        }
    }
}

/// An opened `.npy` file: element type, shape, and where its data starts.
pub struct Array {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    file: File,
    path: std::path::PathBuf,
    offset: u64,
}

const MAGIC: &[u8] = b"\x93NUMPY";
/// Headers longer than this are refused (numpy writes under 200 bytes).
const MAX_HEADER: usize = 1 << 16;

/// The value of `'key':` in a numpy header dict, up to the next top-level comma or the end.
fn field<'a>(header: &'a str, key: &str) -> Result<&'a str, String> {
    let at = header
        .find(&format!("'{key}'"))
        .ok_or_else(|| format!("header has no '{key}'"))?;
    let rest = header[at + key.len() + 2..].trim_start();
    let rest = rest
        .strip_prefix(':')
        .ok_or_else(|| format!("header: no ':' after '{key}'"))?
        .trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')').map(|i| i + 1)
    } else {
        rest.find([',', '}'])
    }
    .ok_or_else(|| format!("header: '{key}' has no end"))?;
    Ok(rest[..end].trim())
}

/// Parses the header bytes after the magic (`bytes` is the whole file).
fn parse_header(bytes: &[u8]) -> Result<(Dtype, Vec<usize>, usize), String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not a .npy file (no \\x93NUMPY magic)".into());
    }
    let (len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated header".into());
            }
            let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (usize::try_from(len).unwrap_or(usize::MAX), 12)
        }
        v => return Err(format!("format version {v} is not supported")),
    };
    if len > MAX_HEADER {
        return Err(format!("header of {len} bytes is too long"));
    }
    let end = start + len;
    let header = bytes.get(start..end).ok_or("truncated header")?;
    let header = std::str::from_utf8(header).map_err(|_| "header is not text")?;
    let descr = field(header, "descr")?.trim_matches(|c| c == '\'' || c == '"');
    let dtype = Dtype::parse(descr)?;
    match field(header, "fortran_order")? {
        "False" => {}
        "True" => {
            return Err(
                "array is in Fortran order: write it with np.ascontiguousarray first".into(),
            )
        }
        other => return Err(format!("fortran_order {other:?} is not understood")),
    }
    let shape_text = field(header, "shape")?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("shape {shape_text:?} is not a tuple"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("shape {shape_text:?} is not a tuple of sizes"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((dtype, shape, end))
}

impl Array {
    /// Opens and checks `path`: header, and a data size that matches the shape exactly.
    pub fn open(path: &Path) -> Result<Self, String> {
        let what = |e: String| format!("{}: {e}", path.display());
        let mut file = File::open(path).map_err(|e| what(format!("cannot open: {e}")))?;
        let size = file
            .metadata()
            .map_err(|e| what(format!("cannot read: {e}")))?
            .len();
        let mut head = Vec::new();
        (&mut file)
            .take((MAX_HEADER + 12) as u64)
            .read_to_end(&mut head)
            .map_err(|e| what(format!("cannot read: {e}")))?;
        let (dtype, shape, offset) = parse_header(&head).map_err(what)?;
        let count = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
            .and_then(|c| c.checked_mul(dtype.size() as u64))
            .filter(|&c| usize::try_from(c).is_ok())
            .ok_or_else(|| what(format!("shape {shape:?} is too large")))?;
        let have = size - offset as u64;
        if have != count {
            return Err(what(format!(
                "shape {shape:?} needs {count} data bytes, the file has {have} (truncated or \
                 not what the header says)"
            )));
        }
        Ok(Array {
            dtype,
            shape,
            file,
            path: path.to_path_buf(),
            offset: offset as u64,
        })
    }

    /// The data bytes of elements `from..to` (flat, C order), read from the file.
    fn bytes(&self, from: usize, to: usize) -> Result<Vec<u8>, String> {
        let size = self.dtype.size();
        let mut buf = vec![0u8; (to - from) * size];
        let mut file = &self.file;
        file.seek(SeekFrom::Start(self.offset + (from * size) as u64))
            .and_then(|_| file.read_exact(&mut buf))
            .map_err(|e| format!("{}: cannot read: {e}", self.path.display()))?;
        Ok(buf)
    }

    /// Elements `from..to` as floats (the array must be float32 or float64).
    pub fn floats<T: FromLe>(&self, from: usize, to: usize) -> Result<Vec<T>, String> {
        Ok(self
            .bytes(from, to)?
            .chunks_exact(self.dtype.size())
            .map(T::from_le)
            .collect())
    }

    /// Every element as a label, checked to be a non-negative integer.
    pub fn labels(&self) -> Result<Vec<usize>, String> {
        let Dtype::Int { bytes, signed } = self.dtype else {
            return Err("labels must be integers".into());
        };
        let total = self.shape.iter().product();
        self.bytes(0, total)?
            .chunks_exact(bytes)
            .enumerate()
            .map(|(i, b)| {
                let mut le = [0u8; 8];
                le[..bytes].copy_from_slice(b);
                let negative = signed && b[bytes - 1] & 0x80 != 0;
                if negative {
                    return Err(format!("label {i} is negative"));
                }
                usize::try_from(u64::from_le_bytes(le))
                    .map_err(|_| format!("label {i} is out of range"))
            })
            .collect()
    }
}

/// Little-endian decoding of the float types.
pub trait FromLe: Sized {
    fn from_le(bytes: &[u8]) -> Self;
    /// The numpy descr of this type.
    const DESCR: &'static str;
    fn to_le(self) -> Vec<u8>;
}

impl FromLe for f32 {
    fn from_le(b: &[u8]) -> Self {
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    const DESCR: &'static str = "<f4";
    fn to_le(self) -> Vec<u8> {
        self.to_le_bytes().to_vec()
    }
}

impl FromLe for f64 {
    fn from_le(b: &[u8]) -> Self {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        f64::from_le_bytes(a)
    }
    const DESCR: &'static str = "<f8";
    fn to_le(self) -> Vec<u8> {
        self.to_le_bytes().to_vec()
    }
}

/// A version 1.0 header for a C-order array of `descr` and `shape`, padded to 64 bytes.
pub fn header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims = match shape {
        [one] => format!("{one},"),
        _ => shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let mut text = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}");
    let unpadded = MAGIC.len() + 4 + text.len() + 1;
    text.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    text.push('\n');
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(text.len() as u16).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

/// An output `.npy` file written through a temporary name in its directory and renamed into
/// place, durably, by [`Writer::finish`]; dropped unfinished, it leaves nothing behind.
pub struct Writer {
    file: std::io::BufWriter<File>,
    tmp: std::path::PathBuf,
    path: std::path::PathBuf,
    done: bool,
}

impl Writer {
    pub fn create(path: &Path, descr: &str, shape: &[usize]) -> Result<Self, String> {
        let name = path
            .file_name()
            .ok_or_else(|| format!("{}: not a file name", path.display()))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp{}", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let file =
            File::create(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        let mut w = Writer {
            file: std::io::BufWriter::new(file),
            tmp,
            path: path.to_path_buf(),
            done: false,
        };
        w.write(&header(descr, shape))?;
        Ok(w)
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.file
            .write_all(bytes)
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }

    pub fn finish(mut self) -> Result<(), String> {
        let fail = |e: std::io::Error| format!("cannot write {}: {e}", self.path.display());
        self.file.flush().map_err(fail)?;
        self.file.get_ref().sync_all().map_err(fail)?;
        std::fs::rename(&self.tmp, &self.path).map_err(fail)?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_bad_ones_are_named() {
        let h = header("<f4", &[2, 3]);
        assert_eq!(h.len() % 64, 0);
        let mut file = h.clone();
        file.extend(std::iter::repeat_n(0u8, 24));
        assert_eq!(
            parse_header(&file).unwrap(),
            (Dtype::F32, vec![2, 3], h.len())
        );
        assert_eq!(parse_header(&header("<i8", &[5])).unwrap().1, vec![5]);
        let text = |h: &str| {
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(&[1, 0]);
            b.extend_from_slice(&(h.len() as u16).to_le_bytes());
            b.extend_from_slice(h.as_bytes());
            parse_header(&b).unwrap_err()
        };
        assert!(
            text("{'descr': '>f8', 'fortran_order': False, 'shape': (2, 2), }")
                .contains("big-endian")
        );
        assert!(
            text("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }").contains("Fortran")
        );
        assert!(
            text("{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }")
                .contains("not supported")
        );
        assert!(
            text("{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }")
                .contains("tuple of sizes")
        );
        assert!(text("{'descr': '<f4', 'fortran_order': False}").contains("no 'shape'"));
        assert!(parse_header(b"\x93NUMPX\x01\x00\x00\x00")
            .unwrap_err()
            .contains("magic"));
        assert!(parse_header(b"\x93NUMPY\x01\x00\xff\x00{'de")
            .unwrap_err()
            .contains("truncated"));
        assert!(parse_header(b"\x93NUMPY\x09\x00\x00\x00")
            .unwrap_err()
            .contains("version 9"));
    }
}
