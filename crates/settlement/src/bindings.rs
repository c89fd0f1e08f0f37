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

/// The parts of the public LangDAO contract's interface the backend relies on, pinned: a change to
/// `LangDAO.sol` that breaks compatibility with the public deployment fails here.
#[cfg(test)]
mod interface_tests {
    use alloy::{
        primitives::{Address, U256},
        sol_types::{SolCall, SolEvent, SolValue},
    };

    use super::LangDAO;

    alloy::sol! {
        /// The public contract's `Session`, in its field order.
        struct PublicSession {
            address student;
            address tutor;
            address token;
            uint256 startTime;
            uint256 endTime;
            uint256 ratePerSecond;
            uint256 totalPaid;
            uint8 language;
            uint256 id;
            bool isActive;
        }
    }

    #[test]
    fn calls_and_events_have_the_public_signatures() {
        assert_eq!(LangDAO::endSessionCall::SIGNATURE, "endSession(address)");
        assert_eq!(
            LangDAO::startSessionCall::SIGNATURE,
            "startSession(address,uint8)"
        );
        assert_eq!(
            LangDAO::activeSessionsCall::SIGNATURE,
            "activeSessions(address)"
        );
        assert_eq!(
            LangDAO::sessionHistoryCall::SIGNATURE,
            "sessionHistory(uint256)"
        );
        assert_eq!(
            LangDAO::getCurrentSessionCostCall::SIGNATURE,
            "getCurrentSessionCost(uint256)"
        );
        assert_eq!(LangDAO::ownerCall::SIGNATURE, "owner()");
        assert_eq!(
            LangDAO::SessionStarted::SIGNATURE,
            "SessionStarted(uint256,address,address,uint8)"
        );
        assert_eq!(
            LangDAO::SessionEnded::SIGNATURE,
            "SessionEnded(uint256,address,uint256,uint256)"
        );
    }

    #[test]
    fn active_sessions_returns_the_public_session_layout() {
        let public = PublicSession {
            student: Address::repeat_byte(1),
            tutor: Address::repeat_byte(2),
            token: Address::repeat_byte(3),
            startTime: U256::from(1_000),
            endTime: U256::ZERO,
            ratePerSecond: U256::from(7),
            totalPaid: U256::ZERO,
            language: 5,
            id: U256::from(42),
            isActive: true,
        };
        let ours = LangDAO::activeSessionsCall::abi_decode_returns(&public.abi_encode()).unwrap();
        assert_eq!(
            (ours.student, ours.tutor, ours.token),
            (public.student, public.tutor, public.token)
        );
        assert_eq!(
            (ours.startTime, ours.ratePerSecond, ours.language),
            (public.startTime, public.ratePerSecond, 5)
        );
        assert_eq!((ours.id, ours.isActive), (public.id, true));
        let history =
            LangDAO::sessionHistoryCall::abi_decode_returns(&public.abi_encode()).unwrap();
        assert_eq!(history.id, public.id);
    }
}
