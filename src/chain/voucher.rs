//! The records office's patient voucher: an EIP-712 signature that lets exactly one account
//! claim exactly one `Addr` before a deadline (the contract's `registerPatient`). The office
//! signs it offline after identifying the patient; the patient pays the gas.

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{Eip712Domain, SolStruct};

use super::EhrChain;
use super::types::PatientAddr;

alloy::sol! {
    /// What the records office signs: this `Addr` may be claimed by this account until `deadline`.
    #[derive(Debug)]
    struct PatientVoucher {
        uint64 aid;
        uint64 pid;
        address account;
        uint64 deadline;
    }
}

/// The contract's own EIP-712 domain (name "EhrAccess", version "5", salt = the deployment id,
/// so a voucher is void on a redeployment at the same address).
fn domain(chain_id: u64, contract: Address, deployment_id: B256) -> Eip712Domain {
    Eip712Domain::new(
        Some("EhrAccess".into()),
        Some("5".into()),
        Some(U256::from(chain_id)),
        Some(contract),
        Some(deployment_id),
    )
}

/// The office signs a voucher for `account` to claim `addr` until `deadline` (unix seconds), for
/// the deployment `chain` is connected to.
///
/// # Errors
/// When signing fails.
pub fn sign_voucher(
    office: &PrivateKeySigner,
    chain: &EhrChain,
    addr: PatientAddr,
    account: Address,
    deadline: u64,
) -> Result<Bytes, alloy::signers::Error> {
    let v = PatientVoucher {
        aid: addr.aid(),
        pid: addr.pid(),
        account,
        deadline,
    };
    let d = domain(chain.chain_id(), chain.address(), chain.deployment_id());
    let sig = office.sign_hash_sync(&v.eip712_signing_hash(&d))?;
    Ok(Bytes::from(sig.as_bytes().to_vec()))
}
