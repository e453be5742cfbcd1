//! Stable short digests for the identifiers adapters derive (idempotency
//! keys, record tags): the same input gives the same text in every process
//! and build, unlike `std`'s `DefaultHasher`.
//!
//! Not cryptographic: these only keep derived identifiers short and
//! distinct; nothing secret is hashed here.

/// FNV-1a, 64 bits.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// [`fnv1a64`] as 16 lowercase hex digits.
pub fn short_hash(text: &str) -> String {
    format!("{:016x}", fnv1a64(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_distinct() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(short_hash("a"), "af63dc4c8601ec8c");
        assert_ne!(short_hash("inv-1"), short_hash("inv-2"));
        assert_eq!(short_hash("x").len(), 16);
    }
}
