//! Hex as the share wire format and the stores write it: lowercase on the way out, no `0x`
//! prefix accepted on the way in (so one value has one spelling, which the stores compare and
//! the signed content hash covers), decoded and encoded with SIMD by `const-hex` (already in
//! the build through alloy). The `hex` crate decodes one byte per call: on a share node that
//! was 4% of its CPU per upload.

pub use const_hex::FromHexError;

/// The bytes `s` spells; refuses a `0x` prefix, odd lengths and other characters.
///
/// # Errors
/// When `s` is not plain hex.
pub fn decode(s: impl AsRef<[u8]>) -> Result<Vec<u8>, FromHexError> {
    let s = s.as_ref();
    if s.len() >= 2 && s[0] == b'0' && (s[1] == b'x' || s[1] == b'X') {
        return Err(FromHexError::InvalidHexCharacter {
            c: char::from(s[1]),
            index: 1,
        });
    }
    const_hex::decode(s)
}

/// `data` in lowercase hex, without a prefix.
pub fn encode(data: impl AsRef<[u8]>) -> String {
    const_hex::encode(data)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        /// Same answers as the `hex` crate, which the formats were written with: every input,
        /// valid or not, decodes to the same bytes or fails in both.
        #[test]
        fn agrees_with_the_hex_crate(s in "(0[xX])?[0-9a-fA-FxX g]{0,70}", bytes in proptest::collection::vec(any::<u8>(), 0..70)) {
            prop_assert_eq!(super::decode(&s).ok(), hex::decode(&s).ok());
            prop_assert_eq!(super::encode(&bytes), hex::encode(&bytes));
        }
    }

    #[test]
    fn a_prefix_is_refused() {
        assert!(super::decode("0xab").is_err());
        assert!(super::decode("0Xab").is_err());
        assert_eq!(super::decode("ab").unwrap(), vec![0xab]);
        assert_eq!(super::decode("AB").unwrap(), vec![0xab]);
    }
}
