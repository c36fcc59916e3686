//! The error type shared by the builders.

use core::fmt;

/// Why a builder (ARP / ICMP / ND reply, TTL decrement, checksum completion) did not write.
///
/// `#[repr(u8)]` so the dataplane can index per-reason counters with `as usize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BuildError {
    /// The output buffer (or the frame being rewritten in place) is too short.
    BufferTooSmall = 0,
    /// The [`Parsed`](crate::Parsed) packet is not the kind this builder answers (for example
    /// an ARP reply given to [`arp::write_reply`](crate::arp::write_reply)).
    UnexpectedPacket = 1,
    /// The packet was sent to a broadcast or multicast address; answering it in place would
    /// make us send from that address.
    NotUnicast = 2,
    /// The IPv4 TTL or IPv6 hop limit is 0 or 1: the packet must not be forwarded (the caller
    /// usually answers with an ICMP time exceeded error).
    TtlExpired = 3,
    /// The packet is a fragment; the operation needs the whole L4 payload.
    Fragmented = 4,
}

impl BuildError {
    /// Every variant, in discriminant order.
    pub const ALL: [BuildError; 5] = [
        BuildError::BufferTooSmall,
        BuildError::UnexpectedPacket,
        BuildError::NotUnicast,
        BuildError::TtlExpired,
        BuildError::Fragmented,
    ];

    /// The variant's name in snake_case, for counters and logs.
    pub const fn as_str(&self) -> &'static str {
        match self {
            BuildError::BufferTooSmall => "buffer_too_small",
            BuildError::UnexpectedPacket => "unexpected_packet",
            BuildError::NotUnicast => "not_unicast",
            BuildError::TtlExpired => "ttl_expired",
            BuildError::Fragmented => "fragmented",
        }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for BuildError {}
