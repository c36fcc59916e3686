//! `weir`: a kernel-bypass dataplane for service meshes.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::path::{Path, PathBuf};
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
            print_out(&format!(
                "{}: ok ({} ports, {} routes, {} workers, {} services); memory {}\n",
                config.display(),
                c.ports.len(),
                c.routes.len(),
                c.workers.len(),
                c.services.len(),
                weir::footprint::Footprint::of(&c).describe()
            ));
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

/// Prints `text` to standard output. A closed or broken standard output means nobody is
/// reading: the text is dropped with a note on standard error, not a panic.
fn print_out(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        tracing::warn!("standard output: {e}; the report is not printed");
    }
}

/// Loads `path` on a thread of its own and waits for it, giving up when `stop` is set: a
/// large file must not hold up SIGTERM. `None` when stopped.
fn load_unless_stopped(path: &Path, stop: &AtomicBool) -> Option<Result<config::Config>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let owned = path.to_owned();
    let spawned = std::thread::Builder::new().name("weir-reload".into()).spawn(move || {
        let _ = tx.send(load(&owned));
    });
    if let Err(e) = spawned {
        return Some(Err(anyhow::anyhow!("starting the reload: {e}")));
    }
    loop {
        match rx.recv_timeout(std::time::Duration::from_millis(50)) {
            Ok(result) => return Some(result),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if stop.load(Ordering::Relaxed) => {
                return None
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Some(Err(anyhow::anyhow!("the reload thread ended without a result")))
            }
        }
    }
}

/// Writes the counters as JSON to `path`.
fn write_stats(path: &Path, running: &weir::run::Running) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(&running.report_json())?)
        .with_context(|| format!("writing {}", path.display()))
}

/// What the signals weir handles have asked for.
struct Signals {
    /// SIGINT, SIGTERM, SIGQUIT: stop, report, exit.
    stop: Arc<AtomicBool>,
    /// SIGHUP: reload the configuration file.
    reload: Arc<AtomicBool>,
    /// SIGUSR1: print the counters to standard error.
    dump: Arc<AtomicBool>,
    /// SIGUSR2: write the counters to the --stats-json file now.
    dump_json: Arc<AtomicBool>,
    /// SIGALRM: ignored (noted in the log).
    alarm: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> Result<Signals> {
        use signal_hook::consts::{SIGALRM, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
        let s = Signals {
            stop: Arc::default(),
            reload: Arc::default(),
            dump: Arc::default(),
            dump_json: Arc::default(),
            alarm: Arc::default(),
        };
        let table = [
            (SIGINT, &s.stop),
            (SIGTERM, &s.stop),
            (SIGQUIT, &s.stop),
            (SIGHUP, &s.reload),
            (SIGUSR1, &s.dump),
            (SIGUSR2, &s.dump_json),
            (SIGALRM, &s.alarm),
        ];
        for (sig, flag) in table {
            signal_hook::flag::register(sig, Arc::clone(flag))
                .with_context(|| format!("installing the handler of signal {sig}"))?;
        }
        Ok(s)
    }
}

fn run(path: &Path, stats_json: Option<PathBuf>) -> Result<()> {
    let cfg = load(path)?;
    // Found now, not after hours of forwarding.
    if let Some(p) = &stats_json {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(p)
            .with_context(|| format!("--stats-json {} cannot be written", p.display()))?;
    }
    let signals = Signals::install()?;
    let mut cfg = cfg;
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen = mtime(path);
    let mut running = weir::run::start(&cfg)?;
    tracing::info!(
        workers = cfg.workers.len(),
        ports = cfg.ports.len(),
        services = cfg.services.len(),
        "weir running"
    );
    let mut tick = 0u32;
    while !signals.stop.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(50));
        tick += 1;
        if tick.is_multiple_of(2) {
            if let Some(msg) = running.check_health(&cfg) {
                tracing::warn!("{msg}");
            }
        }
        if signals.dump.swap(false, Ordering::Relaxed) {
            eprintln!("{}", running.report_text());
        }
        if signals.dump_json.swap(false, Ordering::Relaxed) {
            match &stats_json {
                Some(p) => match write_stats(p, &running) {
                    Ok(()) => tracing::info!("counters written to {}", p.display()),
                    Err(e) => tracing::error!("{e:#}"),
                },
                None => tracing::warn!("SIGUSR2 writes the counters to --stats-json, not given"),
            }
        }
        if signals.alarm.swap(false, Ordering::Relaxed) {
            tracing::info!("SIGALRM ignored");
        }
        // SIGHUP, or the file changed (looked at every 0.5 s).
        let changed = tick.is_multiple_of(10) && mtime(path) != seen;
        if signals.reload.swap(false, Ordering::Relaxed) || changed {
            seen = mtime(path);
            let Some(loaded) = load_unless_stopped(path, &signals.stop) else { break };
            match loaded.and_then(|new| running.reload(&cfg, &new).map(|s| (new, s))) {
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
    // The file first: it is what a supervisor reads, and standard output may be gone.
    let written = stats_json.as_deref().map(|p| write_stats(p, &running));
    print_out(&format!("{}\n", running.report_text()));
    written.transpose().map(|_| ())
}
