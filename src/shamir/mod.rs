//! Shamir secret sharing over the prime field of secp256k1's group order, with Feldman
//! commitments so that each share can be verified alone. Imports nothing of ours.
//!
//! The secret is one field element (a random 256-bit scalar; callers derive their block key
//! from it). Feldman commitments publish `a_m·G` for each polynomial coefficient, so only
//! uniformly random secrets may be shared this way: a guessable secret could be confirmed from
//! `a_0·G`. That is why the record block is sealed under a key derived from a random scalar
//! rather than shared directly.

use k256::elliptic_curve::group::GroupEncoding;
use k256::elliptic_curve::ops::{Invert, MulByGenerator};
use k256::elliptic_curve::{Field, PrimeField};
use k256::{ProjectivePoint, Scalar};
use rand_core::OsRng;
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// Errors of sharing and recombining.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShamirError {
    /// k must be at least 1 and at most n, and n at most 255.
    #[error("invalid threshold {k}-of-{n}: need 1 <= k <= n <= 255")]
    BadThreshold {
        /// k.
        k: u8,
        /// n.
        n: u8,
    },
    /// Fewer valid shares than the threshold.
    #[error("{have} valid shares, {need} needed")]
    NotEnough {
        /// Valid shares given.
        have: usize,
        /// Threshold.
        need: usize,
    },
    /// Two shares with the same index.
    #[error("share index {0} given twice")]
    DuplicateIndex(u8),
    /// A share does not match the commitments.
    #[error("share {0} failed verification against the commitments")]
    Invalid(u8),
    /// Bytes that are not a share or commitment.
    #[error("malformed {0}")]
    Malformed(&'static str),
}

/// `k` of `n`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Threshold {
    k: u8,
    n: u8,
}

impl Threshold {
    /// A threshold; `k == n` means every share is needed.
    ///
    /// # Errors
    /// [`ShamirError::BadThreshold`] unless `1 <= k <= n`.
    pub fn new(k: u8, n: u8) -> Result<Self, ShamirError> {
        if k == 0 || k > n {
            return Err(ShamirError::BadThreshold { k, n });
        }
        Ok(Self { k, n })
    }

    /// Shares needed.
    pub fn k(self) -> u8 {
        self.k
    }

    /// Shares made.
    pub fn n(self) -> u8 {
        self.n
    }
}

/// One share: the polynomial's value at `x = index` (1-based). Zeroized on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Share {
    /// 1-based index (the x coordinate).
    pub index: u8,
    value: Scalar,
}

impl Drop for Share {
    fn drop(&mut self) {
        self.value.zeroize();
    }
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Share({}, ..)", self.index)
    }
}

impl Share {
    /// 33 bytes: index, then the value (big-endian).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = vec![self.index];
        v.extend_from_slice(&self.value.to_bytes());
        v
    }

    /// Parses [`Share::to_bytes`].
    ///
    /// # Errors
    /// [`ShamirError::Malformed`] on wrong length, index 0 or a value outside the field.
    pub fn from_bytes(b: &[u8]) -> Result<Self, ShamirError> {
        if b.len() != 33 || b[0] == 0 {
            return Err(ShamirError::Malformed("share"));
        }
        let mut repr = k256::FieldBytes::default();
        repr.copy_from_slice(&b[1..]);
        let value = Option::<Scalar>::from(Scalar::from_repr(repr))
            .ok_or(ShamirError::Malformed("share"))?;
        Ok(Self { index: b[0], value })
    }
}

/// Feldman commitments `a_m·G`, m = 0..k; public.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commitments(Vec<ProjectivePoint>);

impl Commitments {
    /// The threshold k these commitments are for.
    pub fn k(&self) -> usize {
        self.0.len()
    }

    /// Compressed points, 33 bytes each.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0
            .iter()
            .flat_map(|p| p.to_affine().to_bytes().to_vec())
            .collect()
    }

    /// Parses [`Commitments::to_bytes`].
    ///
    /// # Errors
    /// [`ShamirError::Malformed`] when not a list of valid points.
    pub fn from_bytes(b: &[u8]) -> Result<Self, ShamirError> {
        if b.is_empty() || !b.len().is_multiple_of(33) {
            return Err(ShamirError::Malformed("commitments"));
        }
        b.chunks(33)
            .map(|c| {
                let mut enc = k256::CompressedPoint::default();
                enc.copy_from_slice(c);
                Option::<k256::AffinePoint>::from(k256::AffinePoint::from_bytes(&enc))
                    .map(ProjectivePoint::from)
                    .ok_or(ShamirError::Malformed("commitments"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Checks that `b` is what [`Commitments::from_bytes`] accepts as compressed points (tags
    /// 02 and 03: k256 also takes its compact tag 05 and the identity as 33 zero bytes, which
    /// [`split`] never makes, and this refuses), and answers k, without building the points: through libsecp256k1, whose decompression (a square root in the
    /// field) is faster than k256's. A share node checks the commitments of every deposit it
    /// takes and never uses them itself (`benches/curve.rs`: 9.2 against 14.6 us for three).
    ///
    /// # Errors
    /// [`ShamirError::Malformed`] when not a list of valid points.
    pub fn check_bytes(b: &[u8]) -> Result<usize, ShamirError> {
        if b.is_empty() || !b.len().is_multiple_of(33) {
            return Err(ShamirError::Malformed("commitments"));
        }
        for c in b.chunks(33) {
            secp256k1::PublicKey::from_slice(c)
                .map_err(|_| ShamirError::Malformed("commitments"))?;
        }
        Ok(b.len() / 33)
    }

    /// Checks `value·G == Σ x^m · C_m`, evaluating the sum by Horner's rule: the index `x` is
    /// at most 255, so each step multiplies a point by `x` with at most 8 doublings and 8
    /// additions instead of a 256-bit scalar multiplication, and `value·G` uses the
    /// precomputed generator tables. (Measured in `benches/shamir.rs`: the whole split, verify,
    /// recover cycle went from 1.5x vsss-rs's time to below it.) Everything here is public but
    /// `value`, which only meets the constant-time generator multiplication.
    pub fn verify(&self, share: &Share) -> bool {
        let mut acc = ProjectivePoint::IDENTITY;
        for c in self.0.iter().rev() {
            acc = mul_small(acc, share.index) + c;
        }
        ProjectivePoint::mul_by_generator(&share.value) == acc
    }
}

/// `p · x` for a small public `x`, by double-and-add from its highest bit.
fn mul_small(p: ProjectivePoint, x: u8) -> ProjectivePoint {
    let mut acc = ProjectivePoint::IDENTITY;
    for bit in (0..8 - x.leading_zeros()).rev() {
        acc = acc.double();
        if (x >> bit) & 1 == 1 {
            acc += p;
        }
    }
    acc
}

/// A secret field element; zeroized on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Scalar);

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A uniformly random secret.
    pub fn random() -> Self {
        Self(Scalar::random(&mut OsRng))
    }

    /// 32 bytes, big-endian (to derive keys from).
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes().into()
    }
}

/// Splits `secret` into `t.n()` shares, any `t.k()` of which recover it, with commitments.
pub fn split(secret: &Secret, t: Threshold) -> (Vec<Share>, Commitments) {
    let mut coeffs = vec![secret.0];
    coeffs.extend((1..t.k).map(|_| Scalar::random(&mut OsRng)));
    let commitments = Commitments(
        coeffs
            .iter()
            .map(ProjectivePoint::mul_by_generator)
            .collect(),
    );
    let shares = (1..=t.n)
        .map(|i| Share {
            index: i,
            value: eval(&coeffs, Scalar::from(u64::from(i))),
        })
        .collect();
    for c in &mut coeffs {
        c.zeroize();
    }
    (shares, commitments)
}

fn eval(coeffs: &[Scalar], x: Scalar) -> Scalar {
    coeffs.iter().rev().fold(Scalar::ZERO, |acc, a| acc * x + a)
}

/// Recombines the secret from at least `k` shares by Lagrange interpolation at 0. Shares are
/// not verified here; use [`Commitments::verify`] first to know which are good.
///
/// # Errors
/// [`ShamirError::NotEnough`] or [`ShamirError::DuplicateIndex`].
pub fn combine(shares: &[Share], k: usize) -> Result<Secret, ShamirError> {
    if shares.len() < k || k == 0 {
        return Err(ShamirError::NotEnough {
            have: shares.len(),
            need: k,
        });
    }
    let used = &shares[..k];
    for (i, a) in used.iter().enumerate() {
        if used[..i].iter().any(|b| b.index == a.index) {
            return Err(ShamirError::DuplicateIndex(a.index));
        }
    }
    let mut secret = Scalar::ZERO;
    for a in used {
        let xa = Scalar::from(u64::from(a.index));
        let mut num = Scalar::ONE;
        let mut den = Scalar::ONE;
        for b in used.iter().filter(|b| b.index != a.index) {
            let xb = Scalar::from(u64::from(b.index));
            num *= xb;
            den *= xb - xa;
        }
        // den is a product of differences of distinct indices, never zero. The indices are
        // public, so a variable-time inversion (a binary GCD) leaks nothing and spares the
        // constant-time one's 255 squarings for each share.
        let inv = Option::<Scalar>::from(den.invert_vartime())
            .ok_or(ShamirError::DuplicateIndex(a.index))?;
        secret += a.value * num * inv;
    }
    Ok(Secret(secret))
}

/// Verifies each share against `commitments`, keeps the valid ones, and recombines.
/// Returns the secret and the indices of the shares that failed.
///
/// # Errors
/// [`ShamirError::NotEnough`] when fewer than k shares are valid.
pub fn verify_and_combine(
    shares: &[Share],
    commitments: &Commitments,
) -> Result<(Secret, Vec<u8>), ShamirError> {
    let (good, bad): (Vec<_>, Vec<_>) = shares.iter().cloned().partition(|s| commitments.verify(s));
    let secret = combine(&good, commitments.k())?;
    Ok((secret, bad.iter().map(|s| s.index).collect()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn multiplying_by_a_small_index_is_scalar_multiplication() {
        let p = ProjectivePoint::mul_by_generator(&Scalar::random(&mut OsRng));
        for x in 0..=255u8 {
            assert_eq!(mul_small(p, x), p * Scalar::from(u64::from(x)), "x = {x}");
        }
    }

    #[test]
    fn field_arithmetic_is_the_group_order() {
        // n - 1 + 1 wraps to 0 in the scalar field of secp256k1.
        let n_minus_1 = -Scalar::ONE;
        assert_eq!(n_minus_1 + Scalar::ONE, Scalar::ZERO);
        let x = Scalar::from(12345u64);
        assert_eq!(x * x.invert().unwrap(), Scalar::ONE);
        assert_eq!(
            eval(
                &[Scalar::from(3u64), Scalar::from(2u64), Scalar::ONE],
                Scalar::from(5u64)
            ),
            Scalar::from(38u64)
        );
    }

    #[test]
    fn thresholds_are_validated() {
        assert!(Threshold::new(0, 3).is_err());
        assert!(Threshold::new(4, 3).is_err());
        assert!(Threshold::new(3, 3).is_ok());
    }

    #[test]
    fn all_shares_mode_needs_every_share() {
        let s = Secret::random();
        let (shares, c) = split(&s, Threshold::new(5, 5).unwrap());
        assert_eq!(verify_and_combine(&shares, &c).unwrap().0, s);
        assert!(matches!(
            verify_and_combine(&shares[..4], &c),
            Err(ShamirError::NotEnough { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn any_k_of_n_recover_and_k_minus_1_do_not(k in 1u8..6, extra in 0u8..4, seed in any::<u64>()) {
            let n = k + extra;
            let s = Secret::random();
            let (mut shares, c) = split(&s, Threshold::new(k, n).unwrap());
            // a pseudo-random subset order
            let len = shares.len();
            for i in 0..len { shares.swap(i, (seed as usize).wrapping_mul(31).wrapping_add(i * 7) % len); }
            prop_assert!(shares.iter().all(|x| c.verify(x)));
            prop_assert_eq!(&combine(&shares[..k as usize], k as usize).unwrap(), &s);
            if k > 1 {
                // k-1 shares interpolated as if k-1 were the threshold give a different value.
                prop_assert_ne!(&combine(&shares[..k as usize - 1], k as usize - 1).unwrap(), &s);
            }
        }

        #[test]
        fn checking_commitments_agrees_with_parsing_them(
            k in 1usize..4,
            changes in proptest::collection::vec((0usize..99, any::<u8>()), 0..3),
            cut in 0usize..3,
        ) {
            // Valid commitments with a few bytes changed (a changed x is a point half the
            // time; a changed tag almost never) or cut short.
            let (_, c) = split(&Secret::random(), Threshold::new(k as u8, 5).unwrap());
            let mut b = c.to_bytes();
            for (at, v) in changes {
                let at = at % b.len();
                b[at] = v;
            }
            b.truncate(b.len().saturating_sub(cut));
            let compressed = b.chunks(33).all(|c| c[0] == 2 || c[0] == 3);
            prop_assert_eq!(
                Commitments::check_bytes(&b).ok(),
                Commitments::from_bytes(&b).ok().filter(|_| compressed).map(|c| c.k())
            );
        }

        #[test]
        fn any_changed_byte_of_a_share_is_caught(byte in 0usize..33, flip in 1u8..=255) {
            let (shares, c) = split(&Secret::random(), Threshold::new(3, 5).unwrap());
            let mut b = shares[2].to_bytes();
            b[byte] ^= flip;
            if let Ok(bad) = Share::from_bytes(&b) {
                prop_assert!(!c.verify(&bad));
            }
        }
    }

    #[test]
    fn checking_commitments_refuses_what_split_never_makes() {
        let (_, c) = split(&Secret::random(), Threshold::new(3, 5).unwrap());
        let mut compact = c.to_bytes();
        compact[0] = 5;
        let mut identity = c.to_bytes();
        identity[..33].fill(0);
        for b in [compact, identity, Vec::new(), vec![2; 32]] {
            assert!(Commitments::check_bytes(&b).is_err(), "{b:?}");
        }
        assert_eq!(Commitments::check_bytes(&c.to_bytes()), Ok(3));
    }

    #[test]
    fn a_bad_share_is_named_and_tolerated() {
        let s = Secret::random();
        let (shares, c) = split(&s, Threshold::new(3, 5).unwrap());
        let mut b = shares[1].to_bytes();
        b[20] ^= 1;
        let mut given = shares.clone();
        given[1] = Share::from_bytes(&b).unwrap();
        let (got, bad) = verify_and_combine(&given, &c).unwrap();
        assert_eq!((got, bad), (s, vec![2]));
        assert_eq!(Commitments::from_bytes(&c.to_bytes()).unwrap(), c);
    }
}
