//! The skyvine router: a daemon that joins sites into one virtual network over QUIC and keeps
//! migrated VMs reachable.
//!
//! The decisions live in [`node`] (sans-IO: messages, frames and timeouts in, effects out) and
//! in the `skyvine-tables` crate. Everything else here moves bytes and applies effects: QUIC
//! endpoints ([`pki`], [`daemon`]), the TUN data plane ([`dataplane`]), kernel routes and
//! neighbours ([`kernel`]).

pub mod admin;
pub mod check;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod fib;
pub mod kernel;
pub mod lanio;
pub mod node;
pub mod pki;
pub mod proto;
