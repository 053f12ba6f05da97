//! A reader of GGUF model files (the llama.cpp format, versions 2 and 3): header, metadata of
//! every value type, tensor infos, alignment, and dequantization to `f32` of the tensor types
//! that SmolLM2's and Gemma 3's files use — F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K and Q6_K.
//! Any other type is a clear error naming the tensor and the type.
//!
//! Layout notes (from the format): all numbers are little-endian; strings are a `u64` length
//! and UTF-8 bytes; a tensor's dims are listed fastest-varying first (`[ne0, ne1]` is `ne1`
//! rows of `ne0` values, so a PyTorch `[out, in]` matrix is stored as `[in, out]`); tensor
//! offsets are relative to the data section, which starts at the first multiple of
//! `general.alignment` (default 32) after the tensor infos. Quantized tensors are rows of
//! blocks: 32 values per block for Q4_0/Q4_1/Q8_0, 256 per super-block for the K-quants.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use half::{bf16, f16};

/// Why a GGUF file could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufError(pub String);

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GgufError {}

fn err<T>(msg: impl Into<String>) -> Result<T, GgufError> {
    Err(GgufError(msg.into()))
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `u8`, `u16`, `u32`, `u64`.
    U(u64),
    /// `i8`, `i16`, `i32`, `i64`.
    I(i64),
    /// `f32`, `f64`.
    F(f64),
    /// `bool`.
    Bool(bool),
    /// A UTF-8 string.
    Str(String),
    /// An array (of one element type; nested arrays allowed).
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, when it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U(x) => Some(x),
            Value::I(x) => u64::try_from(x).ok(),
            _ => None,
        }
    }

    /// The value as a float (integers convert).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F(x) => Some(x),
            Value::U(x) => Some(x as f64),
            Value::I(x) => Some(x as f64),
            _ => None,
        }
    }

    /// The value as text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// The element types of GGUF tensors (ggml's type ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorType(pub u32);

impl TensorType {
    /// 32-bit float.
    pub const F32: TensorType = TensorType(0);
    /// 16-bit float.
    pub const F16: TensorType = TensorType(1);
    /// 4-bit, one scale per 32.
    pub const Q4_0: TensorType = TensorType(2);
    /// 4-bit, a scale and a minimum per 32.
    pub const Q4_1: TensorType = TensorType(3);
    /// 8-bit, one scale per 32.
    pub const Q8_0: TensorType = TensorType(8);
    /// 4-bit K-quant (super-blocks of 256 with 6-bit sub-block scales and minimums).
    pub const Q4_K: TensorType = TensorType(12);
    /// 6-bit K-quant (super-blocks of 256 with 8-bit sub-block scales).
    pub const Q6_K: TensorType = TensorType(14);
    /// bfloat16.
    pub const BF16: TensorType = TensorType(30);

    /// The name ggml gives the type.
    pub fn name(self) -> String {
        let known = [
            "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K", "Q4_K",
            "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS",
            "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16",
        ];
        known.get(self.0 as usize).map_or_else(|| format!("type {}", self.0), |s| (*s).to_owned())
    }

    /// `(values per block, bytes per block)` of the types this reader dequantizes.
    fn block(self) -> Option<(usize, usize)> {
        Some(match self {
            TensorType::F32 => (1, 4),
            TensorType::F16 | TensorType::BF16 => (1, 2),
            TensorType::Q4_0 => (32, 18),
            TensorType::Q4_1 => (32, 20),
            TensorType::Q8_0 => (32, 34),
            TensorType::Q4_K => (256, 144),
            TensorType::Q6_K => (256, 210),
            _ => return None,
        })
    }
}

/// Where a tensor lies in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Its name (`blk.0.attn_q.weight`, …).
    pub name: String,
    /// Dims, fastest-varying first.
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: TensorType,
    /// Byte offset from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }

    /// Whether the tensor has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A GGUF file read into memory.
pub struct Gguf {
    /// Format version (2 or 3).
    pub version: u32,
    /// The metadata, by key.
    pub metadata: BTreeMap<String, Value>,
    /// The tensors, in file order.
    pub tensors: Vec<TensorInfo>,
    bytes: Vec<u8>,
    data_start: usize,
}

impl fmt::Debug for Gguf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gguf")
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// A little-endian cursor over the file's bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], GgufError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return err(format!("truncated file: wanted {n} bytes at offset {}", self.at));
        };
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn len(&mut self, what: &str) -> Result<usize, GgufError> {
        let n = self.u64()?;
        // Every element takes at least one byte, so a count beyond the file is corrupt.
        if n > (self.bytes.len() - self.at) as u64 {
            return err(format!("{what} count {n} at offset {} exceeds the file", self.at - 8));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<String, GgufError> {
        let n = self.len("string length")?;
        let at = self.at;
        String::from_utf8(self.take(n)?.to_vec()).or_else(|_| err(format!("string at offset {at} is not UTF-8")))
    }

    fn value(&mut self, ty: u32, depth: usize) -> Result<Value, GgufError> {
        Ok(match ty {
            0 => Value::U(u64::from(self.array::<1>()?[0])),
            1 => Value::I(i64::from(i8::from_le_bytes(self.array()?))),
            2 => Value::U(u64::from(u16::from_le_bytes(self.array()?))),
            3 => Value::I(i64::from(i16::from_le_bytes(self.array()?))),
            4 => Value::U(u64::from(self.u32()?)),
            5 => Value::I(i64::from(i32::from_le_bytes(self.array()?))),
            6 => Value::F(f64::from(f32::from_le_bytes(self.array()?))),
            7 => match self.array::<1>()?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return err(format!("bool value {b} at offset {}", self.at - 1)),
            },
            8 => Value::Str(self.string()?),
            9 => {
                if depth > 8 {
                    return err("arrays nested deeper than 8 levels");
                }
                let elem = self.u32()?;
                let n = self.len("array")?;
                let mut items = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    items.push(self.value(elem, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U(self.u64()?),
            11 => Value::I(i64::from_le_bytes(self.array()?)),
            12 => Value::F(f64::from_le_bytes(self.array()?)),
            _ => return err(format!("unknown metadata value type {ty} at offset {}", self.at - 4)),
        })
    }
}

impl Gguf {
    /// Reads a GGUF file.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let bytes = std::fs::read(path).map_err(|e| GgufError(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(bytes).map_err(|e| GgufError(format!("{}: {e}", path.display())))
    }

    /// Parses the bytes of a GGUF file.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, GgufError> {
        let mut c = Cursor { bytes: &bytes, at: 0 };
        if c.take(4).ok() != Some(b"GGUF".as_slice()) {
            return err("not a GGUF file (the magic bytes are not `GGUF`)");
        }
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            return err(format!("GGUF version {version} is not supported (2 and 3 are)"));
        }
        let n_tensors = c.len("tensor")?;
        let n_kv = c.len("metadata")?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string()?;
            let ty = c.u32()?;
            let value = c.value(ty, 0).map_err(|e| GgufError(format!("metadata `{key}`: {e}")))?;
            metadata.insert(key, value);
        }
        let mut tensors = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = c.string()?;
            let n_dims = c.u32()?;
            if n_dims > 4 {
                return err(format!("tensor `{name}` has {n_dims} dims (at most 4)"));
            }
            let dims = (0..n_dims).map(|_| c.u64()).collect::<Result<Vec<_>, _>>()?;
            let ty = TensorType(c.u32()?);
            let offset = c.u64()?;
            tensors.push(TensorInfo { name, dims, ty, offset });
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => v
                .as_u64()
                .filter(|a| a.is_power_of_two())
                .ok_or_else(|| GgufError(format!("general.alignment {v:?} is not a power of two")))?
                as usize,
        };
        let data_start = c.at.div_ceil(alignment) * alignment;
        let gguf = Gguf { version, metadata, tensors, bytes, data_start };
        for t in &gguf.tensors {
            if let Some((per, size)) = t.ty.block() {
                let n = t.len();
                if !n.is_multiple_of(per) {
                    return err(format!("tensor `{}` has {n} values, not a multiple of its block of {per}", t.name));
                }
                let end = gguf.data_start as u64 + t.offset + (n / per * size) as u64;
                if end > gguf.bytes.len() as u64 {
                    return err(format!("tensor `{}` runs past the end of the file", t.name));
                }
            }
        }
        Ok(gguf)
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// A required unsigned metadata value.
    pub fn u64(&self, key: &str) -> Result<u64, GgufError> {
        self.get(key).and_then(Value::as_u64).ok_or_else(|| GgufError(format!("metadata `{key}` is missing")))
    }

    /// A required float metadata value.
    pub fn f64(&self, key: &str) -> Result<f64, GgufError> {
        self.get(key).and_then(Value::as_f64).ok_or_else(|| GgufError(format!("metadata `{key}` is missing")))
    }

    /// A required string metadata value.
    pub fn str(&self, key: &str) -> Result<&str, GgufError> {
        self.get(key).and_then(Value::as_str).ok_or_else(|| GgufError(format!("metadata `{key}` is missing")))
    }

    /// A required array of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        match self.get(key) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().ok_or_else(|| GgufError(format!("metadata `{key}` holds a non-string"))))
                .collect(),
            _ => err(format!("metadata `{key}` is missing or not an array")),
        }
    }

    /// The info of a tensor.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// A tensor's values as `f32`, row-major with its dims reversed (`[ne1, ne0]`: PyTorch
    /// order).
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>, GgufError> {
        let t = self.tensor(name).ok_or_else(|| GgufError(format!("the file has no tensor `{name}`")))?;
        let Some((per, size)) = t.ty.block() else {
            return err(format!(
                "tensor `{name}` has type {}, which Ocean cannot dequantize (supported: F32, F16, BF16, Q4_0, Q4_1, \
                 Q8_0, Q4_K, Q6_K)",
                t.ty.name()
            ));
        };
        let start = self.data_start + t.offset as usize;
        let raw = &self.bytes[start..start + t.len() / per * size];
        dequantize(t.ty, raw, t.len())
    }
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Dequantizes `n` values of type `ty` stored in `raw`.
pub fn dequantize(ty: TensorType, raw: &[u8], n: usize) -> Result<Vec<f32>, GgufError> {
    let Some((per, size)) = ty.block() else {
        return err(format!("type {} cannot be dequantized", ty.name()));
    };
    if !n.is_multiple_of(per) || raw.len() != n / per * size {
        return err(format!("{} bytes do not hold {n} values of type {}", raw.len(), ty.name()));
    }
    let mut out = Vec::with_capacity(n);
    for block in raw.chunks_exact(size) {
        match ty {
            TensorType::F32 => out.push(f32::from_le_bytes(block.try_into().expect("4 bytes"))),
            TensorType::F16 => out.push(f16_at(block, 0)),
            TensorType::BF16 => out.push(bf16::from_le_bytes([block[0], block[1]]).to_f32()),
            TensorType::Q8_0 => {
                let d = f16_at(block, 0);
                out.extend(block[2..].iter().map(|&q| d * f32::from(q as i8)));
            }
            TensorType::Q4_0 | TensorType::Q4_1 => {
                // Low nibbles are values 0..16, high nibbles 16..32.
                let d = f16_at(block, 0);
                let (m, qs) = if ty == TensorType::Q4_1 { (f16_at(block, 2), &block[4..]) } else { (0.0, &block[2..]) };
                let offset = if ty == TensorType::Q4_0 { 8.0 } else { 0.0 };
                out.extend(qs.iter().map(|&q| d * (f32::from(q & 0xF) - offset) + m));
                out.extend(qs.iter().map(|&q| d * (f32::from(q >> 4) - offset) + m));
            }
            TensorType::Q4_K => dequantize_q4_k(block, &mut out),
            TensorType::Q6_K => dequantize_q6_k(block, &mut out),
            _ => unreachable!("block() covers the supported types"),
        }
    }
    Ok(out)
}

/// The 6-bit scale and minimum of sub-block `j` (of 8) packed in Q4_K's 12 scale bytes.
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    let (d, m) = if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    };
    (f32::from(d), f32::from(m))
}

/// Q4_K super-block (144 bytes): `d` f16, `dmin` f16, 12 bytes of packed 6-bit scales and
/// minimums for 8 sub-blocks of 32, 128 bytes of nibbles. Each 32 bytes of nibbles hold two
/// sub-blocks: low nibbles first, then high nibbles; value = d·scale·q − dmin·min.
fn dequantize_q4_k(block: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(block, 0);
    let dmin = f16_at(block, 2);
    let scales = &block[4..16];
    let qs = &block[16..144];
    for (pair, q) in qs.chunks_exact(32).enumerate() {
        let (s1, m1) = scale_min_k4(2 * pair, scales);
        let (s2, m2) = scale_min_k4(2 * pair + 1, scales);
        out.extend(q.iter().map(|&x| d * s1 * f32::from(x & 0xF) - dmin * m1));
        out.extend(q.iter().map(|&x| d * s2 * f32::from(x >> 4) - dmin * m2));
    }
}

/// Q6_K super-block (210 bytes): 128 bytes of low nibbles `ql`, 64 bytes of high 2-bit pairs
/// `qh`, 16 signed 8-bit scales (one per 16 values), `d` f16. Two halves of 128 values; in each,
/// value `l + 32·k` (k = 0..4) takes its low 4 bits from `ql` (bytes l or l+32, low or high
/// nibble) and its high 2 bits from `qh[l] >> 2k`, minus 32, times d·scale.
fn dequantize_q6_k(block: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(block, 208);
    let start = out.len();
    out.resize(start + 256, 0.0);
    let y = &mut out[start..];
    for half in 0..2 {
        let ql = &block[64 * half..64 * half + 64];
        let qh = &block[128 + 32 * half..128 + 32 * half + 32];
        let sc = &block[192 + 8 * half..192 + 8 * half + 8];
        for l in 0..32 {
            let is = l / 16;
            let q = [
                (ql[l] & 0xF) | ((qh[l] & 3) << 4),
                (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4),
                (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
            ];
            for (k, &qk) in q.iter().enumerate() {
                let scale = f32::from(sc[is + 2 * k] as i8);
                y[128 * half + l + 32 * k] = d * scale * (f32::from(qk) - 32.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q8_0_and_q4_blocks_dequantize_by_hand() {
        // Q8_0: d = 0.5, values -128..=127 stepping.
        let mut b = h(0.5).to_vec();
        let qs: Vec<i8> = (0..32).map(|i| (i * 7 - 100) as i8).collect();
        b.extend(qs.iter().map(|&q| q as u8));
        let got = dequantize(TensorType::Q8_0, &b, 32).unwrap();
        assert_eq!(got, qs.iter().map(|&q| 0.5 * f32::from(q)).collect::<Vec<_>>());

        // Q4_1: d = 0.25, m = -1; byte j holds value j (low) and value j+16 (high).
        let mut b = [h(0.25), h(-1.0)].concat();
        b.extend((0..16u8).map(|j| (j % 16) | ((15 - j) << 4)));
        let got = dequantize(TensorType::Q4_1, &b, 32).unwrap();
        for j in 0..16 {
            assert_eq!(got[j], 0.25 * j as f32 - 1.0);
            assert_eq!(got[j + 16], 0.25 * (15 - j) as f32 - 1.0);
        }

        // Q4_0: d = 2, centred on 8.
        let mut b = h(2.0).to_vec();
        b.extend([0x8F_u8; 16]);
        let got = dequantize(TensorType::Q4_0, &b, 32).unwrap();
        assert!(got[..16].iter().all(|&x| x == 14.0) && got[16..].iter().all(|&x| x == 0.0));
    }

    #[test]
    fn float_types_dequantize() {
        let b: Vec<u8> = [1.5f32, -2.25].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(dequantize(TensorType::F32, &b, 2).unwrap(), vec![1.5, -2.25]);
        let b = [h(0.125), h(-3.0)].concat();
        assert_eq!(dequantize(TensorType::F16, &b, 2).unwrap(), vec![0.125, -3.0]);
        let b = [bf16::from_f32(6.5).to_le_bytes(), bf16::from_f32(-0.5).to_le_bytes()].concat();
        assert_eq!(dequantize(TensorType::BF16, &b, 2).unwrap(), vec![6.5, -0.5]);
    }

    #[test]
    fn k_quant_blocks_dequantize_by_hand() {
        // Q4_K: d = 1, dmin = 0.5; sub-block j has scale j+1 and min 2j (j < 4 in the low 6
        // bits; j ≥ 4 split across the low nibbles of bytes 8..12 and the top bits of 0..8).
        let (sc, mn): (Vec<u8>, Vec<u8>) = ((1..=8).collect(), (0..8).map(|j| 2 * j + 40).collect());
        let mut packed = [0u8; 12];
        for j in 0..4 {
            packed[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            packed[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6);
            packed[j + 8] = (sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4);
        }
        for j in 0..8 {
            let (s, m) = scale_min_k4(j, &packed);
            assert_eq!((s, m), (f32::from(sc[j]), f32::from(mn[j])), "sub-block {j}");
        }
        let mut b = [h(1.0), h(0.5)].concat();
        b.extend(packed);
        b.extend((0..128).map(|i| ((i % 16) as u8) | (((i / 8 % 16) as u8) << 4)));
        let got = dequantize(TensorType::Q4_K, &b, 256).unwrap();
        for pair in 0..4 {
            for l in 0..32 {
                let i = 32 * pair + l;
                let lo = f32::from((i % 16) as u8);
                let hi = f32::from((i / 8 % 16) as u8);
                let (s1, m1) = (f32::from(sc[2 * pair]), f32::from(mn[2 * pair]));
                let (s2, m2) = (f32::from(sc[2 * pair + 1]), f32::from(mn[2 * pair + 1]));
                assert_eq!(got[64 * pair + l], s1 * lo - 0.5 * m1);
                assert_eq!(got[64 * pair + 32 + l], s2 * hi - 0.5 * m2);
            }
        }

        // Q6_K: build from known 6-bit values q (0..64) and scales, check value = d·s·(q−32).
        let q: Vec<u8> = (0..256).map(|i| ((i * 37 + 11) % 64) as u8).collect();
        let scales: Vec<i8> = (0..16).map(|i| (i as i8 - 8) * 3).collect();
        let (mut ql, mut qh) = (vec![0u8; 128], vec![0u8; 64]);
        for half in 0..2 {
            for l in 0..32 {
                let v = |k: usize| q[128 * half + l + 32 * k];
                ql[64 * half + l] = (v(0) & 0xF) | ((v(2) & 0xF) << 4);
                ql[64 * half + l + 32] = (v(1) & 0xF) | ((v(3) & 0xF) << 4);
                qh[32 * half + l] = (v(0) >> 4) | ((v(1) >> 4) << 2) | ((v(2) >> 4) << 4) | ((v(3) >> 4) << 6);
            }
        }
        let mut b = [ql, qh].concat();
        b.extend(scales.iter().map(|&s| s as u8));
        b.extend(h(0.25));
        let got = dequantize(TensorType::Q6_K, &b, 256).unwrap();
        for (i, &x) in got.iter().enumerate() {
            let s = f32::from(scales[i / 16]);
            assert_eq!(x, 0.25 * s * (f32::from(q[i]) - 32.0), "value {i}");
        }
    }

    /// Writes a small GGUF file by hand: every metadata type, two tensors, alignment 64.
    fn tiny_file() -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(2u64.to_le_bytes()); // tensors
        b.extend(5u64.to_le_bytes()); // metadata
        let s = |b: &mut Vec<u8>, x: &str| {
            b.extend((x.len() as u64).to_le_bytes());
            b.extend(x.as_bytes());
        };
        s(&mut b, "general.alignment");
        b.extend(4u32.to_le_bytes());
        b.extend(64u32.to_le_bytes());
        s(&mut b, "a.f32");
        b.extend(6u32.to_le_bytes());
        b.extend(0.5f32.to_le_bytes());
        s(&mut b, "a.strings");
        b.extend(9u32.to_le_bytes());
        b.extend(8u32.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        s(&mut b, "x");
        s(&mut b, "yé");
        s(&mut b, "a.i16");
        b.extend(3u32.to_le_bytes());
        b.extend((-7i16).to_le_bytes());
        s(&mut b, "a.bool");
        b.extend(7u32.to_le_bytes());
        b.push(1);
        // tensor infos
        s(&mut b, "w");
        b.extend(2u32.to_le_bytes());
        b.extend(32u64.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        b.extend(8u32.to_le_bytes()); // Q8_0
        b.extend(0u64.to_le_bytes());
        s(&mut b, "n");
        b.extend(1u32.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        b.extend(0u32.to_le_bytes()); // F32
        b.extend(128u64.to_le_bytes());
        b.resize(b.len().div_ceil(64) * 64, 0);
        for row in 0..2 {
            b.extend(h(1.0));
            b.extend((0..32).map(|i| (i + row) as u8));
        }
        b.resize(b.len().div_ceil(64) * 64, 0);
        b.extend(3.0f32.to_le_bytes());
        b.extend(4.0f32.to_le_bytes());
        b
    }

    #[test]
    fn a_hand_written_file_reads_back() {
        let g = Gguf::parse(tiny_file()).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.u64("general.alignment").unwrap(), 64);
        assert_eq!(g.f64("a.f32").unwrap(), 0.5);
        assert_eq!(g.strings("a.strings").unwrap(), vec!["x", "yé"]);
        assert_eq!(g.get("a.i16"), Some(&Value::I(-7)));
        assert_eq!(g.get("a.bool"), Some(&Value::Bool(true)));
        let w = g.dequantize("w").unwrap();
        assert_eq!(w.len(), 64);
        assert_eq!((w[0], w[31], w[32], w[63]), (0.0, 31.0, 1.0, 32.0));
        assert_eq!(g.dequantize("n").unwrap(), vec![3.0, 4.0]);
        assert!(g.dequantize("missing").unwrap_err().0.contains("no tensor `missing`"));
    }

    #[test]
    fn bad_files_are_clear_errors() {
        assert!(Gguf::parse(b"GGML....".to_vec()).unwrap_err().0.contains("not a GGUF file"));
        let mut v1 = tiny_file();
        v1[4] = 1;
        assert!(Gguf::parse(v1).unwrap_err().0.contains("version 1"));
        let full = tiny_file();
        let cut = full[..full.len() - 6].to_vec();
        assert!(Gguf::parse(cut).unwrap_err().0.contains("runs past the end"));
        // An unsupported tensor type is an error that names the tensor and the type.
        let mut q5 = tiny_file();
        let info = b"\x01\0\0\0\0\0\0\0w\x02\0\0\0"; // name "w", then 2 dims
        let at = q5.windows(info.len()).position(|w| w == info).unwrap();
        let ty_at = at + info.len() + 16;
        q5[ty_at] = 6; // Q5_0
        let g = Gguf::parse(q5).unwrap();
        let e = g.dequantize("w").unwrap_err().0;
        assert!(e.contains("`w`") && e.contains("Q5_0"), "{e}");
    }
}
