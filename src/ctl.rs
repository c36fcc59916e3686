//! `weir ctl`: the command-line client of the admin API ([`crate::admin`]). It finds the API
//! through the configuration file (`admin.listen`, `admin.token_file`) or `--admin`, and
//! prints tables, or the API's JSON with `--json`.

use crate::config::{AdminConfig, AdminListen};
use anyhow::{bail, Context, Result};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::fmt::Write;
use std::path::Path;

/// What to ask (the `weir ctl` subcommands).
#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Every counter: ports, workers, drops by reason, endpoints.
    Stats,
    /// Per worker since the last clear: polls, packets per burst, cycles per packet, busy share.
    Runtime {
        /// Start a new window afterwards.
        #[arg(long)]
        clear: bool,
    },
    /// The endpoint table: weight, health, ejection, handshakes.
    Clusters,
    /// Live flows, a page at a time, from the workers' tables.
    Flows {
        /// Only this service's flows.
        #[arg(long)]
        service: Option<String>,
        /// Only this endpoint's flows (ADDRESS:PORT).
        #[arg(long)]
        endpoint: Option<String>,
        /// Flows in the page (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Where the previous page ended (it says).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// The services.
    Services,
    /// The running configuration, defaults filled in.
    Config,
    /// Reload the configuration file (needs the token).
    Reload,
    /// Hot restart: start a new weir on the configuration (`-c`, which must set
    /// `handover.socket`) that takes over from the running one, flows and all; wait until it
    /// has. The new weir's output goes where this command's goes, or to `--log`.
    Restart {
        /// Append the new weir's output to this file.
        #[arg(long)]
        log: Option<std::path::PathBuf>,
        /// The new weir's `--stats-json`.
        #[arg(long)]
        stats_json: Option<std::path::PathBuf>,
    },
    /// Change the log filter, e.g. `debug` or `weir=debug` (needs the token).
    Logging {
        /// The filter.
        level: String,
    },
    /// Whether weir is ready (exit status 0) or stopping.
    Ready,
    /// Refuse new flows, keep serving the existing ones; `/ready` fails (needs the token).
    Drain,
    /// Fail readiness while forwarding goes on (`fail`), or restore it (`ok`) (needs the
    /// token).
    Health {
        /// `fail` or `ok`.
        #[arg(value_parser = ["fail", "ok"])]
        state: String,
    },
    /// Capture a port's frames to a pcapng file (needs the token).
    Capture {
        /// The port, by name.
        #[arg(long)]
        port: String,
        /// Frames received, sent, or dropped (with the reason as a comment).
        #[arg(long, default_value = "rx", value_parser = ["rx", "tx", "dropped"])]
        direction: String,
        /// Only frames from or to this prefix or address.
        #[arg(long)]
        prefix: Option<String>,
        /// Only frames from or to this TCP or UDP port.
        #[arg(long)]
        l4_port: Option<u16>,
        /// Only this protocol: tcp, udp, icmp, icmpv6 or a number.
        #[arg(long)]
        protocol: Option<String>,
        /// Bytes kept of each frame (1 to 2048).
        #[arg(long, default_value_t = 256)]
        snaplen: u16,
        /// Stop after this many frames (1 to 100 000).
        #[arg(long, default_value_t = 100)]
        count: u64,
        /// Stop after this long, milliseconds (1 to 60 000).
        #[arg(long, default_value_t = 5000)]
        duration_ms: u64,
        /// Where the pcapng goes (`-` for standard output).
        #[arg(short = 'w', long = "write")]
        write: std::path::PathBuf,
    },
}

/// Where the API is and the token to use.
pub struct Target {
    /// The listener.
    pub listen: AdminListen,
    /// The token for requests that change state.
    pub token: Option<String>,
}

impl Target {
    /// From `--admin` if given, else from the configuration file's `admin` section; the token
    /// from `--token-file`, else the configuration's.
    pub fn find(
        admin: Option<&str>,
        token_file: Option<&Path>,
        config: Option<&Path>,
    ) -> Result<Target> {
        let from_config = match config {
            Some(p) => crate::config::load(p)?.admin,
            None => None,
        };
        let listen = match (admin, &from_config) {
            (Some(a), _) => AdminConfig { listen: a.to_owned(), token_file: None }.listen(),
            (None, Some(c)) => c.listen(),
            (None, None) => {
                bail!("where is the admin API? give --admin ADDRESS:PORT or unix:PATH, or -c FILE")
            }
        }
        .map_err(|e| anyhow::anyhow!("admin listener: {e}"))?;
        let token_file =
            token_file.map(Path::to_path_buf).or(from_config.and_then(|c| c.token_file));
        let token = match token_file {
            Some(f) => Some(
                std::fs::read_to_string(&f)
                    .with_context(|| format!("token file {}", f.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        Ok(Target { listen, token })
    }
}

/// Runs `cmd` against `target` and returns what to print.
pub fn run(target: &Target, cmd: &Command, json: bool) -> Result<String> {
    let (method, path) = match cmd {
        Command::Stats => ("GET", "/stats".to_owned()),
        Command::Runtime { clear } => {
            ("GET", if *clear { "/runtime?clear=1".into() } else { "/runtime".into() })
        }
        Command::Clusters => ("GET", "/clusters".into()),
        Command::Flows { service, endpoint, limit, cursor } => {
            let mut q = format!("/flows?limit={limit}");
            for (k, v) in [("service", service), ("endpoint", endpoint), ("cursor", cursor)] {
                if let Some(v) = v {
                    let _ = write!(q, "&{k}={}", query_escape(v));
                }
            }
            ("GET", q)
        }
        Command::Services => ("GET", "/services".into()),
        Command::Config => ("GET", "/config_dump".into()),
        Command::Reload => ("POST", "/reload".into()),
        Command::Logging { level } => ("POST", format!("/logging?level={}", query_escape(level))),
        Command::Ready => ("GET", "/ready".into()),
        Command::Drain => ("POST", "/drain".into()),
        Command::Health { state } => ("POST", format!("/healthcheck/{state}")),
        Command::Restart { .. } => bail!("`restart` does not ask the admin API: see `restart`"),
        Command::Capture {
            port,
            direction,
            prefix,
            l4_port,
            protocol,
            snaplen,
            count,
            duration_ms,
            write,
        } => {
            let mut q = format!(
                "/capture?port={}&direction={direction}&snaplen={snaplen}&count={count}\
                 &duration_ms={duration_ms}",
                query_escape(port)
            );
            if let Some(p) = prefix {
                let _ = write!(q, "&prefix={}", query_escape(p));
            }
            if let Some(p) = l4_port {
                let _ = write!(q, "&l4_port={p}");
            }
            if let Some(p) = protocol {
                let _ = write!(q, "&protocol={}", query_escape(p));
            }
            return capture(target, &q, write, *duration_ms);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (status, body) = rt.block_on(request(target, method, &path, None, ANSWER_TIMEOUT))?;
    if !status.is_success() {
        bail!("{method} {path}: {status}: {}", why(&body));
    }
    if json || matches!(cmd, Command::Ready) {
        return Ok(body);
    }
    let j: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("{path}: not JSON"))?;
    Ok(match cmd {
        Command::Stats => crate::run::report_text(&j),
        Command::Runtime { .. } => runtime_table(&j),
        Command::Clusters => clusters_table(&j),
        Command::Flows { .. } => flows_table(&j),
        Command::Services => services_table(&j),
        Command::Config => serde_json::to_string_pretty(&j)?,
        Command::Reload => format!("reloaded: {}", j["reloaded"].as_str().unwrap_or("?")),
        Command::Logging { .. } => format!("log filter: {}", j["level"].as_str().unwrap_or("?")),
        Command::Ready => body,
        Command::Drain => {
            format!("draining: {} flows left", j["flows"].as_u64().unwrap_or(0))
        }
        Command::Health { .. } => {
            if j["health_failed"].as_bool().unwrap_or(false) {
                "readiness failed by the operator (`weir ctl health ok` restores it)".into()
            } else {
                "readiness restored".into()
            }
        }
        Command::Capture { .. } | Command::Restart { .. } => body,
    })
}

/// `weir ctl restart`: starts `exe run -c config` (the new weir, in its own session, its output
/// to `log` or this process's), and waits until it holds the interfaces the running weir held
/// and that one has exited. Returns what to print.
pub fn restart(
    exe: &Path,
    config: &Path,
    log: Option<&Path>,
    stats_json: Option<&Path>,
) -> Result<String> {
    use std::os::unix::process::CommandExt;
    let cfg = crate::config::load(config)?;
    let Some(h) = &cfg.handover else {
        bail!("{}: no `handover` section: a restart would lose every flow", config.display())
    };
    let interfaces = crate::config::host_interfaces(&cfg);
    let Some((first, global)) = interfaces.first() else { bail!("the configuration has no ports") };
    let holder = || crate::claim::holder(first, *global);
    // Running, not a zombie its parent has yet to reap.
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().to_owned()))
            .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
    };
    let Some(old) = holder().filter(|p| alive(*p)) else {
        bail!("no weir holds `{first}`: nothing to take over from (start one with `weir run`)")
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("run").arg("-c").arg(config).stdin(std::process::Stdio::null()).process_group(0);
    if let Some(p) = stats_json {
        cmd.arg("--stats-json").arg(p);
    }
    if let Some(p) = log {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .with_context(|| format!("--log {}", p.display()))?;
        cmd.stdout(f.try_clone()?).stderr(f);
    }
    let mut child = cmd.spawn().context("starting the new weir")?;
    let pid = child.id();
    let deadline = std::time::Instant::now()
        + std::time::Duration::from_millis(h.timeout_ms)
        + std::time::Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the new weir exited ({status}) without taking over: pid {old} goes on forwarding"
            );
        }
        if holder() == Some(pid) && !alive(old) {
            return Ok(format!("weir pid {pid} took over from pid {old}"));
        }
        if std::time::Instant::now() > deadline {
            bail!("the new weir (pid {pid}) has not taken over from pid {old} in time");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Why the API refused: its JSON `error`, or the body as it is.
fn why(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|j| j["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned())
}

/// How long an answer may take.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Streams a capture into `path` (or standard output for `-`) as the API sends it. A file is
/// written beside `path` and renamed onto it once the capture ends well: a failed capture
/// leaves no file and does not clobber one already there.
fn capture(target: &Target, query: &str, path: &Path, duration_ms: u64) -> Result<String> {
    let to_stdout = path.as_os_str() == "-";
    let partial = {
        let mut p = path.as_os_str().to_owned();
        p.push(".partial");
        std::path::PathBuf::from(p)
    };
    let mut out: Box<dyn std::io::Write> = if to_stdout {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(&partial).with_context(|| format!("{}", partial.display()))?,
        ))
    };
    let taken = (|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let timeout = std::time::Duration::from_millis(duration_ms) + ANSWER_TIMEOUT;
        let sink = Some(&mut out as &mut dyn std::io::Write);
        let (status, body) = rt.block_on(request(target, "POST", query, sink, timeout))?;
        if !status.is_success() {
            bail!("POST /capture: {status}: {}", why(&body));
        }
        out.flush()?;
        Ok(body)
    })();
    drop(out);
    if to_stdout {
        // Only the pcapng goes to standard output.
        return taken.map(|_| String::new());
    }
    match taken.and_then(|body| {
        std::fs::rename(&partial, path).with_context(|| format!("{}", path.display()))?;
        Ok(body)
    }) {
        Ok(body) => Ok(format!("{body} written to {}", path.display())),
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

/// Percent-escapes what a query value cannot hold as it is.
fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z'
            | b'A'..=b'Z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'~'
            | b'='
            | b','
            | b':' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends one request. A successful answer's body goes to `sink` if there is one (and the
/// returned text says how many bytes), else it is returned.
async fn request(
    target: &Target,
    method: &str,
    path: &str,
    sink: Option<&mut dyn std::io::Write>,
    timeout: std::time::Duration,
) -> Result<(hyper::StatusCode, String)> {
    let mut req = Request::builder().method(method).uri(path).header("host", "weir");
    if let Some(t) = &target.token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req.body(Empty::<Bytes>::new())?;
    let response = match &target.listen {
        AdminListen::Tcp(addr) => {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .with_context(|| format!("connecting to the admin API at {addr}"))?;
            send(TokioIo::new(stream), req, sink, timeout).await?
        }
        AdminListen::Unix(p) => {
            let stream = tokio::net::UnixStream::connect(p)
                .await
                .with_context(|| format!("connecting to the admin API at unix:{}", p.display()))?;
            send(TokioIo::new(stream), req, sink, timeout).await?
        }
    };
    Ok(response)
}

async fn send<T>(
    io: T,
    req: Request<Empty<Bytes>>,
    sink: Option<&mut dyn std::io::Write>,
    timeout: std::time::Duration,
) -> Result<(hyper::StatusCode, String)>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        let res = sender.send_request(req).await?;
        let status = res.status();
        let mut body = res.into_body();
        match sink {
            Some(sink) if status.is_success() => {
                let mut bytes = 0usize;
                while let Some(frame) = body.frame().await {
                    if let Some(data) = frame?.data_ref() {
                        sink.write_all(data)?;
                        bytes += data.len();
                    }
                }
                anyhow::Ok((status, format!("{bytes} bytes")))
            }
            _ => {
                let body = body.collect().await?.to_bytes();
                anyhow::Ok((status, String::from_utf8_lossy(&body).into_owned()))
            }
        }
    };
    tokio::time::timeout(timeout, exchange).await.context("the admin API did not answer")?
}

fn runtime_table(j: &serde_json::Value) -> String {
    let mut s = format!(
        "{:<7} {:>12} {:>12} {:>10} {:>12} {:>11} {:>6} {:>9}\n",
        "worker", "polls", "packets", "pkt/burst", "cycles/pkt", "busy_share", "", "sleeps"
    );
    for w in j["workers"].as_array().into_iter().flatten() {
        let n = |k: &str| w[k].as_u64().unwrap_or(0);
        let f = |k: &str| w[k].as_f64().unwrap_or(0.0);
        let _ = writeln!(
            s,
            "{:<7} {:>12} {:>12} {:>10.1} {:>12.1} {:>10.1}% {:>6} {:>9}",
            n("worker"),
            n("polls"),
            n("packets"),
            f("packets_per_burst"),
            f("cycles_per_packet"),
            100.0 * f("busy_share"),
            "",
            n("sleeps")
        );
    }
    s
}

fn clusters_table(j: &serde_json::Value) -> String {
    let mut s = format!(
        "{:<16} {:<40} {:>6} {:>7} {:>5} {:>8} {:>9} {:>10} {:>10}\n",
        "cluster", "endpoint", "weight", "healthy", "new", "ejected", "returns", "ok", "failed"
    );
    for c in j["clusters"].as_array().into_iter().flatten() {
        for e in c["endpoints"].as_array().into_iter().flatten() {
            let yes = |k: &str| if e[k].as_bool().unwrap_or(false) { "yes" } else { "no" };
            let returns = e["returns_in_ms"]
                .as_u64()
                .map_or_else(|| "-".to_owned(), |ms| format!("{:.1}s", ms as f64 / 1000.0));
            let _ = writeln!(
                s,
                "{:<16} {:<40} {:>6} {:>7} {:>5} {:>8} {:>9} {:>10} {:>10}",
                c["name"].as_str().unwrap_or("?"),
                format!(
                    "{}:{}",
                    e["address"].as_str().unwrap_or("?"),
                    e["port"].as_u64().unwrap_or(0)
                ),
                e["weight"].as_u64().unwrap_or(0),
                yes("healthy"),
                yes("takes_new_flows"),
                yes("ejected"),
                returns,
                e["connects_ok"].as_u64().unwrap_or(0),
                e["connects_failed"].as_u64().unwrap_or(0),
            );
        }
    }
    s
}

fn flows_table(j: &serde_json::Value) -> String {
    let mut s = format!(
        "{:<7} {:<8} {:<5} {:<46} {:<46} {:<46} {:<12} {:>10}\n",
        "worker", "flow", "proto", "client", "vip", "endpoint", "state", "idle_left"
    );
    for f in j["flows"].as_array().into_iter().flatten() {
        let t = |k: &str| f[k].as_str().unwrap_or("-").to_owned();
        let _ = writeln!(
            s,
            "{:<7} {:<8} {:<5} {:<46} {:<46} {:<46} {:<12} {:>9}s",
            f["worker"].as_u64().unwrap_or(0),
            f["id"].as_u64().unwrap_or(0),
            t("protocol"),
            t("client"),
            t("vip"),
            t("endpoint"),
            t("state"),
            f["idle_timeout_ms"].as_u64().unwrap_or(0) / 1000
        );
    }
    if let Some(next) = j["next"].as_str() {
        let _ = writeln!(s, "more: --cursor {next}");
    }
    s
}

fn services_table(j: &serde_json::Value) -> String {
    let mut s = format!(
        "{:<16} {:<40} {:>5} {:<8} {:<16} {:<6}\n",
        "service", "vip", "port", "proto", "cluster", "mode"
    );
    for v in j["services"].as_array().into_iter().flatten() {
        let t = |k: &str| v[k].as_str().unwrap_or("?").to_owned();
        let _ = writeln!(
            s,
            "{:<16} {:<40} {:>5} {:<8} {:<16} {:<6}",
            t("name"),
            t("vip"),
            v["port"].as_u64().unwrap_or(0),
            t("protocol"),
            t("cluster"),
            t("mode")
        );
    }
    s
}
