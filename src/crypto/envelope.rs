//! The record envelope.
//!
//! Layout of the plaintext before encryption: `len (u64 LE) || payload || zero padding`, padded
//! by the record's [`Scheme`] so the ciphertext size reveals only a size bucket. That is cut into
//! [`SEGMENT`]-byte segments, each sealed with ChaCha20-Poly1305 under the record key with nonce
//! `flag (1 byte: 1 on the last segment) || 0 0 0 || counter (u64 BE)`: segments cannot be
//! reordered, dropped or truncated without failing authentication (the STREAM construction),
//! and sealing and opening can run segment by segment for large files.
//!
//! Why not the `aead` crate's `stream` module: its STREAM variants put a 32-bit counter and
//! the last-segment flag at the end of the nonce (`StreamBE32`), while this layout (flag first,
//! 64-bit counter) is the stored record format `chacha20poly1305-stream64k-v1`. Records already
//! on IPFS must stay readable, so switching would be a new scheme name with both kept; the
//! sealing itself is the `chacha20poly1305` crate's, only the nonce layout is ours (tested
//! against reordering, dropping and truncation below).

use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand_core::{OsRng, RngCore};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Plaintext bytes per sealed segment.
pub const SEGMENT: usize = 64 * 1024;
const TAG: usize = 16;

/// Errors of the envelope.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// Authentication failed: wrong key, or the ciphertext was changed.
    #[error("record ciphertext failed authentication in segment {segment} (wrong key or tampered)")]
    Tampered {
        /// The failing segment.
        segment: usize,
    },
    /// The ciphertext length is not a whole number of segments.
    #[error("record ciphertext has a malformed length {0}")]
    BadLength(usize),
    /// A key of the wrong length.
    #[error("a record key must be 32 bytes, got {0}")]
    BadKey(usize),
    /// A record sealed under an envelope scheme this version does not know.
    #[error("unknown record envelope scheme {0:?} (written by a newer version?)")]
    UnknownScheme(String),
}

/// How a record's plaintext is padded before it is sealed; named in its block (`scheme`), as
/// the opener must pad alike to know the ciphertext's length. Records keep the scheme they
/// were written with: both are read, new ones are written with [`Scheme::CURRENT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `chacha20poly1305-stream64k-v1`: the next power of two from 1 KiB to 1 MiB, then the
    /// next MiB. Up to 100% larger: a payload of exactly 1 MiB (1 MiB + 8 framed) takes 2 MiB.
    PowerOfTwo,
    /// `chacha20poly1305-stream64k-padme-v2`: Padmé (Nikitin et al., "Reducing Metadata
    /// Leakage from Encrypted Files and Communication with PURBs", PETS 2019), from 1 KiB.
    /// The framed length `L` is rounded up to a multiple of `2^(E - S)` where
    /// `E = floor(log2 L)` and `S = floor(log2 E) + 1`: at most 6.25% larger from 1 KiB on
    /// (3.1% from 64 KiB). The trade: `2^S` sizes between two powers of two instead of one
    /// (16 to 32 below 4 GiB; 225 sizes from 1 KiB to 1 MiB against 11), so an observer of
    /// the ciphertext learns about 5 more bits of the size (still `O(log log L)`).
    Padme,
}

impl Scheme {
    /// The scheme new records are written with.
    pub const CURRENT: Self = Self::Padme;

    /// The name stored in the record's block.
    pub fn name(self) -> &'static str {
        match self {
            Self::PowerOfTwo => "chacha20poly1305-stream64k-v1",
            Self::Padme => "chacha20poly1305-stream64k-padme-v2",
        }
    }

    /// The scheme a block names.
    ///
    /// # Errors
    /// [`CryptoError::UnknownScheme`] for any other name.
    pub fn parse(name: &str) -> Result<Self, CryptoError> {
        [Self::PowerOfTwo, Self::Padme]
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| CryptoError::UnknownScheme(name.chars().take(80).collect()))
    }

    /// The padded plaintext length for a payload of `len` bytes (8-byte length prefix included).
    pub fn padded_len(self, len: usize) -> usize {
        match self {
            Self::PowerOfTwo => padded_len(len),
            Self::Padme => padme(len + 8).max(1024),
        }
    }
}

/// Padmé's length for `len` (see [`Scheme::Padme`]).
fn padme(len: usize) -> usize {
    if len < 2 {
        return len;
    }
    let e = len.ilog2();
    let s = e.ilog2() + 1;
    let mask = (1usize << (e - s)) - 1;
    (len + mask) & !mask
}

/// A 256-bit AEAD key; zeroized on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct AeadKey([u8; 32]);

impl AeadKey {
    /// A fresh random key.
    pub fn random() -> Self {
        let mut k = [0u8; 32];
        OsRng.fill_bytes(&mut k);
        Self(k)
    }

    /// A key from its bytes.
    ///
    /// # Errors
    /// [`CryptoError::BadKey`] unless exactly 32 bytes.
    pub fn from_slice(b: &[u8]) -> Result<Self, CryptoError> {
        Ok(Self(
            b.try_into().map_err(|_| CryptoError::BadKey(b.len()))?,
        ))
    }

    /// The key bytes (to place in the Shamir-shared block).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AeadKey(..)")
    }
}

/// The padded plaintext length for a payload of `len` bytes (8-byte length prefix included):
/// the next power of two from 1 KiB up to 1 MiB, then the next multiple of 1 MiB.
pub fn padded_len(len: usize) -> usize {
    let framed = len + 8;
    if framed <= 1 << 20 {
        framed.next_power_of_two().max(1024)
    } else {
        framed.div_ceil(1 << 20) << 20
    }
}

fn nonce(counter: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[0] = u8::from(last);
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::from(n)
}

/// Seals `payload` segment by segment, padded by `scheme`; `emit` receives each sealed segment
/// in order, so a caller can stream them to IPFS without holding the whole ciphertext.
pub fn seal_segments(key: &AeadKey, scheme: Scheme, payload: &[u8], mut emit: impl FnMut(Vec<u8>)) {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&key.0));
    let total = scheme.padded_len(payload.len());
    let seg_len = SEGMENT.min(total);
    let segments = total.div_ceil(seg_len);
    let prefix = (payload.len() as u64).to_le_bytes();
    let mut pos = 0usize; // position in the framed plaintext
    for i in 0..segments {
        let end = (pos + seg_len).min(total);
        // Each segment is built in the buffer it is emitted in (the tag appended), by slices:
        // the length prefix, the payload's bytes in range, zeros for the padding.
        let mut buf = Vec::with_capacity(end - pos + TAG);
        if pos < 8 {
            buf.extend_from_slice(&prefix[pos..8.min(end)]);
        }
        let from = pos.max(8) - 8;
        let to = (end.max(8) - 8).min(payload.len());
        if from < to {
            buf.extend_from_slice(&payload[from..to]);
        }
        buf.resize(end - pos, 0);
        pos = end;
        // Encryption with a valid key and nonce cannot fail for in-memory buffers of this size.
        if cipher
            .encrypt_in_place(&nonce(i as u64, i + 1 == segments), b"", &mut buf)
            .is_err()
        {
            buf.clear();
        }
        emit(buf);
    }
}

/// Seals `payload` into one buffer (padded as [`padded_len`]: the scheme of record blocks).
pub fn seal(key: &AeadKey, payload: &[u8]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(padded_len(payload.len()) + 16 * (payload.len() / SEGMENT + 1));
    seal_segments(key, Scheme::PowerOfTwo, payload, |s| {
        out.extend_from_slice(&s)
    });
    out
}

/// Opens a sealed envelope and returns the payload without its padding.
///
/// # Errors
/// [`CryptoError::Tampered`] on any change, [`CryptoError::BadLength`] on a malformed size.
pub fn open(key: &AeadKey, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&key.0));
    if sealed.len() < 1024 + TAG {
        return Err(CryptoError::BadLength(sealed.len()));
    }
    let chunk = SEGMENT + TAG;
    let segments = sealed.len().div_ceil(chunk);
    let mut plain = Vec::with_capacity(sealed.len());
    for (i, ct) in sealed.chunks(chunk).enumerate() {
        let pt = cipher
            .decrypt(&nonce(i as u64, i + 1 == segments), ct)
            .map_err(|_| CryptoError::Tampered { segment: i })?;
        plain.extend_from_slice(&pt);
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&plain[..8]);
    let len = usize::try_from(u64::from_le_bytes(len))
        .map_err(|_| CryptoError::BadLength(sealed.len()))?;
    if len + 8 > plain.len() || padded_len(len) != plain.len() {
        return Err(CryptoError::BadLength(sealed.len()));
    }
    plain.truncate(len + 8);
    plain.drain(..8);
    Ok(plain)
}

/// Opens an envelope as its ciphertext streams in, one segment at a time, for a payload whose
/// length and scheme are known beforehand (the record block carries them). Each segment's
/// ciphertext is gathered right after the payload opened so far and opened there, in place:
/// memory stays at the payload plus one segment, and each byte is copied once (from the
/// network's chunk), not into a segment buffer, a fresh plaintext and the payload besides.
pub struct Opener {
    cipher: ChaCha20Poly1305,
    payload_len: usize,
    padded: usize,
    seg_len: usize,
    segments: usize,
    next: usize,
    /// The payload opened so far, then the current segment's ciphertext from `seg_from`.
    plain: Vec<u8>,
    seg_from: usize,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("payload_len", &self.payload_len)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// An opener for the envelope of a `payload_len`-byte payload sealed under `key` with
    /// `scheme`.
    pub fn new(key: &AeadKey, scheme: Scheme, payload_len: usize) -> Self {
        let padded = scheme.padded_len(payload_len);
        let seg_len = SEGMENT.min(padded);
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key.0)),
            payload_len,
            padded,
            seg_len,
            segments: padded.div_ceil(seg_len),
            next: 0,
            // Capacity up front for the usual case (the payload, and the last segment's
            // ciphertext behind it before its padding is cut); bounded, as the length is the
            // uploader's word.
            plain: Vec::with_capacity(payload_len.min(64 << 20) + seg_len + TAG),
            seg_from: 0,
        }
    }

    /// The ciphertext length this opener expects.
    pub fn sealed_len(&self) -> usize {
        self.padded + self.segments * TAG
    }

    fn segment_ct_len(&self, i: usize) -> usize {
        self.seg_len.min(self.padded - i * self.seg_len) + TAG
    }

    /// Feeds the next ciphertext bytes; whole segments are authenticated and decrypted at once.
    ///
    /// # Errors
    /// [`CryptoError::Tampered`] for a segment that fails authentication,
    /// [`CryptoError::BadLength`] for more ciphertext than the payload's envelope has.
    pub fn push(&mut self, mut data: &[u8]) -> Result<(), CryptoError> {
        while !data.is_empty() {
            if self.next == self.segments {
                return Err(CryptoError::BadLength(self.sealed_len() + data.len()));
            }
            let want = self.segment_ct_len(self.next) - (self.plain.len() - self.seg_from);
            let take = want.min(data.len());
            self.plain.extend_from_slice(&data[..take]);
            data = &data[take..];
            if take == want {
                self.open_segment()?;
            }
        }
        Ok(())
    }

    /// Authenticates and decrypts the segment gathered at `seg_from` in place, then keeps only
    /// payload bytes: the length prefix is checked and cut, the padding dropped.
    fn open_segment(&mut self) -> Result<(), CryptoError> {
        let i = self.next;
        let ct_end = self.plain.len() - TAG;
        let tag = chacha20poly1305::Tag::clone_from_slice(&self.plain[ct_end..]);
        self.cipher
            .decrypt_in_place_detached(
                &nonce(i as u64, i + 1 == self.segments),
                b"",
                &mut self.plain[self.seg_from..ct_end],
                &tag,
            )
            .map_err(|_| CryptoError::Tampered { segment: i })?;
        self.plain.truncate(ct_end);
        if i == 0 {
            let mut len = [0u8; 8];
            len.copy_from_slice(&self.plain[..8]);
            if u64::from_le_bytes(len) != self.payload_len as u64 {
                self.plain.zeroize();
                return Err(CryptoError::BadLength(self.sealed_len()));
            }
            // At most one segment moves.
            self.plain.drain(..8);
        }
        self.plain.truncate(self.payload_len);
        self.seg_from = self.plain.len();
        self.next += 1;
        Ok(())
    }

    /// The payload, once every segment arrived and opened.
    ///
    /// # Errors
    /// [`CryptoError::BadLength`] when the ciphertext ended early.
    pub fn finish(self) -> Result<Vec<u8>, CryptoError> {
        let pending = self.plain.len() - self.seg_from;
        if self.next != self.segments || pending != 0 {
            return Err(CryptoError::BadLength(
                self.next * (self.seg_len + TAG) + pending,
            ));
        }
        Ok(self.plain)
    }
}

#[cfg(test)]
mod tests {
    use chacha20poly1305::aead::Payload;
    use proptest::prelude::*;

    use super::*;

    /// RFC 8439 section 2.8.2 (AEAD_CHACHA20_POLY1305 test vector); see tests/data/README.md.
    #[test]
    fn rfc8439_known_answer() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/data/rfc8439_aead.json")).unwrap();
        let h = |k: &str| crate::strict_hex::decode(v[k].as_str().unwrap()).unwrap();
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&h("key")));
        let nonce = h("nonce");
        let pt = v["plaintext"].as_str().unwrap().as_bytes();
        let out = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: pt,
                    aad: &h("aad"),
                },
            )
            .unwrap();
        assert_eq!(&out[..16], &h("ciphertext_prefix")[..]);
        assert_eq!(&out[out.len() - 16..], &h("tag")[..]);
    }

    #[test]
    fn sizes_are_bucketed() {
        assert_eq!(padded_len(0), 1024);
        assert_eq!(padded_len(1000), 1024);
        assert_eq!(padded_len(1017), 2048);
        assert_eq!(padded_len(700_000), 1 << 20);
        assert_eq!(padded_len(20 << 20), 21 << 20);
        let k = AeadKey::random();
        assert_eq!(seal(&k, &[1; 10]).len(), seal(&k, &[1; 900]).len());
    }

    #[test]
    fn padme_bounds_the_overhead_and_the_sizes() {
        // Worked out by hand from the definition (framed length = payload + 8).
        assert_eq!(Scheme::Padme.padded_len(0), 1024);
        assert_eq!(Scheme::Padme.padded_len(1016), 1024);
        // 1017 + 8 = 1025: E = 10, S = 4, multiples of 64.
        assert_eq!(Scheme::Padme.padded_len(1017), 1088);
        // 10,000 + 8: E = 13, S = 4, multiples of 512.
        assert_eq!(Scheme::Padme.padded_len(10_000), 10_240);
        // 1 MiB + 8: E = 20, S = 5, multiples of 32 KiB (powers of two: 2 MiB).
        assert_eq!(Scheme::Padme.padded_len(1 << 20), (1 << 20) + (32 << 10));
        assert_eq!(Scheme::PowerOfTwo.padded_len(1 << 20), 2 << 20);
        let mut sizes = std::collections::BTreeSet::new();
        for framed in (1 << 16)..(1 << 17) {
            let p = Scheme::Padme.padded_len(framed - 8);
            assert!(p >= framed && p <= framed + framed / 8, "{framed} -> {p}");
            sizes.insert(p);
        }
        // Between 2^16 and 2^17: E = 16, S = 5, so at most 2^5 (+1, the next power) sizes.
        assert!(sizes.len() <= 33, "{} sizes", sizes.len());
    }

    #[test]
    fn schemes_go_by_their_stored_names() {
        for s in [Scheme::PowerOfTwo, Scheme::Padme] {
            assert_eq!(Scheme::parse(s.name()), Ok(s));
        }
        assert_eq!(Scheme::PowerOfTwo.name(), "chacha20poly1305-stream64k-v1");
        assert!(matches!(
            Scheme::parse("rot13"),
            Err(CryptoError::UnknownScheme(_))
        ));
    }

    #[test]
    fn streamed_opening_agrees_with_opening_whole() {
        let k = AeadKey::random();
        for len in [
            0,
            1,
            1016,
            1017,
            SEGMENT - 8,
            SEGMENT,
            3 * SEGMENT + 5,
            (1 << 20) + 1,
        ] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let sealed = seal(&k, &payload);
            let mut o = Opener::new(&k, Scheme::PowerOfTwo, len);
            assert_eq!(o.sealed_len(), sealed.len(), "len {len}");
            // Odd-sized pieces, crossing segment borders.
            for piece in sealed.chunks(7_919) {
                o.push(piece).unwrap();
            }
            assert_eq!(o.finish().unwrap(), payload, "len {len}");
        }
    }

    /// Records on IPFS were sealed by a byte-at-a-time framing loop: the slice-built segments
    /// must be the same bytes, or they would no longer open.
    #[test]
    fn sealing_by_slices_matches_the_byte_loop_it_replaced() {
        let k = AeadKey::random();
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&k.0));
        for len in [
            0,
            5,
            1016,
            1017,
            SEGMENT - 8,
            SEGMENT,
            2 * SEGMENT + 3,
            300_001,
        ] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 241) as u8).collect();
            for scheme in [Scheme::PowerOfTwo, Scheme::Padme] {
                let total = scheme.padded_len(len);
                let prefix = (len as u64).to_le_bytes();
                let framed: Vec<u8> = (0..total)
                    .map(|p| match p {
                        p if p < 8 => prefix[p],
                        p if p - 8 < len => payload[p - 8],
                        _ => 0,
                    })
                    .collect();
                let segments = framed.chunks(SEGMENT).count();
                let mut expected = Vec::new();
                for (i, seg) in framed.chunks(SEGMENT).enumerate() {
                    let ct = cipher
                        .encrypt(&nonce(i as u64, i + 1 == segments), seg)
                        .unwrap();
                    expected.extend_from_slice(&ct);
                }
                let mut got = Vec::new();
                seal_segments(&k, scheme, &payload, |s| got.extend_from_slice(&s));
                assert!(got == expected, "len {len}, {scheme:?}");
            }
        }
    }

    #[test]
    fn each_scheme_opens_what_it_sealed_and_not_the_others() {
        let k = AeadKey::random();
        for len in [
            0,
            1017,
            SEGMENT - 8,
            3 * SEGMENT + 5,
            1 << 20,
            (1 << 20) + 1,
        ] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 249) as u8).collect();
            for scheme in [Scheme::PowerOfTwo, Scheme::Padme] {
                let mut sealed = Vec::new();
                seal_segments(&k, scheme, &payload, |s| sealed.extend_from_slice(&s));
                let mut o = Opener::new(&k, scheme, len);
                assert_eq!(o.sealed_len(), sealed.len(), "len {len}, {scheme:?}");
                for piece in sealed.chunks(65_551) {
                    o.push(piece).unwrap();
                }
                assert_eq!(o.finish().unwrap(), payload, "len {len}, {scheme:?}");
                let other = match scheme {
                    Scheme::PowerOfTwo => Scheme::Padme,
                    Scheme::Padme => Scheme::PowerOfTwo,
                };
                if scheme.padded_len(len) != other.padded_len(len) {
                    let mut o = Opener::new(&k, other, len);
                    let r = o.push(&sealed).and_then(|()| o.finish().map(drop));
                    assert!(r.is_err(), "len {len} opened as {other:?}");
                }
            }
        }
    }

    #[test]
    fn streamed_opening_refuses_short_long_wrong_and_changed() {
        let k = AeadKey::random();
        let payload = vec![7u8; 2 * SEGMENT];
        let sealed = seal(&k, &payload);
        let mut short = Opener::new(&k, Scheme::PowerOfTwo, payload.len());
        short.push(&sealed[..sealed.len() - 1]).unwrap();
        assert!(matches!(short.finish(), Err(CryptoError::BadLength(_))));
        let mut long = Opener::new(&k, Scheme::PowerOfTwo, payload.len());
        let mut more = sealed.clone();
        more.push(0);
        assert!(matches!(long.push(&more), Err(CryptoError::BadLength(_))));
        // A block claiming another size: a different envelope length or a prefix mismatch.
        let mut wrong = Opener::new(&k, Scheme::PowerOfTwo, payload.len() - 1);
        let r = wrong.push(&sealed).and_then(|()| wrong.finish().map(drop));
        assert!(r.is_err());
        let mut changed = sealed.clone();
        changed[SEGMENT + 40] ^= 1;
        let mut o = Opener::new(&k, Scheme::PowerOfTwo, payload.len());
        assert_eq!(o.push(&changed), Err(CryptoError::Tampered { segment: 1 }));
        let mut o = Opener::new(&AeadKey::random(), Scheme::PowerOfTwo, payload.len());
        assert_eq!(o.push(&sealed), Err(CryptoError::Tampered { segment: 0 }));
    }

    #[test]
    fn reordered_or_dropped_segments_fail() {
        let k = AeadKey::random();
        let payload: Vec<u8> = (0..3 * SEGMENT).map(|i| (i % 251) as u8).collect();
        let s = seal(&k, &payload);
        let seg = SEGMENT + TAG;
        assert!(s.len() >= 4 * seg, "four sealed segments at least");
        // Segments 0 and 1 swapped: each fails under the other's counter.
        let mut swapped = s.clone();
        swapped[..seg].copy_from_slice(&s[seg..2 * seg]);
        swapped[seg..2 * seg].copy_from_slice(&s[..seg]);
        assert_eq!(
            open(&k, &swapped),
            Err(CryptoError::Tampered { segment: 0 })
        );
        // Segment 1 dropped (the length still a whole number of segments).
        let mut dropped = s[..seg].to_vec();
        dropped.extend_from_slice(&s[2 * seg..]);
        assert!(open(&k, &dropped).is_err());
    }

    #[test]
    fn debug_hides_the_key() {
        assert_eq!(format!("{:?}", AeadKey::random()), "AeadKey(..)");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn round_trips(payload in proptest::collection::vec(any::<u8>(), 0..200_000)) {
            let k = AeadKey::random();
            prop_assert_eq!(open(&k, &seal(&k, &payload)).unwrap(), payload);
        }

        #[test]
        fn any_flipped_bit_is_caught(payload in proptest::collection::vec(any::<u8>(), 0..140_000), at in any::<usize>(), bit in 0u8..8) {
            let k = AeadKey::random();
            let mut s = seal(&k, &payload);
            let i = at % s.len();
            s[i] ^= 1 << bit;
            prop_assert!(open(&k, &s).is_err());
        }

        #[test]
        fn truncation_and_wrong_keys_fail(payload in proptest::collection::vec(any::<u8>(), 70_000..140_000)) {
            let k = AeadKey::random();
            let s = seal(&k, &payload);
            prop_assert!(open(&k, &s[..SEGMENT + 16]).is_err(), "dropping the last segment must fail");
            prop_assert!(open(&AeadKey::random(), &s).is_err());
        }
    }
}
