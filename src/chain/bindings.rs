//! Rust bindings of `contracts/src/EhrAccess.sol`, generated at build time from the compiled
//! artifact `contracts/out/EhrAccess.json` (written by `cargo run -p build-contracts`; a test
//! recompiles the source and proves the artifact has not drifted).

#![allow(missing_docs, unreachable_pub)]

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    EhrAccess,
    "contracts/out/EhrAccess.json"
);
