//! weir's sans-IO protocol code.
//!
//! Everything in this crate works on caller-provided byte slices: nothing here performs I/O,
//! reads a clock, allocates on a parsing path, or panics on any input. The dataplane drives it.
//!
//! # Layout
//!
//! * [`wire`] — typed views over header bytes in the style of `smoltcp::wire` (and re-exports of
//!   smoltcp's own views and `Repr`s where they fit).
//! * [`checksum`] — the internet checksum (RFC 1071), pseudo-header sums and RFC 1624
//!   incremental updates.
//! * [`parse`] — [`parse_frame`], the per-packet whole-frame classifier producing a small `Copy`
//!   [`Parsed`] summary.
//! * [`flow`] — [`FlowKey`], built only from a [`Parsed`], with a symmetric hash.
//! * Builders that answer or rewrite packets in caller-provided buffers: [`arp`], [`icmp`],
//!   [`nd`], [`ipv4`], [`ipv6`] and [`l4`].
//! * [`fixtures`] — real sample frames for tests (here and in other crates).
//! * [`fuzzing`] — the logic of the `parse_frame` fuzz target, usable from ordinary tests.
//!
//! # Contracts
//!
//! * Views follow smoltcp: `new_unchecked` wraps, `check_len` validates, `new_checked` does both;
//!   after `check_len` succeeds no accessor panics. Getters need `AsRef<[u8]>`, setters
//!   `AsMut<[u8]>`.
//! * [`parse_frame`] and every builder are total: any input yields a value or an error.
//! * Builders write into a caller-provided `&mut [u8]` and return the number of bytes written,
//!   or a [`BuildError`]. They never pad frames to the 60-byte Ethernet minimum: devices do.

#![warn(missing_docs)]

pub mod arp;
pub mod checksum;
pub mod encap;
mod error;
pub mod fixtures;
pub mod flow;
pub mod fuzzing;
pub mod icmp;
pub mod icmp_nat;
pub mod ipv4;
pub mod ipv6;
pub mod l4;
pub mod nat;
pub mod nd;
pub mod parse;
pub mod tcp;
pub mod wire;

pub use error::BuildError;
pub use flow::{FlowKey, PackedV4};
pub use parse::{parse_frame, ParseError, Parsed, L3, L4};
pub use wire::MacAddr;
