//! The wire protocol lives in its own crate (`confab-protocol`) so the test client and the load
//! generator speak exactly the server's types.
pub use confab_protocol::*;
