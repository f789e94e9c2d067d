//! Sees ARP and RARP frames on a LAN and says what they are. [`wire`] is pure: zero-copy
//! views of Ethernet frames and ARP packets, `ArpRepr` parse/emit, and [`wire::classify`] that
//! turns a captured frame into an [`wire::ArpEvent`]. [`source`] reads frames from any
//! [`source::FrameSource`] into events with counters, and [`sys`] is the only module that does
//! IO: a Linux packet socket per ethertype that hands user space only ARP (0x0806) and RARP
//! (0x8035) frames, never in promiscuous mode. This crate never decides anything (whether a VM
//! moved, whether a frame is trustworthy), never sends a frame, and keeps no state besides
//! counters.
//!
//! The `sys` feature (on by default) brings [`source`] and [`sys`], and with them tokio and
//! libc; without it only [`wire`] remains, which needs neither a runtime nor the OS.

#[cfg(feature = "sys")]
pub mod source;
#[cfg(all(feature = "sys", target_os = "linux"))]
pub mod sys;
pub mod wire;
