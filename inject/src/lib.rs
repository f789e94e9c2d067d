//! Builds and sends the ARP and RARP frames a router uses to move traffic: gratuitous ARP
//! (request and reply forms, broadcast or unicast to one host), proxy ARP replies, ARP probes
//! and requests, and QEMU-style RARP announcements. [`wire`] is pure (bytes in a `[u8; 60]`);
//! [`sink`] is the [`sink::FrameSink`] trait with an in-memory recorder; [`sys`] is the only
//! module that does IO, a Linux packet socket that sends whole frames on one interface. This
//! crate never decides which frame to send, when, or to whom, and never receives frames.
//!
//! The `sys` feature (on by default) brings [`sys`], and with it libc; without it [`wire`] and
//! [`sink`] remain, which need nothing from the OS.

pub mod sink;
#[cfg(all(feature = "sys", target_os = "linux"))]
pub mod sys;
pub mod wire;
