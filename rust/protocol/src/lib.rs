//! MPC protocols.
