//! The skyvine router: a daemon that joins sites into one virtual network over QUIC and keeps
//! migrated VMs reachable.
//!
//! The decisions live in the `skyvine-core` crate (sans IO: messages, frames and timeouts in,
//! effects out) and in `skyvine-tables`. Everything here moves bytes and applies effects: QUIC
//! endpoints and control streams ([`pki`], [`daemon`]), the TUN data plane ([`dataplane`] with
//! the published forwarding view, [`fib`]), paths through relay routers ([`relay`]), kernel routes and neighbours ([`kernel`], kept in step by [`kernel_sync`]), the LAN's
//! packet sockets ([`lanio`]), the admin socket and metrics ([`admin`]), and reading the
//! config file ([`config`]).

pub mod admin;
pub mod check;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod fib;
pub mod kernel;
pub mod kernel_sync;
pub mod lancopy;
pub mod lanio;
pub mod pki;
pub mod relay;
pub mod revoked;
