//! `weir`: a kernel-bypass dataplane for service meshes.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use weir::admin::LogControl;
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
        /// Also check this host: interfaces (present, up, no kernel addresses, offloads off),
        /// PCI drivers, endpoints reachable, hugepages, no other weir on the interfaces.
        #[arg(long)]
        host: bool,
    },
    /// Ask a running weir through its admin API (found through -c FILE's `admin` section, or
    /// --admin).
    Ctl {
        /// The running weir's configuration, for its admin listener and token file.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The admin API: ADDRESS:PORT or unix:PATH (instead of -c).
        #[arg(long)]
        admin: Option<String>,
        /// The token file, for requests that change state (instead of the configuration's).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Print the API's JSON instead of tables.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        what: weir::ctl::Command,
    },
    /// Translate an Envoy /config_dump (Envoy's admin API, `istioctl proxy-config all -o
    /// json`) as xDS would: a report per resource (accepted, waiting, refused and why) on
    /// stderr, weir's YAML for the services and clusters accepted on stdout or to --output.
    Import {
        /// The config dump (JSON).
        #[arg(long)]
        envoy_config_dump: PathBuf,
        /// Write the YAML here instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print weir's manual page (roff), made from this command line's definition.
    Man,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
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

/// `weir import`: the report on stderr (it is about the input), the YAML on stdout or to a
/// file. Fails when nothing was accepted.
fn import(dump: &std::path::Path, output: Option<&std::path::Path>, json: bool) -> Result<()> {
    let text =
        std::fs::read_to_string(dump).map_err(|e| anyhow::anyhow!("{}: {e}", dump.display()))?;
    let import = weir::xds::import::config_dump(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dump.display()))?;
    let report = if json {
        format!("{}\n", serde_json::to_string_pretty(&import.verdicts)?)
    } else {
        import.report()
    };
    eprint!("{report}");
    match output {
        Some(path) => std::fs::write(path, &import.yaml)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        None => print_out(&import.yaml),
    }
    if import.count("accepted") == 0 {
        anyhow::bail!("{}: no resource weir can serve", dump.display());
    }
    Ok(())
}

fn load(path: &std::path::Path) -> Result<config::Config> {
    config::load(path)
}

/// Installs the log subscriber (filter from `RUST_LOG`, else `info`) and returns what changes
/// its filter while weir runs.
fn init_logging(format: LogFormat) -> LogControl {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr))
            .init(),
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr))
            .init(),
    }
    Box::new(move |level: &str| {
        let filter = EnvFilter::try_new(level).map_err(|e| format!("`{level}`: {e}"))?;
        handle.reload(filter).map_err(|e| e.to_string())
    })
}

fn main() {
    let cli = Cli::parse();
    let log = init_logging(cli.log_format);
    let result = match cli.command {
        Cmd::Run { config, stats_json } => run(&config, stats_json, Some(log)),
        Cmd::Check { config, host: true } => load(&config).and_then(|c| {
            let findings = weir::host::check(&c);
            let text: String = findings.iter().map(|f| format!("{f}\n")).collect();
            print_out(&text);
            let errors =
                findings.iter().filter(|f| f.severity == weir::host::Severity::Error).count();
            if errors > 0 {
                anyhow::bail!("{}: {errors} host check(s) failed", config.display());
            }
            Ok(())
        }),
        Cmd::Check { config, host: false } => load(&config).map(|c| {
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
        Cmd::Ctl { config, what: weir::ctl::Command::Restart { log, stats_json }, .. } => {
            let exe = std::env::current_exe().context("finding weir's own binary");
            exe.and_then(|exe| {
                let config = config.context("`restart` needs the configuration: -c FILE")?;
                weir::ctl::restart(&exe, &config, log.as_deref(), stats_json.as_deref())
            })
            .map(|out| print_out(&format!("{out}\n")))
        }
        Cmd::Ctl { config, admin, token_file, json, what } => {
            weir::ctl::Target::find(admin.as_deref(), token_file.as_deref(), config.as_deref())
                .and_then(|t| weir::ctl::run(&t, &what, json))
                // Nothing more once a capture went to standard output.
                .map(|out| {
                    if !out.is_empty() {
                        print_out(&format!("{}\n", out.trim_end()))
                    }
                })
        }
        Cmd::Import { envoy_config_dump, output, json } => {
            import(&envoy_config_dump, output.as_deref(), json)
        }
        Cmd::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut out)
                .map_err(anyhow::Error::from)
                .map(|()| print_out(&String::from_utf8_lossy(&out)))
        }
        Cmd::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "weir",
                &mut out,
            );
            print_out(&String::from_utf8_lossy(&out));
            Ok(())
        }
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

/// Writes the counters as JSON to `path`.
fn write_stats(path: &Path, running: &weir::run::Running) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(&running.report_json())?)
        .with_context(|| format!("writing {}", path.display()))
}

/// What the signals weir handles have asked for.
struct Signals {
    /// SIGINT, SIGQUIT: stop, report, exit (during a drain too).
    stop: Arc<AtomicBool>,
    /// SIGTERM: drain (`drain_timeout_ms`), then stop; at once when there is no drain.
    term: Arc<AtomicBool>,
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
            term: Arc::default(),
            reload: Arc::default(),
            dump: Arc::default(),
            dump_json: Arc::default(),
            alarm: Arc::default(),
        };
        let table = [
            (SIGINT, &s.stop),
            (SIGTERM, &s.term),
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

fn run(path: &Path, stats_json: Option<PathBuf>, log: Option<LogControl>) -> Result<()> {
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
    // The control thread's runtime: the admin API and the control loop share this thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the control thread's runtime")?;
    rt.block_on(control(path, cfg, stats_json, signals, log))
}

async fn control(
    path: &Path,
    cfg: config::Config,
    stats_json: Option<PathBuf>,
    signals: Signals,
    log: Option<LogControl>,
) -> Result<()> {
    // A weir already running on this configuration's handover socket is taken over from.
    let mut taker = weir::handover::Taker::connect(&cfg)?;
    // What it holds from xDS is in force from the first packet, beside the file's.
    let carried_xds = taker.as_mut().and_then(|t| t.xds.take()).filter(|c| {
        let same = cfg.xds.as_ref() == Some(&c.bootstrap);
        if !same {
            tracing::info!("the xds section changed: the xDS session starts afresh");
        }
        same
    });
    let with_xds = carried_xds.as_ref().and_then(|c| {
        let (services, clusters) = c.in_force();
        let effective = weir::xds::merged(&cfg, services, clusters);
        match config::validate_mesh_fields(&effective) {
            Ok(()) => Some(effective),
            Err(e) => {
                tracing::warn!(
                    "the running weir's xDS services and clusters do not fit beside this                      configuration's ({e}): starting without them until the server sends them"
                );
                None
            }
        }
    });
    let start_cfg = with_xds.as_ref().unwrap_or(&cfg);
    // Bound before the workers start, so a taken address stops nothing that ran (a takeover
    // receives the running weir's listener instead).
    let admin_listen = match cfg.admin.as_ref().map(config::AdminConfig::listen) {
        Some(Ok(listen)) => Some(listen),
        Some(Err(e)) => anyhow::bail!("admin.listen: {e}"),
        None => None,
    };
    let mut listener = match (&admin_listen, &taker) {
        (Some(listen), None) => Some((weir::admin::bind(listen).await?, listen.clone())),
        _ => None,
    };
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen = mtime(path);
    // Taking over, the interfaces are the running weir's until it hands them over.
    let findings = weir::host::check(&cfg);
    let relevant = findings.iter().filter(|f| taker.is_none() || f.subject != "interfaces");
    for f in relevant.filter(|f| f.severity > weir::host::Severity::Ok) {
        tracing::warn!(subject = %f.subject, "host check: {}", f.message);
    }
    // With a handover socket, a weir that went away just before it answered may still be
    // letting its interfaces go.
    let patience = std::time::Duration::from_secs(if cfg.handover.is_some() { 2 } else { 0 });
    let running = match taker.as_mut().map(|t| weir::run::start_taking_over(start_cfg, t)) {
        None => weir::run::start_within(start_cfg, patience)?,
        Some(Ok(r)) => r,
        Some(Err(weir::handover::TakeoverError::OldGone(why))) => {
            tracing::warn!(
                "the running weir went away during the takeover ({why}): starting cold; the \
                 flows it held are lost"
            );
            taker = None;
            if let Some(listen) = &admin_listen {
                listener = Some((weir::admin::bind(listen).await?, listen.clone()));
            }
            weir::run::start_within(start_cfg, patience)?
        }
        Some(Err(weir::handover::TakeoverError::Failed(e))) => {
            return Err(e.context("taking over from the running weir (it goes on forwarding)"))
        }
    };
    if let (Some(t), Some(listen), None) = (taker.as_mut(), &admin_listen, &listener) {
        let adopted = match t.admin.take() {
            Some(fd) => weir::admin::adopt(listen, fd)?,
            None => None,
        };
        listener = match adopted {
            Some(l) => Some((l, listen.clone())),
            None => Some((weir::admin::bind(listen).await?, listen.clone())),
        };
    }
    // Where the next weir will find this one.
    let handover = match &cfg.handover {
        None => None,
        Some(h) => Some(match taker.as_mut().and_then(|t| t.listener.take()) {
            Some(fd) => std::os::unix::net::UnixListener::from(fd),
            None => bind_handover(&h.socket)?,
        }),
    };
    if let Some(l) = &handover {
        l.set_nonblocking(true).context("handover.socket")?;
    }
    let workers = cfg.workers.len();
    let ctl = Arc::new(weir::admin::Control::new(running, cfg, path, log)?);
    let xds_update = taker.as_mut().and_then(|t| t.xds_update.take());
    for (carried, started_with) in carried_xds
        .into_iter()
        .map(|c| (c, with_xds.is_some()))
        .chain(xds_update.map(|u| (u, false)))
    {
        if let Err(e) = ctl.resume_xds(carried, started_with) {
            tracing::warn!("the running weir's xDS session: {e:#}; the client starts afresh");
        }
    }
    let (ports, services) = (ctl.config().ports.len(), ctl.config().services.len());
    // The admin server and a reload in progress end when weir stops for good.
    let done = Arc::new(AtomicBool::new(false));
    let stopped = {
        let done = Arc::clone(&done);
        move || {
            let done = Arc::clone(&done);
            async move {
                while !done.load(Ordering::Relaxed) {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    };
    let admin_fd = match &listener {
        Some((l, _)) if handover.is_some() => Some(l.duplicate().context("the admin listener")?),
        _ => None,
    };
    let server = listener.map(|(l, listen)| {
        tracing::info!(listen = ?listen, "admin API listening");
        tokio::spawn(weir::admin::serve(l, Arc::clone(&ctl), stopped()))
    });
    let mut giving: Option<std::sync::mpsc::Receiver<Result<u32>>> = None;
    let mut handed_to = None;
    let mut lost_ports: Option<anyhow::Error> = None;
    // The xDS client shares this thread; it applies what it accepts as a reload does.
    let xds = match (ctl.config().xds.clone(), &ctl.xds_session) {
        (Some(x), Some(session)) => {
            tracing::info!(server = %x.server, node = %x.node.id, "xDS client starting");
            let apply: Arc<dyn weir::xds::client::Apply> = Arc::clone(&ctl) as _;
            Some(tokio::spawn(weir::xds::client::run(x, apply, Arc::clone(session), stopped())))
        }
        _ => None,
    };
    tracing::info!(workers, ports, services, "weir running");
    for line in weir::run::mesh_lines(&ctl.config()) {
        tracing::info!("{line}");
    }
    // A successor started outside systemd's ExecStart (`weir ctl restart`, the unit's reload)
    // feeds the watchdog its predecessor was given.
    let inherited = taker.as_ref().and_then(|t| t.watchdog_usec);
    drop(taker);
    notify(&[sd_notify::NotifyState::Ready]);
    let watchdog =
        watchdog_interval().or(inherited.map(|u| std::time::Duration::from_micros(u / 2)));
    let mut petted = std::time::Instant::now();
    let mut polls = ctl.running.runtime_counters();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(50));
    let mut n = 0u32;
    let mut drain_until: Option<std::time::Instant> = None;
    loop {
        if signals.stop.load(Ordering::Relaxed) {
            break;
        }
        // A new weir asking to take over: answered on a thread of its own (the copy goes on
        // while this loop runs); one at a time.
        if let (Some(l), None) = (&handover, &giving) {
            if let Ok((stream, _)) = l.accept() {
                match give_in_background(stream, &ctl, admin_fd.as_ref(), l) {
                    Ok(rx) => giving = Some(rx),
                    Err(e) => tracing::warn!("a new weir asked to take over: {e:#}"),
                }
            }
        }
        if let Some(rx) = &giving {
            match rx.try_recv() {
                Ok(Ok(pid)) => {
                    handed_to = Some(pid);
                    ctl.handed_over.store(true, Ordering::Relaxed);
                    tracing::info!(pid, "handed over to the new weir: stopping");
                    break;
                }
                Ok(Err(e)) if e.downcast_ref::<weir::handover::PortsLost>().is_some() => {
                    tracing::error!("{e:#}: stopping");
                    lost_ports = Some(e);
                    break;
                }
                Ok(Err(e)) => {
                    tracing::warn!("{e:#}");
                    giving = None;
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
                Err(std::sync::mpsc::TryRecvError::Disconnected) => giving = None,
            }
        }
        if signals.term.swap(false, Ordering::Relaxed) {
            let drain_ms = ctl.config().drain_timeout_ms;
            if drain_until.is_some() || drain_ms == 0 {
                break;
            }
            tracing::info!(
                drain_timeout_ms = drain_ms,
                flows = ctl.running.flows(),
                "SIGTERM: draining (no new flows; existing ones served until they end or the \
                 timeout), then stopping; SIGINT or another SIGTERM stops at once"
            );
            notify(&[sd_notify::NotifyState::Stopping]);
            ctl.start_drain();
            drain_until =
                Some(std::time::Instant::now() + std::time::Duration::from_millis(drain_ms));
        }
        if let Some(until) = drain_until {
            // The workers publish their flow counts every few polls: a little slack.
            if std::time::Instant::now() >= until {
                tracing::info!(flows = ctl.running.flows(), "drain timeout: stopping");
                break;
            }
            if n > 4 && ctl.running.flows() == 0 {
                tracing::info!("drained: no flow left, stopping");
                break;
            }
        }
        tick.tick().await;
        n += 1;
        if n.is_multiple_of(2) {
            ctl.running.check_health(&ctl.config());
        }
        // The watchdog is fed only while every worker keeps polling: a stuck worker gets weir
        // restarted.
        if let Some(every) = watchdog {
            if petted.elapsed() >= every {
                let now = ctl.running.runtime_counters();
                let stuck = now.iter().zip(&polls).position(|(a, b)| a.polls == b.polls);
                match stuck {
                    None => notify(&[sd_notify::NotifyState::Watchdog]),
                    Some(w) => tracing::error!(worker = w, "worker not polling: watchdog not fed"),
                }
                polls = now;
                petted = std::time::Instant::now();
            }
        }
        if signals.dump.swap(false, Ordering::Relaxed) {
            eprintln!("{}", ctl.running.report_text());
        }
        if signals.dump_json.swap(false, Ordering::Relaxed) {
            match &stats_json {
                Some(p) => match write_stats(p, &ctl.running) {
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
        let changed = n.is_multiple_of(10) && mtime(path) != seen;
        if signals.reload.swap(false, Ordering::Relaxed) || changed {
            seen = mtime(path);
            notify(&reloading());
            let stop = Arc::clone(&signals.stop);
            let abandon = async move {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            };
            match ctl.reload(abandon).await {
                Ok(summary) => tracing::info!("reloaded {}: {summary}", path.display()),
                Err(_) if signals.stop.load(Ordering::Relaxed) => break,
                Err(e) => tracing::error!(
                    "reload of {} rejected, the running configuration stays: {e:#}",
                    path.display()
                ),
            }
            notify(&[sd_notify::NotifyState::Ready]);
        }
    }
    tracing::info!("stopping");
    if drain_until.is_none() {
        notify(&[sd_notify::NotifyState::Stopping]);
    }
    ctl.stopping.store(true, Ordering::Relaxed);
    done.store(true, Ordering::Relaxed);
    if let Some(server) = server {
        match tokio::time::timeout(std::time::Duration::from_secs(2), server).await {
            Ok(Ok(Err(e))) => tracing::warn!("admin API: {e}"),
            Ok(_) => {}
            Err(_) => tracing::warn!("admin API: requests still open at exit were cut"),
        }
    }
    if let Some(xds) = xds {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), xds).await;
    }
    ctl.running.stop();
    if let (Some(h), None) = (&ctl.config().handover, handed_to) {
        let _ = std::fs::remove_file(&h.socket);
    }
    // The file first: it is what a supervisor reads, and standard output may be gone.
    let written = stats_json.as_deref().map(|p| write_stats(p, &ctl.running));
    print_out(&format!("{}\n", ctl.running.report_text()));
    if let Some(e) = lost_ports {
        return Err(e);
    }
    written.transpose().map(|_| ())
}

/// Listens on the handover socket: a path left by a weir that ended is replaced; one where a
/// weir listens is not (that one is taken over from before this is reached).
fn bind_handover(path: &Path) -> Result<std::os::unix::net::UnixListener> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        anyhow::bail!("handover.socket {}: another process is listening there", path.display());
    }
    let _ = std::fs::remove_file(path);
    let l = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("handover.socket {}", path.display()))?;
    // What connects here receives the dataplane's sockets: its owner only.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("handover.socket {}", path.display()))?;
    Ok(l)
}

/// Hands over to the new weir on `stream`, on a thread of its own; the outcome (its pid once
/// it took over) comes on the channel returned.
fn give_in_background(
    stream: std::os::unix::net::UnixStream,
    ctl: &Arc<weir::admin::Control>,
    admin: Option<&std::os::fd::OwnedFd>,
    listener: &std::os::unix::net::UnixListener,
) -> Result<std::sync::mpsc::Receiver<Result<u32>>> {
    use std::os::fd::AsFd;
    let handing = weir::handover::Handing {
        admin: admin.map(std::os::fd::OwnedFd::try_clone).transpose()?,
        listener: listener.as_fd().try_clone_to_owned()?,
        xds: ctl.xds_session.clone().zip(ctl.config().xds.clone()),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let ctl = Arc::clone(ctl);
    std::thread::Builder::new().name("weir-handover".into()).spawn(move || {
        let _ = stream.set_nonblocking(false);
        let cfg = ctl.config();
        let _ = tx.send(weir::handover::give(stream, &ctl.running, &cfg, &handing));
    })?;
    Ok(rx)
}

/// Tells systemd (when weir runs under it, `Type=notify`) how weir is doing.
fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::warn!("telling systemd: {e}");
    }
}

/// Half the watchdog period systemd asks for (`WATCHDOG_USEC`), as sd_watchdog_enabled(3)
/// reads it: for this process when `WATCHDOG_PID` is unset or names it.
fn watchdog_interval() -> Option<std::time::Duration> {
    weir::handover::watchdog_usec().map(|usec| std::time::Duration::from_micros(usec / 2))
}

/// `RELOADING=1` with the monotonic time systemd 253 and later want beside it.
fn reloading() -> Vec<sd_notify::NotifyState<'static>> {
    let mut v = vec![sd_notify::NotifyState::Reloading];
    if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
        v.push(now);
    }
    v
}
