//! Replays the fuzz seed corpus (`stack/fuzz/corpus/parse_frame/`) through the fuzz target's
//! logic, `stack::fuzzing::check_frame`, so the corpus is exercised on stable Rust.
//!
//! `cargo test -p stack --test fuzz_corpus -- --ignored write_seed_corpus` regenerates the
//! seed files from the fixtures plus a set of malformed frames.

use std::fs;
use std::path::PathBuf;

use stack::fixtures;
use stack::fuzzing::check_frame;
use stack::parse::{parse_frame, ParseError};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/parse_frame")
}

/// Malformed seeds, each with the error parse_frame must give it.
fn malformed() -> Vec<(&'static str, Vec<u8>, ParseError)> {
    let ping = fixtures::ICMPV4_ECHO_REQUEST;
    let mut bad_csum = ping.to_vec();
    bad_csum[24] ^= 0xff;
    let mut bad_ihl = ping.to_vec();
    bad_ihl[14] = 0x43;
    let mut three_tags = fixtures::QINQ_UDP[..22].to_vec();
    three_tags[20..22].copy_from_slice(&[0x81, 0x00]);
    three_tags.extend_from_slice(&[0x00, 0x1e, 0x08, 0x00]);
    three_tags.extend_from_slice(&fixtures::QINQ_UDP[22..]);
    let mut long_chain = fixtures::ICMPV6_ECHO_REQUEST[..54].to_vec();
    long_chain[20] = 60;
    for i in 0..9u8 {
        long_chain.extend_from_slice(&[if i == 8 { 17 } else { 60 }, 0, 1, 4, 0, 0, 0, 0]);
    }
    long_chain[18..20].copy_from_slice(&72u16.to_be_bytes());
    let mut bad_udp = fixtures::QINQ_UDP.to_vec();
    bad_udp[46..48].copy_from_slice(&200u16.to_be_bytes());
    let mut bad_arp = fixtures::ARP_REQUEST.to_vec();
    bad_arp[18] = 8;
    let mut v6_len = fixtures::ICMPV6_ECHO_REQUEST.to_vec();
    v6_len[18..20].copy_from_slice(&0xffffu16.to_be_bytes());
    vec![
        ("empty", Vec::new(), ParseError::TruncatedEthernet),
        ("truncated_ping", ping[..30].to_vec(), ParseError::TruncatedIpv4),
        ("bad_ipv4_checksum", bad_csum, ParseError::BadIpv4Checksum),
        ("bad_ihl", bad_ihl, ParseError::BadIhl),
        ("three_vlan_tags", three_tags, ParseError::VlanTooDeep),
        ("ipv6_ext_chain_9", long_chain, ParseError::Ipv6ExtChainTooLong),
        ("udp_length_too_big", bad_udp, ParseError::BadL4Length),
        ("arp_hlen_8", bad_arp, ParseError::BadArp),
        ("ipv6_payload_len_ffff", v6_len, ParseError::BadIpv6PayloadLength),
        ("truncated_tcp_syn", fixtures::TCP_SYN[..50].to_vec(), ParseError::BadIpv4TotalLength),
    ]
}

#[test]
#[ignore = "writes the seed corpus; run explicitly"]
fn write_seed_corpus() {
    let dir = corpus_dir();
    fs::create_dir_all(&dir).unwrap();
    for (name, frame) in fixtures::ALL {
        fs::write(dir.join(format!("{name}.bin")), frame).unwrap();
    }
    for (name, frame, _) in malformed() {
        fs::write(dir.join(format!("malformed_{name}.bin")), frame).unwrap();
    }
}

#[test]
fn malformed_seeds_fail_as_expected() {
    for (name, frame, want) in malformed() {
        assert_eq!(parse_frame(&frame), Err(want), "{name}");
    }
}

#[test]
fn replay_seed_corpus() {
    let mut count = 0;
    let mut ok = 0;
    for entry in fs::read_dir(corpus_dir()).expect("seed corpus directory exists") {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let data = fs::read(&path).unwrap();
        check_frame(&data);
        ok += usize::from(parse_frame(&data).is_ok());
        count += 1;
    }
    assert!(count >= 20, "seed corpus has only {count} files");
    assert!(ok >= fixtures::ALL.len(), "only {ok} seeds parse");
}
