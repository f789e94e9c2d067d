//! The skyvine router's control-plane core: what a router decides, with no way of doing
//! anything itself.
//!
//! It holds the router's tables and the migration logic ([`node::Node`]), the control protocol
//! between routers ([`proto`]), the checks on a new control connection ([`link`]), the
//! forwarding view the data plane consults for every packet ([`fib::FibSnapshot`]), the framing
//! of relay datagrams and the relay's decisions ([`relay`]) and the configuration file's schema
//! and validation ([`config`]). Inputs are parsed frames, control
//! messages, peer events and configuration text, each with the `now` it happened at; outputs
//! are plain data: messages to send, frames to transmit, routes the kernel should hold, the
//! next timeout.
//!
//! This crate never does IO: it opens no socket, file or device, reads no clock (time is always
//! an argument), spawns no thread or task and depends on no async runtime, netlink or TUN crate
//! (`cargo tree -p skyvine-core -e normal` shows it). The same code therefore runs unchanged
//! in the daemon (`skyvine-router`, which moves the bytes and applies the effects) and in the
//! deterministic multi-site simulations of `skyvine-tests`.

pub mod config;
pub mod datagram;
pub mod fib;
pub mod link;
pub mod networks;
pub mod node;
pub mod proto;
pub mod relay;
