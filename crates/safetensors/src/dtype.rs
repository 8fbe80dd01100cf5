//! The element types a safetensors file can declare.

use std::fmt;

/// An element type of a safetensors tensor: every dtype safetensors 0.3 knows.
///
/// The order is safetensors' own (its writer sorts tensors by it, largest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dtype {
    /// Booleans, one byte each.
    Bool,
    /// Unsigned 8-bit integers.
    U8,
    /// Signed 8-bit integers.
    I8,
    /// Signed 16-bit integers.
    I16,
    /// Unsigned 16-bit integers.
    U16,
    /// IEEE half-precision floats.
    F16,
    /// bfloat16 floats.
    BF16,
    /// Signed 32-bit integers.
    I32,
    /// Unsigned 32-bit integers.
    U32,
    /// Single-precision floats.
    F32,
    /// Double-precision floats.
    F64,
    /// Signed 64-bit integers.
    I64,
    /// Unsigned 64-bit integers.
    U64,
}

impl Dtype {
    /// Every dtype, in safetensors' order.
    pub const ALL: [Dtype; 13] = [
        Dtype::Bool,
        Dtype::U8,
        Dtype::I8,
        Dtype::I16,
        Dtype::U16,
        Dtype::F16,
        Dtype::BF16,
        Dtype::I32,
        Dtype::U32,
        Dtype::F32,
        Dtype::F64,
        Dtype::I64,
        Dtype::U64,
    ];

    /// The name a header uses for it: `"F32"`, `"BOOL"`, ...
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bool => "BOOL",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::I16 => "I16",
            Dtype::U16 => "U16",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I32 => "I32",
            Dtype::U32 => "U32",
            Dtype::F32 => "F32",
            Dtype::F64 => "F64",
            Dtype::I64 => "I64",
            Dtype::U64 => "U64",
        }
    }

    /// The dtype a header names `name` (exact, upper case), if safetensors knows it.
    pub fn from_name(name: &str) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 => 1,
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
        }
    }

    /// The bytes a tensor of this dtype and `shape` takes, or `None` when that overflows
    /// a `u64` or the machine's address space.
    pub fn nbytes(self, shape: &[u64]) -> Option<u64> {
        shape
            .iter()
            .try_fold(self.size(), |n, &d| n.checked_mul(d))
            .filter(|&n| usize::try_from(n).is_ok())
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `[2, 3]`: a shape as messages show it.
pub fn shape_text(shape: &[u64]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_sizes_match_the_safetensors_crate() {
        for d in Dtype::ALL {
            let theirs: safetensors::Dtype =
                serde_json::from_str(&format!("\"{}\"", d.name())).unwrap();
            assert_eq!(d.size(), theirs.size() as u64, "{d}");
            assert_eq!(Dtype::from_name(d.name()), Some(d));
        }
        assert_eq!(Dtype::from_name("f32"), None);
        assert_eq!(Dtype::from_name("F8"), None);
        // The order is safetensors' own.
        let theirs: Vec<safetensors::Dtype> = Dtype::ALL
            .iter()
            .map(|d| serde_json::from_str(&format!("\"{}\"", d.name())).unwrap())
            .collect();
        assert!(theirs.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn nbytes_multiplies_and_refuses_overflow() {
        assert_eq!(Dtype::F32.nbytes(&[2, 3]), Some(24));
        assert_eq!(Dtype::F16.nbytes(&[]), Some(2));
        assert_eq!(Dtype::I64.nbytes(&[0, u64::MAX]), Some(0));
        assert_eq!(Dtype::F32.nbytes(&[1 << 40, 1 << 40]), None);
        assert_eq!(shape_text(&[2, 3]), "[2, 3]");
        assert_eq!(shape_text(&[]), "[]");
    }
}
