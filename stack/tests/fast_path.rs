//! `ipv4_fast` accepts only what `parse_frame` accepts, with the same fields, and the packed
//! flow key it gives is the parsed frame's flow key.

use proptest::prelude::*;
use stack::parse::{ipv4_fast, parse_frame, L3};

fn check(frame: &[u8]) -> Result<(), TestCaseError> {
    if let Some(f) = ipv4_fast(frame) {
        let p = parse_frame(frame);
        prop_assert!(p.is_ok(), "fast path accepted what the parser rejects: {p:?}");
        let p = p.unwrap();
        prop_assert_eq!(p.vlan_depth, 0);
        let L3::Ipv4(ip) = p.l3 else { return Err(TestCaseError::fail("not IPv4")) };
        prop_assert_eq!(ip.dst, f.dst);
        prop_assert_eq!(ip.ttl, f.ttl);
        prop_assert_eq!(ip.total_len, f.total_len);
        prop_assert_eq!(ip.dont_fragment, f.dont_fragment);
        prop_assert!(!ip.has_options);
        if let Some(packed) = stack::PackedV4::from_ipv4_fast(&f) {
            let key = stack::FlowKey::from_parsed(&p);
            prop_assert!(key.is_some());
            let key = key.unwrap();
            prop_assert_eq!(key.packed_v4(), Some(packed));
            for seed in [0, 0x5eed_5eed_5eed_5eed] {
                prop_assert_eq!(key.table_hash(seed), packed.table_hash(seed));
            }
            prop_assert_eq!(
                (packed.src(), packed.src_port(), packed.dst(), packed.dst_port(), packed.proto()),
                (ip.src, key.src_port(), ip.dst, key.dst_port(), key.proto())
            );
        }
    }
    Ok(())
}

fn udp_frame() -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[12] = 0x08;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&46u16.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&[198, 18, 1, 2]);
    f[30..34].copy_from_slice(&[198, 18, 2, 2]);
    let c = stack::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f[38..40].copy_from_slice(&26u16.to_be_bytes());
    f
}

#[test]
fn fixtures_agree_and_plain_ipv4_takes_the_fast_path() {
    for (_, frame) in stack::fixtures::ALL {
        check(frame).unwrap();
    }
    assert!(ipv4_fast(&udp_frame()).is_some());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]
    #[test]
    fn fast_path_agrees_on_mutations(
        edits in proptest::collection::vec((0usize..60, any::<u8>()), 0..4),
        proto in prop::sample::select(vec![1u8, 6, 17, 47]),
        fix_checksum in any::<bool>(),
        cut in 0usize..30,
    ) {
        let mut f = udp_frame();
        f[23] = proto;
        for (i, v) in edits {
            f[i] = v;
        }
        if fix_checksum {
            f[24] = 0;
            f[25] = 0;
            let c = stack::checksum::checksum(&f[14..34]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
        }
        f.truncate(60 - cut);
        check(&f)?;
    }

    #[test]
    fn fast_path_agrees_on_random_bytes(f in proptest::collection::vec(any::<u8>(), 0..80)) {
        check(&f)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20000))]
    /// The TTL decrement's checksum shortcut equals a full recomputation.
    #[test]
    fn ttl_decrement_keeps_the_header_checksum_valid(
        words in proptest::array::uniform20(any::<u8>()),
        ttl in 2u8..=255,
    ) {
        let mut f = vec![0u8; 34];
        f[12] = 0x08;
        f[14..34].copy_from_slice(&words);
        f[14] = 0x45;
        f[22] = ttl;
        f[24] = 0;
        f[25] = 0;
        let c = stack::checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        prop_assert_eq!(stack::ipv4::decrement_ttl(&mut f, 14), Ok(ttl - 1));
        prop_assert_eq!(f[22], ttl - 1);
        prop_assert_eq!(stack::checksum::checksum(&f[14..34]), 0, "header checksum broken");
    }
}
