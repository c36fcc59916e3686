//! `weir`: a kernel-bypass dataplane for service meshes.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use weir::config;
use weir::demo::{run_demo, DemoBackend};

const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("WEIR_GIT_REV"), ")");

/// weir moves a service mesh's traffic: it polls NIC queues (or af_packet and TAP ports) with
/// pinned per-core workers and routes every packet without a system call or an allocation.
#[derive(Parser)]
#[command(name = "weir", version = VERSION, about, long_about = None)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the dataplane from a configuration file until SIGINT or SIGTERM.
    Run {
        /// The YAML configuration.
        #[arg(short, long)]
        config: PathBuf,
        /// Also write the final counters as JSON to this file on exit.
        #[arg(long)]
        stats_json: Option<PathBuf>,
    },
    /// Validate a configuration file; errors name the field by path and line.
    Check {
        /// The YAML configuration.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Build namespaces, run weir between a client and a server, send ping and a TCP transfer
    /// through it, print the counters, and remove everything. Needs root.
    Demo {
        /// Port backend.
        #[arg(long, value_enum, default_value_t = Backend::AfPacket)]
        backend: Backend,
        /// Worker threads.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Show the L4 mesh instead: nginx backends behind an L4 service, curl through its
        /// VIP, a live reload (needs curl and nginx).
        #[arg(long)]
        mesh: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    /// weir's own af_packet ports on veth pairs.
    AfPacket,
    /// TAP devices weir creates.
    Tap,
    /// DPDK ports: `net_af_packet` virtual devices on veth pairs.
    Dpdk,
    /// DPDK ports: `net_tap` virtual devices.
    DpdkTap,
}

fn load(path: &std::path::Path) -> Result<config::Config> {
    config::load(path)
}

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    let result = match cli.command {
        Cmd::Run { config, stats_json } => run(&config, stats_json),
        Cmd::Check { config } => load(&config).map(|c| {
            println!(
                "{}: ok ({} ports, {} routes, {} workers, {} services); memory {}",
                config.display(),
                c.ports.len(),
                c.routes.len(),
                c.workers.len(),
                c.services.len(),
                weir::footprint::Footprint::of(&c).describe()
            );
        }),
        Cmd::Demo { mesh: true, .. } => weir::meshdemo::run_mesh_demo(),
        Cmd::Demo { backend, workers, mesh: false } => run_demo(
            match backend {
                Backend::AfPacket => DemoBackend::AfPacket,
                Backend::Tap => DemoBackend::Tap,
                Backend::Dpdk => DemoBackend::DpdkAfPacket,
                Backend::DpdkTap => DemoBackend::DpdkTap,
            },
            workers,
        ),
    };
    if let Err(e) = result {
        eprintln!("weir: {e:#}");
        std::process::exit(1);
    }
}

fn run(path: &PathBuf, stats_json: Option<PathBuf>) -> Result<()> {
    let cfg = load(path)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
        .context("installing the SIGHUP handler")?;
    let mut cfg = cfg;
    let mtime = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen = mtime(path);
    let mut running = weir::run::start(&cfg)?;
    tracing::info!(
        workers = cfg.workers.len(),
        ports = cfg.ports.len(),
        services = cfg.services.len(),
        "weir running"
    );
    let mut tick = 0u32;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(50));
        tick += 1;
        if tick.is_multiple_of(2) {
            if let Some(msg) = running.check_health(&cfg) {
                tracing::warn!("{msg}");
            }
        }
        // SIGHUP, or the file changed (looked at every 0.5 s).
        let changed = tick.is_multiple_of(10) && mtime(path) != seen;
        if reload.swap(false, Ordering::Relaxed) || changed {
            seen = mtime(path);
            match load(path).and_then(|new| running.reload(&cfg, &new).map(|s| (new, s))) {
                Ok((new, summary)) => {
                    tracing::info!("reloaded {}: {summary}", path.display());
                    cfg = new;
                }
                Err(e) => tracing::error!(
                    "reload of {} rejected, the running configuration stays: {e:#}",
                    path.display()
                ),
            }
        }
    }
    tracing::info!("stopping");
    running.stop();
    println!("{}", running.report_text());
    if let Some(p) = stats_json {
        std::fs::write(&p, serde_json::to_string_pretty(&running.report_json())?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
