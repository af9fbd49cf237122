//! EIP-712 typed requests to share nodes: what is signed, and by whom. The domain binds chain id,
//! contract and the contract's deployment id (as the domain salt), the message binds record,
//! requester, the one share node it is for, a nonce and a deadline, so a request cannot be
//! replayed, redirected or reused on another deployment (even one at the same address).

use alloy::primitives::{Address, B256, Signature, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{Eip712Domain, SolStruct};

alloy::sol! {
    /// Ask one share node for its share of one record.
    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    struct ShareRelease {
        bytes32 recordId;
        address requester;
        /// The requester's access transaction for this record (zero for the patient): the
        /// node finds its `AccessAllowed` event in the receipt.
        bytes32 accessTx;
        address shareNode;
        uint256 nonce;
        uint64 deadline;
    }

    /// Deposit a share of a new record on one share node.
    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    struct ShareDeposit {
        bytes32 recordId;
        uint128 patient;
        address uploader;
        bytes32 salt;
        /// The record's keyed digest: its leaf commits to it.
        bytes32 digest;
        address shareNode;
        bytes32 contentHash;
        uint256 nonce;
        uint64 deadline;
    }
}

/// The EIP-712 domain of a deployment.
pub fn domain(chain_id: u64, contract: Address, deployment_id: B256) -> Eip712Domain {
    Eip712Domain::new(
        Some("ehr-share".into()),
        Some("5".into()),
        Some(U256::from(chain_id)),
        Some(contract),
        Some(deployment_id),
    )
}

/// What every signed request to a share node carries, so that signing and the node's checks
/// are written once for deposits and releases alike.
pub trait NodeRequest: SolStruct {
    /// What it is called in refusals ("deposit", "request").
    const WHAT: &'static str;
    /// The record it is about.
    fn record(&self) -> B256;
    /// The one share node it is addressed to.
    fn share_node(&self) -> Address;
    /// Who must have signed it.
    fn signer(&self) -> Address;
    /// Unix seconds after which it is void.
    fn deadline(&self) -> u64;
    /// Its one-time nonce.
    fn nonce(&self) -> U256;
}

impl NodeRequest for ShareRelease {
    const WHAT: &'static str = "request";
    fn record(&self) -> B256 {
        self.recordId
    }
    fn share_node(&self) -> Address {
        self.shareNode
    }
    fn signer(&self) -> Address {
        self.requester
    }
    fn deadline(&self) -> u64 {
        self.deadline
    }
    fn nonce(&self) -> U256 {
        self.nonce
    }
}

impl NodeRequest for ShareDeposit {
    const WHAT: &'static str = "deposit";
    fn record(&self) -> B256 {
        self.recordId
    }
    fn share_node(&self) -> Address {
        self.shareNode
    }
    fn signer(&self) -> Address {
        self.uploader
    }
    fn deadline(&self) -> u64 {
        self.deadline
    }
    fn nonce(&self) -> U256 {
        self.nonce
    }
}

/// Signs a request to a share node (a deposit or a release) under `domain`: the signature
/// `signer` would make, through libsecp256k1 ([`crate::crypto::sign_prehash`]).
///
/// # Errors
/// When signing fails.
pub fn sign<R: NodeRequest>(
    signer: &PrivateKeySigner,
    msg: &R,
    domain: &Eip712Domain,
) -> Result<Signature, alloy::signers::Error> {
    let hash = msg.eip712_signing_hash(domain);
    match crate::crypto::sign_prehash(signer.credential(), &hash) {
        Some(signature) => Ok(signature),
        None => signer.sign_hash_sync(&hash),
    }
}

/// The public key that signed `hash` and its address, if the signature is valid (one
/// recovery: a release seals its share to that key, and recovering twice costs a node two
/// scalar multiplications per read). Through libsecp256k1 ([`crate::crypto::recover_signer`]):
/// a node recovers a key for every deposit and release.
pub(crate) fn signer_of(sig: &Signature, hash: B256) -> Option<(k256::PublicKey, Address)> {
    crate::crypto::recover_signer(sig, &hash)
}
