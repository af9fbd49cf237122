//! Merkle trees of records, as the contract checks them (`leafOf`, `verifyProof`): a record's
//! leaf is `keccak256(keccak256(abi.encode(recordId, patient, author, digest)))` (hashed twice
//! so that no inner node passes for a leaf), and a parent is the keccak256 of its two children
//! in sorted order (so a proof is just the sibling hashes, with no left/right flags). A tree of
//! one record is its leaf, with an empty proof.

use alloy::primitives::{Address, B256, keccak256};
use alloy::sol_types::SolValue;
use serde::{Deserialize, Serialize};

use super::types::{PatientAddr, RecordId};

/// The leaf of a record.
pub fn leaf(id: RecordId, patient: PatientAddr, author: Address, digest: B256) -> B256 {
    let inner = keccak256((id.0, patient.key(), author, digest).abi_encode());
    keccak256(inner)
}

fn parent(a: B256, b: B256) -> B256 {
    if a < b {
        keccak256((a, b).abi_encode())
    } else {
        keccak256((b, a).abi_encode())
    }
}

/// Whether `proof` leads from `leaf` to `root`.
pub fn verify(leaf: B256, proof: &[B256], root: B256) -> bool {
    proof.iter().fold(leaf, |h, p| parent(h, *p)) == root
}

/// A tree over some leaves: its root and each leaf's proof, in the leaves' order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    /// The root.
    pub root: B256,
    /// The proof of each leaf, in the order the leaves were given.
    pub proofs: Vec<Vec<B256>>,
}

impl Tree {
    /// Builds the tree of `leaves` (at least one). A level with an odd count carries its last
    /// node up unpaired, so every proof has at most ceil(log2(n)) hashes.
    ///
    /// # Panics
    /// When `leaves` is empty.
    pub fn new(leaves: &[B256]) -> Self {
        assert!(!leaves.is_empty(), "a tree needs at least one leaf");
        let mut proofs = vec![Vec::new(); leaves.len()];
        // For each node of the current level, the leaves under it.
        let mut level: Vec<(B256, Vec<usize>)> = leaves
            .iter()
            .enumerate()
            .map(|(i, l)| (*l, vec![i]))
            .collect();
        while level.len() > 1 {
            let mut next = Vec::with_capacity(level.len().div_ceil(2));
            let mut it = level.into_iter();
            while let Some((a, under_a)) = it.next() {
                match it.next() {
                    Some((b, under_b)) => {
                        for &i in &under_a {
                            proofs[i].push(b);
                        }
                        for &i in &under_b {
                            proofs[i].push(a);
                        }
                        let mut under = under_a;
                        under.extend(under_b);
                        next.push((parent(a, b), under));
                    }
                    None => next.push((a, under_a)),
                }
            }
            level = next;
        }
        Self {
            root: level[0].0,
            proofs,
        }
    }
}

/// Where a record sits on chain: its leaf's fields and its inclusion proof to an anchored root
/// (the contract's `RecordProof`). Share nodes keep it with their shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordProof {
    /// The patient.
    pub patient: PatientAddr,
    /// The uploader.
    pub author: Address,
    /// The salt the record id is derived from.
    pub salt: B256,
    /// The record's keyed digest.
    pub digest: B256,
    /// The anchored root.
    pub root: B256,
    /// Sibling hashes from the leaf up.
    pub proof: Vec<B256>,
}

impl RecordProof {
    /// The record id it describes: `recordIdOf(author, patient, salt)`.
    pub fn record_id(&self) -> RecordId {
        RecordId::derive(self.author, self.patient, self.salt)
    }

    /// The record's leaf.
    pub fn leaf(&self) -> B256 {
        leaf(self.record_id(), self.patient, self.author, self.digest)
    }

    /// Whether the proof leads from the leaf to the root (not whether the root is anchored).
    pub fn holds(&self) -> bool {
        verify(self.leaf(), &self.proof, self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: usize, seed: u8) -> Vec<B256> {
        (0..n)
            .map(|i| keccak256([seed, (i & 0xff) as u8, (i >> 8) as u8]))
            .collect()
    }

    #[test]
    fn one_leaf_is_its_own_root() {
        let l = leaves(1, 0);
        let t = Tree::new(&l);
        assert_eq!((t.root, t.proofs[0].len()), (l[0], 0));
        assert!(verify(l[0], &[], t.root));
    }

    #[test]
    fn proofs_are_short() {
        let t = Tree::new(&leaves(1000, 1));
        assert!(
            t.proofs.iter().all(|p| p.len() <= 10),
            "ceil(log2(1000)) = 10"
        );
    }

    proptest! {
        #[test]
        fn every_leaf_proves_and_nothing_else_does(n in 1usize..70, seed: u8, pick: usize) {
            let l = leaves(n, seed);
            let t = Tree::new(&l);
            for (i, leaf) in l.iter().enumerate() {
                prop_assert!(verify(*leaf, &t.proofs[i], t.root));
            }
            let i = pick % n;
            // Another leaf with this proof, a changed proof, another root: refused.
            prop_assert!(!verify(keccak256(b"stranger"), &t.proofs[i], t.root));
            if let Some(first) = t.proofs[i].first() {
                let mut bad = t.proofs[i].clone();
                bad[0] = keccak256(first);
                prop_assert!(!verify(l[i], &bad, t.root));
            }
            prop_assert!(!verify(l[i], &t.proofs[i], keccak256(t.root)));
        }
    }
}
