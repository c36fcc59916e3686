//! xDS at scale: 10 000 listeners, 10 000 clusters and 100 000 endpoints pushed to a running
//! weir by the scripted ADS server, in each protocol; then single endpoints changed by delta
//! among them. Prints the time from each push to its ACK (weir ACKs once the configuration is
//! in force: the workers take it at their next poll), weir's memory and its control thread's
//! CPU time. Needs root (weir runs in namespaces, on af_packet ports).
//!
//!     cargo bench --bench xds_push [-- CLUSTERS ENDPOINTS_PER_CLUSTER ROUNDS]

use envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy;
use envoy_types::pb::google::protobuf::Any;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use weir::demo::{DemoBackend, Topology};
use weir::xds::resources::{CLUSTER, LISTENER, LOAD_ASSIGNMENT};
use weir::xds::test_server::{build, Received, TestServer};

fn vip(i: usize) -> IpAddr {
    IpAddr::from([
        198,
        19,
        u8::try_from(i / 250).unwrap_or(255),
        u8::try_from(i % 250 + 1).unwrap_or(1),
    ])
}

fn endpoints(i: usize, per: usize, version: u32) -> Vec<(IpAddr, u16, u32)> {
    // Distinct (address, port) over the whole mesh: the cluster's index is in the port.
    (0..per)
        .map(|j| {
            let addr = IpAddr::from([198, 18, 2, u8::try_from(10 + j % 200).unwrap_or(10)]);
            let port = u16::try_from(1024 + i).unwrap_or(u16::MAX);
            (addr, port, if j == 0 { version } else { 1 })
        })
        .collect()
}

/// Resident and peak memory of `pid`, KiB, and its main (control) thread's CPU time.
fn usage(pid: u32) -> (u64, u64, Duration) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    // After the parenthesis: state, then numbers (tpgid may be -1); utime and stime are the
    // 14th and 15th fields of the line, the 12th and 13th after it.
    let f: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    (kib("VmRSS:"), kib("VmHWM:"), Duration::from_millis(ticks * 10))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn run(protocol: &str, clusters: usize, per: usize, rounds: usize) {
    let mut t = Topology::build(DemoBackend::AfPacket).expect("namespaces (needs root)");
    let socket = t.dir().join("xds.sock");
    let server = TestServer::start_unix(&socket).unwrap();
    let extra = format!(
        "mesh:\n  flows_per_worker: 4096\n  max_services: {}\n  max_clusters: {}\n  \
         max_endpoints: {}\nxds:\n  server: unix:{}\n  node: {{ id: bench }}\n  protocol: \
         {protocol}\n",
        clusters + 16,
        clusters + 16,
        clusters * per + 16,
        socket.display()
    );
    let cfg = t.config(1, &extra);
    t.start(std::path::Path::new(env!("CARGO_BIN_EXE_weir")), &cfg).unwrap();
    let pid = t.pid().expect("weir runs");
    let wait = Duration::from_secs(120);
    server.wait_for(wait, |q| q.type_url() == LISTENER).expect("weir asks for listeners");
    let delta = protocol == "delta";
    let push = |type_url: &str, version: &str, items: Vec<(String, Any)>| -> Duration {
        let start = Instant::now();
        let nonce = if delta {
            server.push_delta(
                type_url,
                version,
                items.into_iter().map(|(n, a)| (n, version.to_owned(), a)).collect(),
                Vec::new(),
            )
        } else {
            server.push_sotw(type_url, version, items.into_iter().map(|(_, a)| a).collect())
        };
        let reply = server
            .wait_for(wait, |q: &Received| q.response_nonce() == nonce)
            .unwrap_or_else(|| panic!("no reply to {type_url}\n{}", t.log()));
        assert_eq!(reply.error(), None, "{type_url} refused");
        start.elapsed()
    };
    let (_, _, cpu0) = usage(pid);
    let cds: Vec<(String, Any)> = (0..clusters)
        .map(|i| {
            let name = format!("c{i}");
            let c = build::eds_cluster(&name, LbPolicy::RoundRobin);
            (name, build::any(&c))
        })
        .collect();
    let lds: Vec<(String, Any)> = (0..clusters)
        .map(|i| {
            let name = format!("l{i}");
            let l = build::listener(&name, vip(i), 80, &format!("c{i}"));
            (name, build::any(&l))
        })
        .collect();
    let eds: Vec<(String, Any)> = (0..clusters)
        .map(|i| {
            let name = format!("c{i}");
            let a = build::load_assignment(&name, &endpoints(i, per, 1));
            (name, build::any(&a))
        })
        .collect();
    let (rss0, _, _) = usage(pid);
    let c = push(CLUSTER, "1", cds);
    let l = push(LISTENER, "1", lds);
    let e = push(LOAD_ASSIGNMENT, "1", eds);
    let (rss, hwm, cpu) = usage(pid);
    println!(
        "xds {protocol} push: {clusters} clusters {} endpoints {clusters} listeners: CDS {:.0} ms, \
         LDS {:.0} ms, EDS {:.0} ms, whole push {:.0} ms; control thread CPU {:.0} ms; RSS {} MiB \
         (before {} MiB, peak {} MiB)",
        clusters * per,
        ms(c),
        ms(l),
        ms(e),
        ms(c + l + e),
        ms(cpu.saturating_sub(cpu0)),
        rss / 1024,
        rss0 / 1024,
        hwm / 1024
    );
    if delta {
        // One endpoint's weight changed in one cluster, a different cluster each round.
        let mut times: Vec<Duration> = (0..rounds)
            .map(|r| {
                let i = (r * 7919) % clusters;
                let name = format!("c{i}");
                let version = u32::try_from(r + 2).unwrap_or(2);
                let a = build::load_assignment(&name, &endpoints(i, per, version));
                push(LOAD_ASSIGNMENT, &(r + 2).to_string(), vec![(name, build::any(&a))])
            })
            .collect();
        times.sort();
        println!(
            "xds delta one endpoint among {clusters} clusters: median {:.1} ms, min {:.1} ms, max \
             {:.1} ms over {rounds}",
            ms(times[times.len() / 2]),
            ms(times[0]),
            ms(times[times.len() - 1])
        );
    }
    if std::env::var_os("XDS_PUSH_LOG").is_some() {
        for line in t.log().lines().filter(|l| l.contains("xDS")) {
            println!("  {line}");
        }
    }
    drop(server);
    t.stop().ok();
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let clusters = args.first().copied().unwrap_or(10_000);
    let per = args.get(1).copied().unwrap_or(10);
    let rounds = args.get(2).copied().unwrap_or(21);
    for protocol in ["sotw", "delta"] {
        run(protocol, clusters, per, rounds);
    }
}
