//! Replays the `config` fuzz seed corpus (`fuzz/corpus/config/`) through the fuzz target's
//! logic, `weir::fuzzing::check_config`, so the corpus is exercised on stable Rust.
//!
//! `cargo test --test fuzz_corpus -- --ignored write_seed_corpus` regenerates the seed files:
//! the README's configuration examples, the configurations of `src/config.rs`'s tests, and
//! hostile documents (alias bombs, deep nesting, unknown fields, huge numbers, odd YAML), each
//! under 64 KiB.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use weir::config::parse;
use weir::fuzzing::check_config;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/config")
}

/// Largest seed file.
const MAX_SEED: usize = 64 << 10;

/// `src/config.rs`'s test configuration `GOOD`.
const GOOD: &str = "
ports:
  - name: a
    backend: af_packet
    interface: veth0
    addresses: [198.18.1.1/24, 2001:db8:1::1/64]
  - name: b
    backend: tap
    mac: 02:00:00:00:00:02
    addresses: [198.18.2.1/24]
routes:
  - prefix: 198.19.0.0/16
    port: b
    via: 198.18.2.2
neighbors:
  - ip: 198.18.2.2
    port: b
    mac: 02:00:00:00:00:99
";

/// `src/config.rs`'s test configuration `DPDK`.
const DPDK: &str = "
eal:
  hugepages: false
  args: [--no-telemetry]
ports:
  - name: a
    backend: dpdk
    device: net_af_packet0,iface=veth0,qpairs=1
    addresses: [198.18.1.1/24]
  - name: b
    backend: dpdk
    device: 0000:03:00.0
    dpdk: { rx_descriptors: 512, rss: false }
    addresses: [198.18.2.1/24]
";

/// `src/config.rs`'s test services `MESH`, to go with `GOOD`.
const MESH: &str = "
services:
  - { name: web, vip: 198.19.0.1, port: 80, protocol: tcp, cluster: web }
clusters:
  - name: web
    endpoints:
      - { address: 198.18.2.10, port: 80 }
";

/// The README's YAML examples, in order: the configuration reference, the L4 services, the
/// DPDK ports.
fn readme_examples() -> Vec<String> {
    let readme = fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```yaml") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), l) => {
                block.push_str(l);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// The seeds, by file name. Those starting with `valid_` must parse (on any machine that can
/// run the tests).
fn seeds() -> Vec<(String, String)> {
    let readme = readme_examples();
    assert!(readme.len() >= 3, "the README's YAML examples: {}", readme.len());
    let reference = readme[0].clone();
    // The reference routes to `server_side`, a port it does not show.
    let reference_whole = reference.replacen(
        "routes:",
        "  - name: server_side\n    backend: tap\n    addresses: [198.18.2.1/24, 2001:db8:2::1/64]\n\
         routes:",
        1,
    );
    let mut seeds: Vec<(String, String)> = vec![
        ("readme_reference.yaml".into(), reference),
        ("readme_reference_with_server_side.yaml".into(), reference_whole),
        ("readme_services.yaml".into(), format!("{GOOD}{}", readme[1])),
        ("readme_dpdk.yaml".into(), readme[2].clone()),
        ("valid_good.yaml".into(), GOOD.into()),
        ("valid_dpdk.yaml".into(), DPDK.into()),
        ("valid_good_mesh.yaml".into(), format!("{GOOD}{MESH}")),
        (
            "valid_workers_idle.yaml".into(),
            format!("workers:\n  - {{}}\n  - {{ idle: busy_poll }}\nidle: {{ policy: adaptive, sleep_ms: 5 }}\n{GOOD}"),
        ),
        (
            "valid_mesh_dsr_gue_udp.yaml".into(),
            format!(
                "{GOOD}services:\n\
                 \x20 - {{ name: dns, vip: 198.19.0.2, port: 53, protocol: udp, cluster: web, mode: dnat }}\n\
                 \x20 - {{ name: gue, vip: 198.19.0.3, port: 80, protocol: tcp, cluster: web, mode: dsr, encap: gue, gue_port: 6080 }}\n\
                 \x20 - {{ name: ipip, vip: 198.19.0.4, port: 80, protocol: tcp, cluster: web, mode: dsr, encap: ipip }}\n\
                 clusters:\n\
                 \x20 - name: web\n\
                 \x20   policy: least_request\n\
                 \x20   on_endpoint_gone: reset\n\
                 \x20   endpoints:\n\
                 \x20     - {{ address: 198.18.2.10, port: 80, weight: 95 }}\n\
                 \x20     - {{ address: 198.18.2.11, port: 80, weight: 5 }}\n\
                 \x20     - {{ address: 198.18.2.12, port: 80, healthy: false }}\n\
                 mesh: {{ flows_per_worker: 1024, when_full: evict_embryonic }}\n"
            ),
        ),
    ];
    // An alias bomb: an 8 KiB string referenced 15 000 times, 120 MiB expanded.
    let mut flat = format!("eal:\n  file_prefix: &a \"{}\"\n  args: [", "x".repeat(8 << 10));
    flat.push_str(&vec!["*a"; 15_000].join(","));
    flat.push_str("]\n");
    flat.push_str(GOOD);
    seeds.push(("alias_bomb_flat.yaml".into(), flat));
    // Billion laughs: nine levels of ten references.
    let mut nested = String::from("a0: &a0 [lol]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        nested.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    seeds.push(("alias_bomb_nested.yaml".into(), format!("{nested}{GOOD}")));
    seeds.push(("alias_bomb_in_args.yaml".into(), format!("eal:\n  args: &b [*b]\n{GOOD}")));
    // Deep nesting, 500 levels, where the schema wants a list of strings and a mapping.
    seeds.push(("deep_flow_sequence.yaml".into(), format!("eal:\n  args: {}", "[".repeat(500))));
    seeds.push(("deep_flow_mapping.yaml".into(), format!("ports: {}", "{a: ".repeat(500))));
    seeds.push((
        "deep_block_sequence.yaml".into(),
        // Compact nested block sequences: `- - - ...`, one level each.
        format!("eal:\n  args:\n    {}x\n", "- ".repeat(500)),
    ));
    seeds.push((
        "unknown_fields.yaml".into(),
        GOOD.replace("backend: tap\n", "backend: tap\n    colour: blue\n")
            + "frobnicate: true\nmesh: { flows_per_worker: 16, warp_drive: on }\n",
    ));
    seeds.push((
        "huge_numbers.yaml".into(),
        format!(
            "mempool: {{ buffers: 4294967295, buffer_bytes: 65535, headroom_bytes: 99999999999999999999999 }}\n\
             neighbor: {{ capacity_entries: 1099511627776, pending_packets: -1, reachable_ms: 1e400 }}\n\
             mesh: {{ udp_timeout_ms: 18446744073709551615, flows_per_worker: 0x7fffffffffffffff, \
             snat_port_first: 65536, max_endpoints: 1.5 }}\n\
             icmp: {{ errors_per_sec: .inf, burst: NaN }}\n{GOOD}"
        ),
    ));
    seeds.push((
        "capacities_at_their_bounds.yaml".into(),
        format!(
            "mempool: {{ buffers: 16777216, buffer_bytes: 9216, headroom_bytes: 4096 }}\n\
             neighbor: {{ capacity_entries: 1048576, pending_packets: 65536, inbox_updates: 65536 }}\n\
             mesh: {{ flows_per_worker: 536870912, handoff_ring_packets: 1048576, max_services: 1048576, \
             max_clusters: 1048576, max_endpoints: 1048576 }}\n{GOOD}"
        ),
    ));
    seeds.push(("many_workers.yaml".into(), format!("workers:\n{}{GOOD}", "  - {}\n".repeat(200))));
    seeds.push((
        "odd_yaml_merge_keys.yaml".into(),
        "%YAML 1.2\n---\nports:\n  - &a { name: a, backend: tap, mtu_bytes: 1500, \
         addresses: [198.18.1.1/24] }\n  - { <<: *a, name: b, addresses: [198.18.2.1/24] }\n\
         icmp: { burst: 0o17, errors_per_sec: 0x10 }\n...\n"
            .into(),
    ));
    seeds.push((
        "odd_yaml_tags.yaml".into(),
        format!(
            "{}icmp: {{ burst: !!int \"5\" }}\neal: {{ args: !!binary aGVsbG8= }}\n? [complex, key]\n: value\n",
            GOOD.replace("name: a\n", "name: !!str a\n")
                .replace("mac: 02:", "mac: !custom 02:")
        ),
    ));
    seeds.push(("two_documents.yaml".into(), format!("{GOOD}\n---\n{GOOD}")));
    seeds.push(("not_a_mapping.yaml".into(), "- ports\n- workers\n".into()));
    seeds.push(("empty.yaml".into(), String::new()));
    seeds.push(("bom_crlf.yaml".into(), format!("\u{feff}{}", GOOD.replace('\n', "\r\n"))));
    seeds.push(("tabs.yaml".into(), GOOD.replace("    ", "\t")));
    seeds
}

#[test]
#[ignore = "writes the seed corpus; run explicitly"]
fn write_seed_corpus() {
    let dir = corpus_dir();
    fs::create_dir_all(&dir).unwrap();
    for (name, text) in seeds() {
        assert!(text.len() < MAX_SEED, "{name}: {} bytes", text.len());
        fs::write(dir.join(name), text).unwrap();
    }
}

#[test]
fn replay_seed_corpus() {
    let mut count = 0;
    for entry in fs::read_dir(corpus_dir()).expect("seed corpus directory exists") {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let data = fs::read(&path).unwrap();
        assert!(data.len() < MAX_SEED, "{}: {} bytes", path.display(), data.len());
        let t0 = Instant::now();
        check_config(&data);
        assert!(t0.elapsed() < Duration::from_secs(5), "{}: {:?}", path.display(), t0.elapsed());
        count += 1;
    }
    assert!(count >= 15, "seed corpus has only {count} files");
}

/// The valid seeds parse; the hostile ones are refused.
#[test]
fn seeds_are_what_they_claim() {
    for (name, text) in seeds() {
        let result = parse(&text);
        if name.starts_with("valid_") {
            assert!(result.is_ok(), "{name}: {:?}", result.err());
        }
        if name.starts_with("alias_bomb")
            || name.starts_with("deep_")
            || ["unknown_fields.yaml", "huge_numbers.yaml", "many_workers.yaml"]
                .contains(&name.as_str())
        {
            assert!(result.is_err(), "{name} parses");
        }
    }
}
