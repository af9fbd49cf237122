//! The share nodes' request bodies as a node reads them: JSON of a deposit, a release and a
//! proof, the EIP-712 hash and signer recovery, the content hash, and the hex share and
//! commitments inside.
#![no_main]
use alloy::sol_types::SolStruct;
use ehr_share::share_node::{AnchorBody, DepositBody, ReleaseBody, domain};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dom = domain(
        31_337,
        alloy::primitives::Address::ZERO,
        alloy::primitives::B256::ZERO,
    );
    if let Ok(d) = serde_json::from_slice::<DepositBody>(data) {
        let hash = d.deposit.eip712_signing_hash(&dom);
        let _ = d.signature.recover_address_from_prehash(&hash);
        let _ = DepositBody::content_hash(&d.share, &d.commitments, &d.sealed_block);
        // The node's decoder (SIMD) must agree with the hex crate it replaced on every input.
        for text in [&d.share, &d.commitments, &d.sealed_block] {
            assert_eq!(
                ehr_share::strict_hex::decode(text).ok(),
                hex::decode(text).ok()
            );
        }
        if let Ok(b) = ehr_share::strict_hex::decode(&d.share) {
            let _ = ehr_share::shamir::Share::from_bytes(&b);
        }
        if let Ok(b) = ehr_share::strict_hex::decode(&d.commitments) {
            let _ = ehr_share::shamir::Commitments::check_bytes(&b);
            let _ = ehr_share::shamir::Commitments::from_bytes(&b);
        }
    }
    if let Ok(r) = serde_json::from_slice::<ReleaseBody>(data) {
        let hash = r.request.eip712_signing_hash(&dom);
        let _ = r.signature.recover_address_from_prehash(&hash);
    }
    if let Ok(a) = serde_json::from_slice::<AnchorBody>(data) {
        let _ = a.proof.len();
    }
});
