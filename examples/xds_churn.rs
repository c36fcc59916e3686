//! A control plane that never stops changing its mind, for the forwarding rig
//! (`bench/weir-dut.sh` with `XDS_UPDATES_PER_S`): it serves ADS (delta) on a Unix socket,
//! pushes SERVICES UDP services (DNAT; the first on VIP:9, the others on VIPs no packet goes
//! to) with a cluster each whose one endpoint is SINK:9, then sends RATE updates a second for
//! SECONDS or until SIGTERM: each reweights the first cluster's endpoint (1, 2, 3, …: traffic goes on to the
//! same sink, through a cluster built again) and adds or removes a second endpoint in another
//! cluster. Every update must be ACKed. Prints what it sent and how long ACKs took.
//!
//!     xds_churn SOCKET VIP SINK SERVICES RATE SECONDS

use envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy;
use envoy_types::pb::google::protobuf::Any;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use weir::xds::resources::{CLUSTER, LISTENER, LOAD_ASSIGNMENT};
use weir::xds::test_server::{build, TestServer};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, vip, sink, services, rate, seconds] = args.as_slice() else {
        eprintln!("usage: xds_churn SOCKET VIP SINK SERVICES RATE SECONDS");
        std::process::exit(2);
    };
    let (vip, sink): (IpAddr, IpAddr) = (vip.parse().expect("VIP"), sink.parse().expect("SINK"));
    let services: usize = services.parse().expect("SERVICES");
    let rate: u32 = rate.parse().expect("RATE");
    let seconds: u64 = seconds.parse().expect("SECONDS");
    let server = TestServer::start_unix(std::path::Path::new(socket)).expect("serving");
    let wait = Duration::from_secs(60);
    server.wait_for(wait, |q| q.type_url() == LISTENER).expect("weir asks for listeners");
    let mut version = 0u64;
    let mut push = |t: &str, items: Vec<(String, Any)>, removed: Vec<String>| -> Duration {
        version += 1;
        let v = version.to_string();
        let start = Instant::now();
        let items = items.into_iter().map(|(n, a)| (n, v.clone(), a)).collect();
        let nonce = server.push_delta(t, &v, items, removed);
        let reply = server.reply_to(&nonce).unwrap_or_else(|| panic!("no reply to {t} {v}"));
        if let Some(e) = reply.error() {
            panic!("{t} {v} refused: {e}");
        }
        start.elapsed()
    };
    // 198.19.16.0/20 and up: VIPs no packet goes to, as bench/weir-dut.sh's SERVICES.
    let vip_of = |i: usize| -> (IpAddr, u16) {
        if i == 0 {
            return (vip, 9);
        }
        let third = u8::try_from(16 + i / 256 % 240).unwrap_or(16);
        let fourth = u8::try_from(i % 256).unwrap_or(0);
        (IpAddr::from([198, 19, third, fourth]), 1000 + u16::try_from(i / 61_440).unwrap_or(0))
    };
    let name = |i: usize| format!("c{i}");
    let policy = |i: usize| if i == 0 { LbPolicy::Maglev } else { LbPolicy::RoundRobin };
    let clusters = (0..services)
        .map(|i| (name(i), build::any(&build::eds_cluster(&name(i), policy(i)))))
        .collect();
    push(CLUSTER, clusters, Vec::new());
    let endpoints = |i: usize, eps: &[(IpAddr, u16, u32)]| {
        (name(i), build::any(&build::load_assignment(&name(i), eps)))
    };
    let all = (0..services).map(|i| endpoints(i, &[(sink, 9, 1)])).collect();
    push(LOAD_ASSIGNMENT, all, Vec::new());
    let listeners = (0..services)
        .map(|i| {
            let (v, port) = vip_of(i);
            let l = build::udp_listener(&format!("l{i}"), v, port, &name(i), "dnat");
            (format!("l{i}"), build::any(&l))
        })
        .collect();
    push(LISTENER, listeners, Vec::new());
    println!("pushed {services} services");
    // The second endpoint of the other clusters: beside the sink, never sent to.
    let spare: IpAddr = match sink {
        IpAddr::V4(a) => IpAddr::V4(std::net::Ipv4Addr::from(u32::from(a) + 1)),
        IpAddr::V6(_) => sink,
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, std::sync::Arc::clone(&stop))
        .expect("SIGTERM handler");
    let period = Duration::from_secs(1) / rate.max(1);
    let start = Instant::now();
    let mut acks: Vec<Duration> = Vec::new();
    let mut n = 0usize;
    while start.elapsed() < Duration::from_secs(seconds)
        && !stop.load(std::sync::atomic::Ordering::Relaxed)
    {
        let due = start + period * u32::try_from(n).unwrap_or(u32::MAX);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let weight = u32::try_from(n % 3).unwrap_or(0) + 1;
        let mut items = vec![endpoints(0, &[(sink, 9, weight)])];
        if services > 1 {
            let other = 1 + n % (services - 1);
            // Each time round the other clusters, the second endpoint comes or goes.
            let eps: &[(IpAddr, u16, u32)] = if (n / (services - 1)).is_multiple_of(2) {
                &[(sink, 9, 1), (spare, 9, 1)]
            } else {
                &[(sink, 9, 1)]
            };
            items.push(endpoints(other, eps));
        }
        acks.push(push(LOAD_ASSIGNMENT, items, Vec::new()));
        n += 1;
    }
    let took = start.elapsed().as_secs_f64();
    if acks.is_empty() {
        println!("updates=0");
        return;
    }
    acks.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "updates={n} per_s={:.1} ack_ms_median={:.2} ack_ms_p99={:.2} ack_ms_max={:.2}",
        n as f64 / took,
        ms(acks[acks.len() / 2]),
        ms(acks[acks.len() * 99 / 100]),
        ms(acks[acks.len() - 1])
    );
}
