//! The records office's patient voucher: an EIP-712 signature that lets exactly one account
//! claim exactly one `Addr` before a deadline (the contract's `registerPatient`). The office
//! signs it offline after identifying the patient; the patient pays the gas.

use alloy::primitives::{Address, Bytes, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{Eip712Domain, SolStruct};

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

/// The contract's own EIP-712 domain (name "EhrAccess", version "2").
fn domain(chain_id: u64, contract: Address) -> Eip712Domain {
    Eip712Domain::new(
        Some("EhrAccess".into()),
        Some("2".into()),
        Some(U256::from(chain_id)),
        Some(contract),
        None,
    )
}

/// The office signs a voucher for `account` to claim `addr` until `deadline` (unix seconds).
///
/// # Errors
/// When signing fails.
pub fn sign_voucher(
    office: &PrivateKeySigner,
    chain_id: u64,
    contract: Address,
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
    let sig = office.sign_hash_sync(&v.eip712_signing_hash(&domain(chain_id, contract)))?;
    Ok(Bytes::from(sig.as_bytes().to_vec()))
}
