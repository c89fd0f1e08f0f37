//! Rust bindings generated at compile time from the committed artifacts in `contracts/out/` (ABI + bytecode,
//! rebuilt by `scripts/build-contracts.sh`; a test fails when they are stale). The bytecode gives each contract
//! a `deploy` constructor, used by tests and local development.

#![allow(missing_docs, clippy::too_many_arguments)]

use alloy::sol;

sol!(
    /// confab's LangDAO paid-session contract (`contracts/LangDAO.sol`).
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    LangDAO,
    "../../contracts/out/LangDAO.json"
);

sol!(
    /// A mintable ERC-20 for tests (`contracts/TestToken.sol`): anyone can mint.
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    TestToken,
    "../../contracts/out/TestToken.json"
);
