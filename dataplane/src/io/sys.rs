//! Small syscall helpers shared by the kernel-socket backends ([`afpacket`](super::afpacket) and
//! [`tap`](super::tap)): interface lookups by name (index, MAC, MTU, flags) through `ioctl`s on a
//! throwaway socket, socket options, and error context.
//!
//! Name lookups resolve in the network namespace of the calling *thread* (Linux namespaces are
//! per thread), which is what the tests rely on.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Turns a `-1`-on-error syscall result into an `io::Result`.
pub(crate) fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Wraps `e` so its message names the object (`"af_packet eth0"`) and the failing step.
pub(crate) fn context(e: io::Error, subject: &str, step: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{subject}: {step}: {e}"))
}

/// An `ifreq` with `name` filled in; fails for names the kernel could never hold
/// (empty is allowed: TUNSETIFF then picks one).
pub(crate) fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?} is not a valid Linux interface name"),
        ));
    }
    // SAFETY: `ifreq` is plain old data (a byte array and a union of integers, sockaddrs and a
    // pointer), for which all-zero bytes are a valid value (an empty name, null pointer).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = libc::c_char::from_ne_bytes([src]);
    }
    Ok(req)
}

/// Reads the (NUL-terminated) name the kernel left in `req`.
pub(crate) fn ifreq_name(req: &libc::ifreq) -> String {
    let bytes: Vec<u8> =
        req.ifr_name.iter().map(|c| c.to_ne_bytes()[0]).take_while(|&b| b != 0).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A datagram socket used only as a handle for interface `ioctl`s.
fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call with constant arguments; no pointers involved.
    let fd = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` was just returned by socket(2), is open, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs the interface `ioctl` `request` on `req`.
fn if_ioctl(request: libc::c_ulong, req: &mut libc::ifreq) -> io::Result<()> {
    let sock = ioctl_socket()?;
    // SAFETY: every SIOC[GS]IF* request used here reads and/or writes exactly one `struct ifreq`,
    // and `req` is a valid, exclusively borrowed `ifreq` for the duration of the call.
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), request, std::ptr::from_mut(req)) })?;
    Ok(())
}

/// The kernel's index of interface `name` (`SIOCGIFINDEX`).
pub fn if_index(name: &str) -> io::Result<u32> {
    let mut req = ifreq(name)?;
    if_ioctl(libc::SIOCGIFINDEX, &mut req)?;
    // SAFETY: SIOCGIFINDEX succeeded, so the kernel stored the index in `ifru_ifindex`; every bit
    // pattern is a valid `c_int`.
    let idx = unsafe { req.ifr_ifru.ifru_ifindex };
    u32::try_from(idx).map_err(|_| io::Error::other("kernel returned a negative ifindex"))
}

/// The hardware (MAC) address of Ethernet interface `name` (`SIOCGIFHWADDR`).
pub fn if_mac(name: &str) -> io::Result<[u8; 6]> {
    let mut req = ifreq(name)?;
    if_ioctl(libc::SIOCGIFHWADDR, &mut req)?;
    // SAFETY: SIOCGIFHWADDR succeeded, so the kernel stored a `sockaddr` in `ifru_hwaddr`; it is
    // plain old data, valid for every bit pattern.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (dst, src) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *dst = src.to_ne_bytes()[0];
    }
    Ok(mac)
}

/// Gives Ethernet interface `name` the hardware address `mac` (`SIOCSIFHWADDR`). Needs
/// `CAP_NET_ADMIN`; some devices take it only while down.
pub fn set_if_mac(name: &str, mac: [u8; 6]) -> io::Result<()> {
    let mut req = ifreq(name)?;
    // SAFETY: writing a union field of plain-old-data type is sound; SIOCSIFHWADDR reads the
    // `sockaddr` in `ifru_hwaddr`.
    unsafe {
        req.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
        for (dst, src) in req.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac) {
            *dst = libc::c_char::from_ne_bytes([src]);
        }
    }
    if_ioctl(libc::SIOCSIFHWADDR, &mut req)
}

/// The IPv4 and IPv6 addresses the kernel has on interface `name` (`getifaddrs(3)`).
pub fn if_addresses(name: &str) -> io::Result<Vec<std::net::IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head into `head`, which is valid for writing.
    cvt(unsafe { libc::getifaddrs(&mut head) })?;
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let n = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        if n.to_bytes() != name.as_bytes() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points to a sockaddr of at least its family's size.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        if family == libc::AF_INET {
            // SAFETY: an AF_INET address is a sockaddr_in.
            let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
            out.push(std::net::IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes()));
        } else if family == libc::AF_INET6 {
            // SAFETY: an AF_INET6 address is a sockaddr_in6.
            let sin6 = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
            out.push(std::net::IpAddr::from(sin6.sin6_addr.s6_addr));
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once, after the last use of the list.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Whether GRO, GSO and TSO are on for interface `name` (the ethtool `ETHTOOL_GGRO`,
/// `ETHTOOL_GGSO` and `ETHTOOL_GTSO` requests).
pub fn if_offloads(name: &str) -> io::Result<[bool; 3]> {
    const GET: [u32; 3] = [0x2b, 0x23, 0x1e];
    let mut on = [false; 3];
    for (slot, cmd) in on.iter_mut().zip(GET) {
        #[repr(C)]
        struct EthtoolValue {
            cmd: u32,
            data: u32,
        }
        let mut value = EthtoolValue { cmd, data: 0 };
        let mut req = ifreq(name)?;
        req.ifr_ifru.ifru_data = std::ptr::from_mut(&mut value).cast();
        let sock = ioctl_socket()?;
        // SAFETY: SIOCETHTOOL reads one `struct ifreq` whose `ifr_data` points to the request,
        // here a `struct ethtool_value` (`value`, valid and exclusively borrowed for the call,
        // as is `req`), which the kernel reads and writes.
        cvt(unsafe {
            libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, std::ptr::from_mut(&mut req))
        })?;
        *slot = value.data != 0;
    }
    Ok(on)
}

/// The MTU of interface `name` in bytes (L3 payload, without the Ethernet header).
pub fn if_mtu(name: &str) -> io::Result<u32> {
    let mut req = ifreq(name)?;
    if_ioctl(libc::SIOCGIFMTU, &mut req)?;
    // SAFETY: SIOCGIFMTU succeeded, so the kernel stored the MTU in `ifru_mtu`, a `c_int`.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    u32::try_from(mtu).map_err(|_| io::Error::other("kernel returned a negative MTU"))
}

/// The flags (`IFF_*`) of interface `name` (`SIOCGIFFLAGS`).
pub fn if_flags(name: &str) -> io::Result<u32> {
    let mut req = ifreq(name)?;
    if_ioctl(libc::SIOCGIFFLAGS, &mut req)?;
    // SAFETY: SIOCGIFFLAGS succeeded, so the kernel stored the flags in `ifru_flags`, a
    // `c_short`; every bit pattern is valid.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    Ok(u32::from(u16::from_ne_bytes(flags.to_ne_bytes())))
}

/// Sets `IFF_UP` on interface `name` (`SIOCGIFFLAGS` then `SIOCSIFFLAGS`), in the calling
/// thread's network namespace. Needs `CAP_NET_ADMIN`.
pub fn set_link_up(name: &str) -> io::Result<()> {
    let mut req = ifreq(name)?;
    if_ioctl(libc::SIOCGIFFLAGS, &mut req).map_err(|e| context(e, name, "SIOCGIFFLAGS"))?;
    // SAFETY: SIOCGIFFLAGS succeeded, so `ifru_flags` holds the current flags; writing a union
    // field of plain integer type is always sound, and SIOCSIFFLAGS reads the same field.
    unsafe {
        // IFF_UP is 1: the conversion to c_short cannot fail.
        req.ifr_ifru.ifru_flags |= libc::c_short::try_from(libc::IFF_UP).unwrap_or(1);
    }
    if_ioctl(libc::SIOCSIFFLAGS, &mut req).map_err(|e| context(e, name, "SIOCSIFFLAGS"))
}

/// `setsockopt(fd, level, name, &val, sizeof val)`.
pub(crate) fn setsockopt<T: Copy>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    val: &T,
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `val` is a valid `T` readable for `size_of::<T>()` bytes, which is the length
    // passed; the kernel only reads it during the call.
    cvt(unsafe { libc::setsockopt(fd, level, name, std::ptr::from_ref(val).cast(), len) })?;
    Ok(())
}

/// `getsockopt(fd, level, name)` into a `T` (all-zero bytes must be a valid `T`, hence the
/// caller-provided initial value).
pub(crate) fn getsockopt<T: Copy>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    mut val: T,
) -> io::Result<T> {
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<T>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `val` is a valid, exclusively borrowed `T` writable for `len` bytes and `len` is a
    // valid `socklen_t`; the kernel writes at most `len` bytes. Callers only use plain-old-data
    // `T` (C structs of integers), valid for any bytes the kernel writes.
    cvt(unsafe {
        libc::getsockopt(fd, level, name, std::ptr::from_mut(&mut val).cast(), &mut len)
    })?;
    Ok(val)
}

/// The system page size in bytes.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
}

/// Test support: private network namespaces, `ip` commands, and a plain `AF_PACKET` socket to
/// act as the far end of a link.
#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
pub(crate) mod testnet {
    use super::{cvt, setsockopt};
    use crate::mempool::{Mempool, MempoolConfig};
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::process::Command;
    use std::time::{Duration, Instant};

    /// Whether the tests can create namespaces and interfaces.
    pub(crate) fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    /// Runs `f` on a fresh thread that first moves itself into a private network namespace
    /// (`unshare(CLONE_NEWNET)`; namespaces are per thread and inherited by the children it
    /// spawns, such as `ip`), brings `lo` up and turns IPv6 off (no router solicitations or MLD
    /// reports as background noise). The namespace and every interface in it vanish when the
    /// thread ends and the last socket in it is closed. A dedicated thread (instead of the test's
    /// own) keeps the namespace from leaking into whatever the harness runs next on that thread.
    ///
    /// Without root, prints a loud skip notice and returns without running `f`.
    pub(crate) fn in_private_netns<F: FnOnce() + Send + 'static>(test: &str, f: F) {
        if !is_root() {
            eprintln!("SKIPPED: {test}: needs root (network namespaces)");
            return;
        }
        let handle = std::thread::spawn(move || {
            // SAFETY: unshare(CLONE_NEWNET) only changes this thread's namespace membership; it
            // has no memory-safety preconditions.
            let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "unshare(CLONE_NEWNET): {}", io::Error::last_os_error());
            ip(&["link", "set", "lo", "up"]);
            // Best effort: a kernel without IPv6 has no such knobs.
            let _ = Command::new("sysctl")
                .args(["-qw", "net.ipv6.conf.all.disable_ipv6=1"])
                .args(["net.ipv6.conf.default.disable_ipv6=1"])
                .status();
            f();
        });
        if let Err(panic) = handle.join() {
            std::panic::resume_unwind(panic);
        }
    }

    /// Runs `ip ARGS` in the calling thread's namespace; panics with its output on failure.
    pub(crate) fn ip(args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            out.status.success(),
            "ip {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs a command, ignoring failure (offload tweaks a device may not support).
    pub(crate) fn best_effort(cmd: &str, args: &[&str]) {
        let _ = Command::new(cmd).args(args).output();
    }

    /// A veth pair `a`/`b`, both up, GRO off on both ends.
    pub(crate) fn veth_pair(a: &str, b: &str) {
        ip(&["link", "add", a, "type", "veth", "peer", "name", b]);
        ip(&["link", "set", a, "up"]);
        ip(&["link", "set", b, "up"]);
        best_effort("ethtool", &["-K", a, "gro", "off"]);
        best_effort("ethtool", &["-K", b, "gro", "off"]);
    }

    /// A small private pool for one test.
    pub(crate) fn test_pool(buffers: u32, data_room: u16) -> &'static Mempool {
        Mempool::new(MempoolConfig { buffers, data_room, headroom: 128 }).expect("mempool")
    }

    /// Waits until `fd` polls readable or `timeout` passes.
    pub(crate) fn wait_readable(fd: RawFd, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `pfd` is one valid pollfd and the count passed is 1.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        r > 0 && pfd.revents & libc::POLLIN != 0
    }

    /// A plain `AF_PACKET`/`SOCK_RAW` socket bound to one interface: the test's end of a link.
    /// Ignores frames it (or anyone on this host) sends out of the interface.
    pub(crate) struct RawSocket {
        fd: OwnedFd,
        ifindex: libc::c_int,
    }

    impl RawSocket {
        pub(crate) fn bind(iface: &str) -> RawSocket {
            let ifindex = libc::c_int::try_from(super::if_index(iface).expect("ifindex"))
                .expect("ifindex fits c_int");
            let proto = 0x0003u16.to_be(); // ETH_P_ALL
                                           // SAFETY: plain socket(2) call with constant arguments.
            let fd = cvt(unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                    libc::c_int::from(proto),
                )
            })
            .expect("AF_PACKET socket");
            // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let one: libc::c_int = 1;
            setsockopt(fd.as_raw_fd(), libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one)
                .expect("PACKET_IGNORE_OUTGOING");
            let sll = sockaddr_ll(ifindex, proto);
            // SAFETY: `sll` is a valid sockaddr_ll and the length passed is its size.
            cvt(unsafe {
                libc::bind(fd.as_raw_fd(), std::ptr::from_ref(&sll).cast(), sockaddr_ll_len())
            })
            .expect("bind AF_PACKET");
            RawSocket { fd, ifindex }
        }

        /// Sends one whole frame out of the interface.
        pub(crate) fn send(&self, frame: &[u8]) {
            let sll = sockaddr_ll(self.ifindex, 0);
            // SAFETY: `frame` is readable for its length; `sll` is a valid sockaddr_ll of the
            // length passed.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    std::ptr::from_ref(&sll).cast(),
                    sockaddr_ll_len(),
                )
            };
            assert_eq!(
                usize::try_from(r).ok(),
                Some(frame.len()),
                "sendto: {}",
                io::Error::last_os_error()
            );
        }

        /// Receives one incoming frame into `buf`, waiting until `deadline`; `None` on timeout.
        pub(crate) fn recv(&self, buf: &mut [u8], deadline: Instant) -> Option<usize> {
            loop {
                // SAFETY: `buf` is writable for its length; no address is requested.
                let r = unsafe {
                    libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                };
                if let Ok(n) = usize::try_from(r) {
                    return Some(n);
                }
                let now = Instant::now();
                if now >= deadline {
                    return None;
                }
                wait_readable(self.fd.as_raw_fd(), deadline - now);
            }
        }
    }

    fn sockaddr_ll(ifindex: libc::c_int, proto_be: u16) -> libc::sockaddr_ll {
        libc::sockaddr_ll {
            sll_family: u16::try_from(libc::AF_PACKET).expect("AF_PACKET fits"),
            sll_protocol: proto_be,
            sll_ifindex: ifindex,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 0,
            sll_addr: [0; 8],
        }
    }

    fn sockaddr_ll_len() -> libc::socklen_t {
        libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_ll>()).expect("small")
    }

    /// An Ethernet frame `dst, src, ethertype, payload`, padded to the 60-byte minimum.
    pub(crate) fn eth_frame(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(14 + payload.len().max(46));
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        if f.len() < 60 {
            f.resize(60, 0);
        }
        f
    }

    /// IEEE 802 local experimental EtherType: frames of this type are the tests' own.
    pub(crate) const TEST_ETHERTYPE: u16 = 0x88b5;
    /// Marks the tests' frames inside a payload.
    pub(crate) const MAGIC: &[u8; 4] = b"WEIR";

    /// A test frame of [`TEST_ETHERTYPE`] carrying `MAGIC`, `seq`, and `extra` filler bytes.
    pub(crate) fn test_frame(dst: [u8; 6], src: [u8; 6], seq: u32, extra: usize) -> Vec<u8> {
        let mut payload = Vec::with_capacity(8 + extra);
        payload.extend_from_slice(MAGIC);
        payload.extend_from_slice(&seq.to_be_bytes());
        payload.extend((0..extra).map(|i| (i as u8) ^ (seq as u8)));
        eth_frame(dst, src, TEST_ETHERTYPE, &payload)
    }

    /// The sequence number of one of the tests' frames (untagged), if it is one.
    pub(crate) fn test_seq(frame: &[u8]) -> Option<u32> {
        if frame.len() < 22 || frame[12..14] != TEST_ETHERTYPE.to_be_bytes() {
            return None;
        }
        if &frame[14..18] != MAGIC {
            return None;
        }
        Some(u32::from_be_bytes(frame[18..22].try_into().ok()?))
    }

    /// An IPv4/UDP frame from 198.18.x.y to 198.19.x.y (RFC 2544 benchmarking space) with
    /// ports derived from `flow`, carrying `MAGIC` and `seq`. The IPv4 header checksum is
    /// valid; the UDP checksum is zero (none).
    pub(crate) fn udp_frame(dst: [u8; 6], src: [u8; 6], flow: u32, seq: u32) -> Vec<u8> {
        let mut udp_payload = Vec::with_capacity(8);
        udp_payload.extend_from_slice(MAGIC);
        udp_payload.extend_from_slice(&seq.to_be_bytes());
        let udp_len = 8 + udp_payload.len();
        let total = 20 + udp_len;
        let [_, _, f1, f0] = flow.to_be_bytes();
        let mut ip =
            vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 198, 18, f1, f0, 198, 19, f0, f1];
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        let mut sum: u32 = ip.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        let sport = 1024 + (flow % 30000) as u16;
        let dport = 2000 + (flow.wrapping_mul(7) % 20000) as u16;
        let mut payload = ip;
        payload.extend_from_slice(&sport.to_be_bytes());
        payload.extend_from_slice(&dport.to_be_bytes());
        payload.extend_from_slice(&(udp_len as u16).to_be_bytes());
        payload.extend_from_slice(&[0, 0]);
        payload.extend_from_slice(&udp_payload);
        eth_frame(dst, src, 0x0800, &payload)
    }

    /// The sequence number of a frame built by [`udp_frame`], if it is one.
    pub(crate) fn udp_seq(frame: &[u8]) -> Option<u32> {
        if frame.len() < 50 || frame[12..14] != [0x08, 0x00] || frame[23] != 17 {
            return None;
        }
        if &frame[42..46] != MAGIC {
            return None;
        }
        Some(u32::from_be_bytes(frame[46..50].try_into().ok()?))
    }
}
