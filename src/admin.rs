//! The admin API: HTTP on a kernel socket (TCP or Unix), served by the control thread on a
//! single-threaded runtime, never on a worker's core. Reads are open; what changes state
//! (reload, drain, capture, health override, log level) needs the configured token (`Authorization: Bearer TOKEN`).
//!
//! | path | what |
//! |---|---|
//! | `GET /stats` | every counter, as the exit report has them, now |
//! | `GET /metrics` | the same in Prometheus' text format, labelled |
//! | `GET /runtime[?clear=1]` | per worker since the last clear (VPP's `show runtime`) |
//! | `GET /clusters`, `GET /services` | the endpoint table and the services |
//! | `GET /flows?service=&endpoint=&limit=&cursor=` | a page of live flows, from the workers |
//! | `GET /config_dump` | the running configuration, defaults filled in, and its generation |
//! | `GET /ready`, `GET /healthz` | readiness (503 once stopping) and liveness |
//! | `POST /reload` | reload the configuration file (token) |
//! | `POST /logging?level=FILTER` | change the log filter (token) |
//! | `POST /capture?port=&direction=&prefix=&l4_port=&protocol=&snaplen=&count=&duration_ms=` | a pcapng stream of a port's frames (token) |
//! | `POST /drain` | refuse new flows, keep serving existing ones, `/ready` 503 (token) |
//! | `POST /healthcheck/fail`, `POST /healthcheck/ok` | fail `/ready` while forwarding goes on, and restore it (token) |
//!
//! At most [`MAX_CONNECTIONS`] clients at once (more are closed and counted); a client has
//! [`HEADER_READ_TIMEOUT`] to send each request's headers.

use crate::config::{AdminListen, Config};
use crate::run::{Running, RuntimeCounters};
use anyhow::{bail, Context, Result};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The most series `/metrics` writes; beyond, series are left out and counted
/// (`weir_metrics_series_dropped`).
pub const MAX_SERIES: usize = 20_000;

/// The largest request body accepted, bytes (no endpoint reads one).
pub const MAX_BODY_BYTES: usize = 4096;

/// Changes the log filter (installed by `main`, which owns the subscriber).
pub type LogControl = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What the admin API and the control loop share.
pub struct Control {
    /// The dataplane.
    pub running: Running,
    /// The configuration in effect: the file's, with xDS's services and clusters (shared, not
    /// copied: a control plane's may be large, and the control loop reads it every 100 ms).
    pub cfg: Mutex<Arc<Config>>,
    /// The file's own configuration.
    file: Mutex<Config>,
    /// The services and clusters from xDS in effect.
    xds_part: Mutex<(Vec<crate::config::ServiceConfig>, Vec<crate::config::ClusterConfig>)>,
    /// The xDS client's state, when `xds` is configured.
    pub xds: Option<Arc<Mutex<crate::xds::client::XdsStatus>>>,
    /// The xDS client's session (what it holds and the versions), when `xds` is configured.
    pub xds_session: Option<Arc<Mutex<crate::xds::client::Session>>>,
    /// The configuration file, read again on reload.
    pub path: PathBuf,
    token: Option<String>,
    /// Where `/runtime`'s window starts, per worker.
    runtime_base: Mutex<Vec<RuntimeCounters>>,
    /// Set once weir stops: `/ready` answers 503.
    pub stopping: AtomicBool,
    log: Option<LogControl>,
    /// One reload at a time, from the API, a signal or the file watch.
    reloading: tokio::sync::Mutex<()>,
    /// Set while a capture runs (one at a time).
    capturing: Arc<AtomicBool>,
    /// Set by `POST /healthcheck/fail`: `/ready` answers 503 until `POST /healthcheck/ok`, so
    /// that a load balancer in front takes this node out while it keeps forwarding.
    health_failed: AtomicBool,
    /// Admin connections closed at once for the cap on connections.
    pub connections_refused: std::sync::atomic::AtomicU64,
    /// Set once a new weir took over: the admin listener (and its Unix path) is its now.
    pub handed_over: AtomicBool,
}

impl Control {
    /// Wraps the running dataplane; reads the token file of `cfg.admin` if there is one.
    pub fn new(
        running: Running,
        cfg: Config,
        path: &Path,
        log: Option<LogControl>,
    ) -> Result<Self> {
        let token = match cfg.admin.as_ref().and_then(|a| a.token_file.as_ref()) {
            None => None,
            Some(f) => Some(read_token(f)?),
        };
        let base = running.runtime_counters();
        let xds: Option<Arc<Mutex<crate::xds::client::XdsStatus>>> =
            cfg.xds.as_ref().map(|_| Arc::default());
        let xds_session = cfg.xds.as_ref().zip(xds.as_ref()).map(|(x, status)| {
            Arc::new(Mutex::new(crate::xds::client::Session::new(x, Arc::clone(status))))
        });
        Ok(Control {
            running,
            file: Mutex::new(cfg.clone()),
            cfg: Mutex::new(Arc::new(cfg)),
            xds_part: Mutex::default(),
            xds,
            xds_session,
            path: path.to_owned(),
            token,
            runtime_base: Mutex::new(base),
            stopping: AtomicBool::new(false),
            log,
            reloading: tokio::sync::Mutex::new(()),
            capturing: Arc::new(AtomicBool::new(false)),
            health_failed: AtomicBool::new(false),
            connections_refused: std::sync::atomic::AtomicU64::new(0),
            handed_over: AtomicBool::new(false),
        })
    }

    /// Goes on from a predecessor's xDS session (a hot restart): its services and clusters
    /// are in force beside the file's (the dataplane started with them when `started_with`;
    /// otherwise they are applied now, as an update is), and the client resumes its stream
    /// from the versions it held. On an error nothing changed.
    pub fn resume_xds(
        &self,
        carried: crate::xds::client::CarriedSession,
        started_with: bool,
    ) -> Result<()> {
        let (Some(x), Some(status), Some(session)) =
            (self.config().xds.clone(), &self.xds, &self.xds_session)
        else {
            bail!("no xds section: the xDS session is not taken over");
        };
        if carried.bootstrap != x {
            bail!("the xds section differs from the running weir's: its session is not taken over");
        }
        let (services, clusters) = carried.in_force();
        let (services, clusters) = (services.to_vec(), clusters.to_vec());
        if started_with {
            let file = self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
            *self.cfg.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                Arc::new(crate::xds::merged(&file, &services, &clusters));
            *self.xds_part.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                (services, clusters);
        } else {
            crate::xds::client::Apply::apply(self, services, clusters)?;
        }
        *session.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            crate::xds::client::Session::resume(&x, Arc::clone(status), carried);
        Ok(())
    }

    /// Starts draining: no new flows, existing ones carry on; `/ready` answers 503.
    pub fn start_drain(&self) {
        self.running.set_draining(true);
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// The configuration in effect.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.cfg.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Reloads the configuration file: read on a blocking thread (a large file must not hold
    /// up the control thread), then applied. Returns the summary for the log. `stopped`
    /// resolves when weir is asked to stop, which abandons the reload.
    pub async fn reload(&self, stopped: impl std::future::Future<Output = ()>) -> Result<String> {
        let _one = self.reloading.lock().await;
        let path = self.path.clone();
        let load = tokio::task::spawn_blocking(move || crate::config::load(&path));
        let new = tokio::select! {
            loaded = load => loaded.context("the reload thread failed")??,
            () = stopped => bail!("stopping"),
        };
        let running = self.config();
        let effective = {
            let part = self.xds_part.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            crate::xds::merged(&new, &part.0, &part.1)
        };
        // The file alone was valid; with xDS's part it must be too.
        crate::config::validate(&effective).map_err(|e| anyhow::anyhow!("with xDS's part: {e}"))?;
        let summary = self.running.reload(&running, &effective)?;
        *self.cfg.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(effective);
        *self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = new;
        Ok(summary)
    }

    /// The refusal of a request without the token, or `None` when it may go ahead.
    fn refusal(&self, headers: &HeaderMap) -> Option<Response> {
        let Some(token) = &self.token else {
            return Some(problem(
                StatusCode::FORBIDDEN,
                "no admin.token_file is configured: requests that change state are refused",
            ));
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(given.as_bytes(), token.as_bytes()) {
            None
        } else {
            Some(problem(
                StatusCode::UNAUTHORIZED,
                "a valid `Authorization: Bearer TOKEN` is needed",
            ))
        }
    }
}

fn read_token(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("admin.token_file {}", path.display()))?;
    let token = text.trim();
    if token.len() < 16 {
        bail!("admin.token_file {}: the token must be at least 16 characters", path.display());
    }
    Ok(token.to_owned())
}

/// Compares without an early exit, so the time taken says nothing about the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    a.len() == b.len() && diff == 0
}

fn problem(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// The admin API's routes over `control`.
pub fn router(control: Arc<Control>) -> Router {
    Router::new()
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/runtime", get(runtime))
        .route("/clusters", get(clusters))
        .route("/flows", get(flows))
        .route("/services", get(services))
        .route("/config_dump", get(config_dump))
        .route("/ready", get(ready))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/reload", post(reload))
        .route("/logging", post(logging))
        .route("/drain", post(drain))
        .route(
            "/healthcheck/fail",
            post(|State(c): State<Arc<Control>>, h: HeaderMap| async move {
                health_override(&c, &h, true).await
            }),
        )
        .route(
            "/healthcheck/ok",
            post(|State(c): State<Arc<Control>>, h: HeaderMap| async move {
                health_override(&c, &h, false).await
            }),
        )
        .route("/capture", post(capture))
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "no such admin endpoint") })
        // Nothing takes a body: a large one is refused before it is read.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(control)
}

/// Binds the admin listener: refuses a Unix socket path another process is listening on,
/// and replaces a stale one.
pub async fn bind(listen: &AdminListen) -> Result<Listener> {
    match listen {
        AdminListen::Tcp(addr) => Ok(Listener::Tcp(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("admin.listen {addr}"))?,
        )),
        AdminListen::Unix(path) => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                bail!("admin.listen unix:{}: another process is listening there", path.display());
            }
            let _ = std::fs::remove_file(path);
            let l = tokio::net::UnixListener::bind(path)
                .with_context(|| format!("admin.listen unix:{}", path.display()))?;
            Ok(Listener::Unix(l, path.clone()))
        }
    }
}

/// The admin listener the weir this one took over from served on, if it listens where
/// `listen` says (else `None`: bind anew).
pub fn adopt(listen: &AdminListen, fd: std::os::fd::OwnedFd) -> Result<Option<Listener>> {
    match listen {
        AdminListen::Tcp(addr) => {
            let l = std::net::TcpListener::from(fd);
            if l.local_addr().ok().as_ref() != Some(addr) {
                return Ok(None);
            }
            l.set_nonblocking(true)?;
            Ok(Some(Listener::Tcp(tokio::net::TcpListener::from_std(l)?)))
        }
        AdminListen::Unix(path) => {
            let l = std::os::unix::net::UnixListener::from(fd);
            let at = l.local_addr().ok().and_then(|a| a.as_pathname().map(Path::to_path_buf));
            if at.as_ref() != Some(path) {
                return Ok(None);
            }
            l.set_nonblocking(true)?;
            Ok(Some(Listener::Unix(tokio::net::UnixListener::from_std(l)?, path.clone())))
        }
    }
}

impl Listener {
    /// A duplicate of the listening socket, to hand to a weir that takes over.
    pub fn duplicate(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        match self {
            Listener::Tcp(l) => l.as_fd().try_clone_to_owned(),
            Listener::Unix(l, _) => l.as_fd().try_clone_to_owned(),
        }
    }
}

/// A bound admin listener.
pub enum Listener {
    /// TCP.
    Tcp(tokio::net::TcpListener),
    /// A Unix socket, removed when served out.
    Unix(tokio::net::UnixListener, PathBuf),
}

/// Most admin connections served at once; more are closed as soon as they are accepted (and
/// counted), so that a flood of clients cannot take the control thread's memory.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a client has to send a request's headers: a slow client holds its connection
/// this long at most between requests.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The longest a connection is served (then it is closed once its response in progress is
/// done): the longest capture and some.
const CONNECTION_MAX: std::time::Duration =
    std::time::Duration::from_millis(CAPTURE_MS_MAX + 30_000);

/// Serves the admin API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: Listener,
    control: Arc<Control>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match listener {
        Listener::Tcp(l) => serve_on(l, control, shutdown).await,
        Listener::Unix(l, path) => {
            let served = serve_on(l, Arc::clone(&control), shutdown).await;
            if !control.handed_over.load(Ordering::Relaxed) {
                let _ = std::fs::remove_file(path);
            }
            served
        }
    }
}

/// The accept loop: HTTP/1.1 with a header read timeout, at most [`MAX_CONNECTIONS`] at once,
/// each for at most [`CONNECTION_MAX`] (then closed once the response in progress is done); on
/// shutdown, connections are closed the same way, within a second.
async fn serve_on<L>(
    mut listener: L,
    control: Arc<Control>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    let app = router(Arc::clone(&control));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut served = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while served.try_join_next().is_some() {}
        // `accept` retries on its own (and backs off on running out of descriptors).
        let (io, _) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            control.connections_refused.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut stopping = stopping.clone();
        served.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return drop(slot),
                () = tokio::time::sleep(CONNECTION_MAX) => {}
                _ = stopping.wait_for(|s| *s) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), conn).await;
            drop(slot);
        });
    }
    let _ = stop.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while served.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

async fn stats(State(c): State<Arc<Control>>) -> Json<serde_json::Value> {
    Json(stats_json(&c))
}

/// `/stats`: the report, the mesh generation and the admin server's own counters.
fn stats_json(c: &Control) -> serde_json::Value {
    let mut j = c.running.report_json();
    j["generation"] = serde_json::json!(c.running.generation());
    j["admin"] = serde_json::json!({
        "connections_refused": c.connections_refused.load(Ordering::Relaxed),
    });
    j
}

#[derive(serde::Deserialize)]
struct FlowsQuery {
    /// A service name.
    service: Option<String>,
    /// An endpoint, `ADDRESS:PORT`.
    endpoint: Option<String>,
    /// Flows in the page (default 100, at most `FLOW_PAGE_MAX`).
    limit: Option<usize>,
    /// Where the previous page ended: `WORKER:FLOW`.
    cursor: Option<String>,
}

/// A page of live flows, asked of each worker in turn (they answer between bursts).
async fn flows(
    State(c): State<Arc<Control>>,
    q: Result<Query<FlowsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    use dataplane::worker::{FlowFilter, FLOW_PAGE_MAX};
    let Ok(Query(q)) = q else {
        return problem(StatusCode::BAD_REQUEST, "query: service, endpoint, limit, cursor");
    };
    let cfg = c.config();
    let snap = c.running.mesh_snapshot();
    let mut filter = FlowFilter::default();
    if let Some(name) = &q.service {
        let Some(s) = cfg.services.iter().find(|s| &s.name == name) else {
            return problem(StatusCode::NOT_FOUND, &format!("no service `{name}`"));
        };
        let proto = match s.protocol {
            crate::config::ProtocolName::Tcp => dataplane::mesh::model::proto::TCP,
            crate::config::ProtocolName::Udp => dataplane::mesh::model::proto::UDP,
        };
        filter.service = Some((s.vip, s.port, proto));
    }
    if let Some(e) = &q.endpoint {
        let Ok(addr) = e.parse::<std::net::SocketAddr>() else {
            return problem(StatusCode::BAD_REQUEST, "endpoint: ADDRESS:PORT ([v6]:port)");
        };
        let Some(ep) = snap.endpoints().find(|x| x.addr == addr.ip() && x.port == addr.port())
        else {
            return problem(StatusCode::NOT_FOUND, &format!("no endpoint {addr}"));
        };
        filter.endpoint = Some(ep.id);
    }
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > FLOW_PAGE_MAX {
        return problem(StatusCode::BAD_REQUEST, &format!("limit: 1..={FLOW_PAGE_MAX}"));
    }
    let (mut worker, mut from) = match q.cursor.as_deref().map(|c| c.split_once(':')) {
        None => (0usize, 0u32),
        Some(Some((w, f))) => match (w.parse(), f.parse()) {
            (Ok(w), Ok(f)) => (w, f),
            _ => return problem(StatusCode::BAD_REQUEST, "cursor: WORKER:FLOW, from `next`"),
        },
        Some(None) => return problem(StatusCode::BAD_REQUEST, "cursor: WORKER:FLOW, from `next`"),
    };
    let mut list = Vec::new();
    let mut next = None;
    while worker < c.running.stats.len() && list.len() < limit {
        let desk = &c.running.stats[worker].flow_desk;
        desk.ask(from, limit - list.len(), filter);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        let (flows, more) = loop {
            if let Some(a) = desk.answer() {
                break a;
            }
            if tokio::time::Instant::now() > deadline {
                return problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("worker {worker} did not answer"),
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        };
        for (id, f, left_ms) in flows {
            let endpoint = snap
                .endpoint(f.endpoint)
                .map(|e| format!("{}", std::net::SocketAddr::new(e.addr, e.port)));
            list.push(serde_json::json!({
                "worker": worker, "id": id,
                "protocol": match f.forward.proto() { 6 => "tcp", 17 => "udp", _ => "other" },
                "client": std::net::SocketAddr::new(f.forward.src(), f.forward.src_port()).to_string(),
                "vip": std::net::SocketAddr::new(f.forward.dst(), f.forward.dst_port()).to_string(),
                "endpoint": endpoint,
                "reply_to": std::net::SocketAddr::new(f.reverse.dst(), f.reverse.dst_port()).to_string(),
                "mode": format!("{:?}", f.mode).to_lowercase(),
                "state": format!("{:?}", f.state).to_lowercase(),
                "idle_timeout_ms": left_ms,
            }));
        }
        match more {
            Some(id) => {
                next = Some(format!("{worker}:{id}"));
                break;
            }
            None => {
                worker += 1;
                from = 0;
                if worker < c.running.stats.len() && list.len() >= limit {
                    next = Some(format!("{worker}:0"));
                }
            }
        }
    }
    Json(serde_json::json!({ "flows": list, "next": next })).into_response()
}

#[derive(serde::Deserialize)]
struct RuntimeQuery {
    #[serde(default)]
    clear: u8,
}

async fn runtime(
    State(c): State<Arc<Control>>,
    Query(q): Query<RuntimeQuery>,
) -> Json<serde_json::Value> {
    let now = c.running.runtime_counters();
    let mut base = c.runtime_base.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let workers: Vec<_> = now
        .iter()
        .enumerate()
        .map(|(i, n)| n.window_json(base.get(i).unwrap_or(&RuntimeCounters::default()), i))
        .collect();
    if q.clear != 0 {
        *base = now;
    }
    Json(serde_json::json!({ "workers": workers }))
}

async fn clusters(State(c): State<Arc<Control>>) -> Json<serde_json::Value> {
    Json(c.running.clusters_json(&c.config()))
}

async fn services(State(c): State<Arc<Control>>) -> Json<serde_json::Value> {
    Json(c.running.services_json(&c.config()))
}

async fn config_dump(State(c): State<Arc<Control>>) -> Response {
    let xds = c.xds.as_ref().map(|x| {
        serde_json::to_value(&*x.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
            .unwrap_or_default()
    });
    match serde_json::to_value(&*c.config()) {
        Ok(cfg) => Json(serde_json::json!({
            "generation": c.running.generation(),
            "path": c.path.display().to_string(),
            "config": cfg,
            "xds": xds,
        }))
        .into_response(),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn ready(State(c): State<Arc<Control>>) -> Response {
    if c.stopping.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response()
    } else if c.health_failed.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "failed by the operator (POST /healthcheck/ok)\n")
            .into_response()
    } else {
        "ready\n".into_response()
    }
}

/// `POST /healthcheck/fail` and `/healthcheck/ok` (Envoy's names): the operator's override of
/// readiness. Forwarding goes on either way.
async fn health_override(c: &Control, headers: &HeaderMap, failed: bool) -> Response {
    if let Some(refused) = c.refusal(headers) {
        return refused;
    }
    if c.health_failed.swap(failed, Ordering::Relaxed) != failed {
        tracing::warn!(
            "readiness {} by the operator (admin API)",
            if failed { "failed" } else { "restored" }
        );
    }
    Json(serde_json::json!({ "health_failed": failed })).into_response()
}

async fn reload(State(c): State<Arc<Control>>, headers: HeaderMap) -> Response {
    if let Some(refused) = c.refusal(&headers) {
        return refused;
    }
    let stopped = {
        let c = Arc::clone(&c);
        async move {
            while !c.stopping.load(Ordering::Relaxed) {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    match c.reload(stopped).await {
        Ok(summary) => {
            tracing::info!("reloaded {} (admin API): {summary}", c.path.display());
            Json(serde_json::json!({ "reloaded": summary })).into_response()
        }
        Err(e) => {
            tracing::error!(
                "reload of {} (admin API) rejected, the running configuration stays: {e:#}",
                c.path.display()
            );
            problem(StatusCode::CONFLICT, &format!("{e:#}"))
        }
    }
}

async fn drain(State(c): State<Arc<Control>>, headers: HeaderMap) -> Response {
    if let Some(refused) = c.refusal(&headers) {
        return refused;
    }
    if !c.running.draining() {
        tracing::info!(flows = c.running.flows(), "draining (admin API): no new flows");
        c.start_drain();
    }
    Json(serde_json::json!({ "draining": true, "flows": c.running.flows() })).into_response()
}

#[derive(serde::Deserialize)]
struct CaptureQuery {
    /// The port, by name.
    port: String,
    /// `rx` (default), `tx` or `dropped`.
    #[serde(default)]
    direction: Option<String>,
    /// Frames from or to this prefix (`198.18.1.0/24`, `2001:db8::1/128`, or an address).
    prefix: Option<String>,
    /// Frames from or to this TCP or UDP port.
    l4_port: Option<u16>,
    /// `tcp`, `udp`, `icmp`, `icmpv6` or a protocol number.
    protocol: Option<String>,
    /// Bytes kept of each frame (default 256, at most 2048).
    snaplen: Option<u16>,
    /// Frames, at most (default 100, at most 100 000).
    count: Option<u64>,
    /// How long, at most, ms (default 5000, at most 60 000).
    duration_ms: Option<u64>,
}

/// The most frames one capture takes, and its longest duration.
const CAPTURE_COUNT_MAX: u64 = 100_000;
const CAPTURE_MS_MAX: u64 = 60_000;

/// Arms a capture on every worker and streams what they copy as pcapng until the count or
/// the time is reached (or the client goes away), then disarms it.
async fn capture(
    State(c): State<Arc<Control>>,
    headers: HeaderMap,
    q: Result<Query<CaptureQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    use dataplane::capture::{CaptureFilter, Direction, SNAP_MAX};
    if let Some(refused) = c.refusal(&headers) {
        return refused;
    }
    let Ok(Query(q)) = q else {
        return problem(StatusCode::BAD_REQUEST, "query: port (required), direction, prefix, l4_port, protocol, snaplen, count, duration_ms");
    };
    let cfg = c.config();
    let Some(port) = cfg.ports.iter().position(|p| p.name == q.port) else {
        return problem(StatusCode::NOT_FOUND, &format!("no port `{}`", q.port));
    };
    let direction = match q.direction.as_deref().unwrap_or("rx") {
        "rx" => Direction::Rx,
        "tx" => Direction::Tx,
        "dropped" => Direction::Dropped,
        _ => return problem(StatusCode::BAD_REQUEST, "direction: rx, tx or dropped"),
    };
    let prefix = match q.prefix.as_deref() {
        None => None,
        Some(p) => match p.parse::<ipnet::IpNet>() {
            Ok(n) => Some((n.addr(), n.prefix_len())),
            Err(_) => match p.parse::<std::net::IpAddr>() {
                Ok(a) => Some((a, if a.is_ipv4() { 32 } else { 128 })),
                Err(_) => return problem(StatusCode::BAD_REQUEST, "prefix: ADDRESS[/LENGTH]"),
            },
        },
    };
    let protocol = match q.protocol.as_deref() {
        None => None,
        Some("tcp") => Some(6),
        Some("udp") => Some(17),
        Some("icmp") => Some(1),
        Some("icmpv6") => Some(58),
        Some(n) => match n.parse::<u8>() {
            Ok(n) => Some(n),
            Err(_) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "protocol: tcp, udp, icmp, icmpv6 or 0..=255",
                )
            }
        },
    };
    let snaplen = q.snaplen.unwrap_or(256);
    let count = q.count.unwrap_or(100);
    let duration_ms = q.duration_ms.unwrap_or(5000);
    if snaplen == 0 || usize::from(snaplen) > SNAP_MAX {
        return problem(StatusCode::BAD_REQUEST, &format!("snaplen: 1..={SNAP_MAX}"));
    }
    if count == 0 || count > CAPTURE_COUNT_MAX {
        return problem(StatusCode::BAD_REQUEST, &format!("count: 1..={CAPTURE_COUNT_MAX}"));
    }
    if duration_ms == 0 || duration_ms > CAPTURE_MS_MAX {
        return problem(StatusCode::BAD_REQUEST, &format!("duration_ms: 1..={CAPTURE_MS_MAX}"));
    }
    if c.capturing.swap(true, Ordering::AcqRel) {
        return problem(StatusCode::CONFLICT, "a capture is already running");
    }
    let filter = CaptureFilter {
        port: u8::try_from(port).unwrap_or(u8::MAX),
        direction,
        prefix,
        l4_port: q.l4_port,
        protocol,
        snaplen,
    };
    let session = CaptureSession::start(Arc::clone(&c), filter, &q.port, count, duration_ms);
    let Ok(session) = session else {
        c.capturing.store(false, Ordering::Release);
        return problem(StatusCode::INTERNAL_SERVER_ERROR, "could not start the pcapng stream");
    };
    tracing::info!(port = %q.port, ?direction, count, duration_ms, "capture armed (admin API)");
    let stream = futures_util::stream::unfold(session, |mut s| async move {
        s.next_chunk().await.map(|chunk| (Ok::<_, std::io::Error>(chunk), s))
    });
    ([(header::CONTENT_TYPE, "application/x-pcapng")], axum::body::Body::from_stream(stream))
        .into_response()
}

/// A capture in progress: disarmed and released when it ends or is dropped (client gone).
struct CaptureSession {
    control: Arc<Control>,
    writer: pcap_file::pcapng::PcapNgWriter<Vec<u8>>,
    left: u64,
    until: tokio::time::Instant,
    ended: bool,
}

impl CaptureSession {
    fn start(
        control: Arc<Control>,
        filter: dataplane::capture::CaptureFilter,
        port: &str,
        count: u64,
        duration_ms: u64,
    ) -> Result<CaptureSession> {
        use pcap_file::pcapng::blocks::interface_description::{
            InterfaceDescriptionBlock, InterfaceDescriptionOption,
        };
        let mut writer = pcap_file::pcapng::PcapNgWriter::new(Vec::new())?;
        writer.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: pcap_file::DataLink::ETHERNET,
            snaplen: u32::from(filter.snaplen),
            options: vec![
                InterfaceDescriptionOption::IfName(port.to_owned().into()),
                // Timestamps in nanoseconds.
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        })?;
        for w in &control.running.stats {
            w.capture.arm(filter);
        }
        Ok(CaptureSession {
            control,
            writer,
            left: count,
            until: tokio::time::Instant::now() + std::time::Duration::from_millis(duration_ms),
            ended: false,
        })
    }

    /// The next piece of the pcapng stream, or `None` once it is complete.
    async fn next_chunk(&mut self) -> Option<Vec<u8>> {
        use pcap_file::pcapng::blocks::enhanced_packet::{
            EnhancedPacketBlock, EnhancedPacketOption,
        };
        loop {
            if self.ended {
                return None;
            }
            for w in &self.control.running.stats {
                while self.left > 0 {
                    let Some(frame) = w.capture.take() else { break };
                    let reason = frame.reason.and_then(|r| {
                        dataplane::pipeline::DropReason::ALL.get(usize::from(r)).map(|r| r.as_str())
                    });
                    let options = reason
                        .map(|r| {
                            vec![EnhancedPacketOption::Comment(format!("dropped: {r}").into())]
                        })
                        .unwrap_or_default();
                    let block = EnhancedPacketBlock {
                        interface_id: 0,
                        timestamp: std::time::Duration::from_nanos(frame.unix_ns),
                        original_len: frame.original_len,
                        data: frame.data[..usize::from(frame.kept)].to_vec().into(),
                        options,
                    };
                    let _ = self.writer.write_pcapng_block(block);
                    w.capture.recycle(frame);
                    self.left -= 1;
                }
            }
            let done = self.left == 0 || tokio::time::Instant::now() >= self.until;
            if done {
                self.finish();
            }
            let chunk = std::mem::take(self.writer.get_mut());
            if !chunk.is_empty() {
                return Some(chunk);
            }
            if done {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    fn finish(&mut self) {
        if !self.ended {
            self.ended = true;
            let lost: u64 = self
                .control
                .running
                .stats
                .iter()
                .map(|w| {
                    w.capture.disarm();
                    // Frames copied after the count was reached go back unread.
                    while let Some(f) = w.capture.take() {
                        w.capture.recycle(f);
                    }
                    w.capture.lost.swap(0, Ordering::Relaxed)
                })
                .sum();
            self.control.capturing.store(false, Ordering::Release);
            tracing::info!(lost, "capture ended");
        }
    }
}

impl Drop for CaptureSession {
    fn drop(&mut self) {
        self.finish();
    }
}

#[derive(serde::Deserialize)]
struct LoggingQuery {
    level: String,
}

async fn logging(
    State(c): State<Arc<Control>>,
    headers: HeaderMap,
    q: Result<Query<LoggingQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Some(refused) = c.refusal(&headers) {
        return refused;
    }
    let Ok(Query(q)) = q else {
        return problem(StatusCode::BAD_REQUEST, "`level` is required, e.g. ?level=debug");
    };
    let Some(set) = &c.log else {
        return problem(StatusCode::NOT_IMPLEMENTED, "the log filter cannot be changed here");
    };
    match set(&q.level) {
        Ok(()) => {
            tracing::info!(filter = %q.level, "log filter changed (admin API)");
            Json(serde_json::json!({ "level": q.level })).into_response()
        }
        Err(e) => problem(StatusCode::BAD_REQUEST, &e),
    }
}

/// OpenMetrics to a scraper that asks for it (Prometheus does), Prometheus' text format 0.0.4
/// to anyone else (curl, promtool).
async fn metrics(State(c): State<Arc<Control>>, headers: HeaderMap) -> Response {
    let mut report = stats_json(&c);
    report["clusters"] = c.running.clusters_json(&c.config())["clusters"].take();
    if let Some(x) = &c.xds {
        report["xds"] =
            serde_json::to_value(&*x.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
                .unwrap_or_default();
    }
    let collector = Snapshot { report, generation: c.running.generation() };
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(collector));
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        return problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.contains("application/openmetrics-text") {
        let kind = "application/openmetrics-text; version=1.0.0; charset=utf-8";
        return ([(header::CONTENT_TYPE, kind)], text).into_response();
    }
    let kind = "text/plain; version=0.0.4; charset=utf-8";
    ([(header::CONTENT_TYPE, kind)], openmetrics_to_text(&text)).into_response()
}

/// Prometheus' text format from the OpenMetrics the client library writes. For what weir
/// exposes they differ in three ways: a counter's family is named with its `_total` suffix,
/// and there is no `# UNIT` line and no `# EOF`.
fn openmetrics_to_text(open: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        open.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(open.len());
    for line in open.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The counters of one scrape, turned into metric families.
#[derive(Debug)]
struct Snapshot {
    report: serde_json::Value,
    generation: u64,
}

/// Labels of one series.
type Labels = Vec<(String, String)>;

/// One metric family of a scrape: name, help, whether a gauge, and its series.
type Family = (String, String, bool, Vec<(Labels, f64)>);

/// A `/stats` key of a port or worker as a metric: its help and whether it is a gauge. Declared
/// counters bring their own; the two worker ratios are the report's.
fn describe(key: &str) -> (String, bool) {
    use dataplane::counters::{help_line, Kind};
    use dataplane::worker::{SharedPortStats, WorkerCounters};
    if let Some(i) =
        WorkerCounters::INFO.iter().chain(SharedPortStats::INFO).find(|i| i.name == key)
    {
        return (help_line(i), i.kind == Kind::Gauge);
    }
    let help = match key {
        "avg_burst" => "Frames per loop iteration that received frames.",
        "cycles_per_packet" => "Busy TSC cycles per frame received.",
        _ => "A weir value; see /stats.",
    };
    (help.to_owned(), true)
}

/// The xDS client's state as metrics.
fn xds_metrics(x: &serde_json::Value, add: &mut impl FnMut(String, String, bool, Labels, f64)) {
    let n = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let connected = if x["connected"].as_bool() == Some(true) { 1.0 } else { 0.0 };
    add(
        "weir_xds_connected".into(),
        "1 while the xDS stream is open.".into(),
        true,
        vec![],
        connected,
    );
    add("weir_xds_streams".into(), "xDS streams opened.".into(), false, vec![], n(&x["streams"]));
    for (t, s) in x["types"].as_object().into_iter().flatten() {
        let l = || vec![("type".to_owned(), t.clone())];
        add(
            "weir_xds_updates_accepted".into(),
            "xDS responses accepted (ACK), by resource type.".into(),
            false,
            l(),
            n(&s["accepted"]),
        );
        add(
            "weir_xds_updates_rejected".into(),
            "xDS responses refused (NACK), by resource type.".into(),
            false,
            l(),
            n(&s["rejected"]),
        );
        add(
            "weir_xds_resources".into(),
            "xDS resources held, by type.".into(),
            true,
            l(),
            s["resources"].as_object().map_or(0.0, |m| m.len() as f64),
        );
    }
    add(
        "weir_xds_waiting".into(),
        "xDS listeners and clusters held back (a cluster, or endpoints, to come).".into(),
        true,
        vec![],
        x["waiting"].as_array().map_or(0.0, |w| w.len() as f64),
    );
    add(
        "weir_xds_last_apply_seconds".into(),
        "From the last accepted xDS response's receipt to its configuration in force.".into(),
        true,
        vec![],
        n(&x["last_apply_us"]) / 1e6,
    );
    add(
        "weir_xds_apply_seconds".into(),
        "From receipt to in force, added over every accepted xDS response.".into(),
        false,
        vec![],
        n(&x["apply_us_total"]) / 1e6,
    );
}

impl prometheus_client::collector::Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut budget = MAX_SERIES;
        let mut dropped = 0u64;
        let mut families: Vec<Family> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut add =
            |name: String, help: String, gauge: bool, labels: Vec<(String, String)>, v: f64| {
                let i = *index.entry(name.clone()).or_insert_with(|| {
                    families.push((name, help, gauge, Vec::new()));
                    families.len() - 1
                });
                if budget == 0 {
                    dropped += 1;
                    return;
                }
                budget -= 1;
                families[i].3.push((labels, v));
            };
        let r = &self.report;
        if let Some(ports) = r["ports"].as_object() {
            for (port, p) in ports {
                for (k, v) in p.as_object().into_iter().flatten() {
                    if let Some(n) = v.as_f64() {
                        add(
                            format!("weir_port_{k}"),
                            describe(k).0,
                            false,
                            vec![("port".into(), port.clone())],
                            n,
                        );
                    }
                }
            }
        }
        for w in r["workers"].as_array().into_iter().flatten() {
            let worker = w["worker"].to_string();
            for (k, v) in w.as_object().into_iter().flatten() {
                if k == "worker" || k == "drops" {
                    continue;
                }
                if let Some(n) = v.as_f64() {
                    let (help, gauge) = describe(k);
                    add(
                        format!("weir_worker_{k}"),
                        help,
                        gauge,
                        vec![("worker".into(), worker.clone())],
                        n,
                    );
                }
            }
        }
        if r["xds"].is_object() {
            xds_metrics(&r["xds"], &mut add);
        }
        for (reason, n) in r["drops"].as_object().into_iter().flatten() {
            if let Some(n) = n.as_f64() {
                add(
                    "weir_drops".into(),
                    "Frames dropped, by reason.".into(),
                    false,
                    vec![("reason".into(), reason.clone())],
                    n,
                );
            }
        }
        for svc in r["services"].as_array().into_iter().flatten() {
            let service = svc["name"].as_str().unwrap_or("?").to_owned();
            for info in dataplane::mesh::engine::ServiceCounters::INFO {
                add(
                    format!("weir_service_{}", info.name),
                    dataplane::counters::help_line(info),
                    false,
                    vec![("service".into(), service.clone())],
                    svc[info.name].as_f64().unwrap_or(0.0),
                );
            }
            add(
                "weir_service_flows_active".into(),
                "The service's flows in the workers' tables.".into(),
                true,
                vec![("service".into(), service)],
                svc["flows_active"].as_f64().unwrap_or(0.0),
            );
        }
        // Per cluster, its endpoints (an endpoint in two clusters is in both, with the same
        // handshake counters: they are the endpoint's).
        let members = r["clusters"].as_array().into_iter().flatten().flat_map(|c| {
            let cluster = c["name"].as_str().unwrap_or("?").to_owned();
            c["endpoints"].as_array().into_iter().flatten().map(move |e| (cluster.clone(), e))
        });
        for (cluster, e) in members {
            let endpoint = format!(
                "{}:{}",
                e["address"].as_str().unwrap_or("?"),
                e["port"].as_u64().unwrap_or(0)
            );
            let l = || {
                vec![
                    ("cluster".to_owned(), cluster.clone()),
                    ("endpoint".to_owned(), endpoint.clone()),
                ]
            };
            let n = |k: &str| e[k].as_f64().unwrap_or(0.0);
            add(
                "weir_endpoint_connects_ok".into(),
                "Handshakes the endpoint answered.".into(),
                false,
                l(),
                n("connects_ok"),
            );
            add(
                "weir_endpoint_connects_failed".into(),
                "Handshakes the endpoint refused or left unanswered.".into(),
                false,
                l(),
                n("connects_failed"),
            );
            add(
                "weir_endpoint_ejections".into(),
                "Times the endpoint was ejected.".into(),
                false,
                l(),
                n("ejections"),
            );
            let ejected = if e["ejected"].as_bool().unwrap_or(false) { 1.0 } else { 0.0 };
            add(
                "weir_endpoint_ejected".into(),
                "1 while the endpoint is ejected.".into(),
                true,
                l(),
                ejected,
            );
            add(
                "weir_endpoint_active_flows".into(),
                "The endpoint's flows in the workers' tables.".into(),
                true,
                l(),
                n("active_flows"),
            );
            add(
                "weir_endpoint_weight".into(),
                "The endpoint's configured weight.".into(),
                true,
                l(),
                n("weight"),
            );
        }
        if let Some(n) = r["admin"]["connections_refused"].as_f64() {
            add(
                "weir_admin_connections_refused".into(),
                "Admin connections closed at once for the cap on connections.".into(),
                false,
                vec![],
                n,
            );
        }
        #[allow(clippy::cast_precision_loss)]
        let generation = self.generation as f64;
        add(
            "weir_mesh_generation".into(),
            "Generation of the mesh configuration in use.".into(),
            true,
            vec![],
            generation,
        );
        for (name, help, gauge, series) in &families {
            if series.is_empty() {
                continue;
            }
            let kind = if *gauge { MetricType::Gauge } else { MetricType::Counter };
            let mut family = enc.encode_descriptor(name, help, None, kind)?;
            for (labels, v) in series {
                let m = family.encode_family(labels)?;
                if *gauge {
                    ConstGauge::new(*v).encode(m)?;
                } else {
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    ConstCounter::new(*v as u64).encode(m)?;
                }
            }
        }
        let m = enc.encode_descriptor(
            "weir_metrics_series_dropped",
            "Series left out of this scrape for the cap on series.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(dropped).encode(m)?;
        Ok(())
    }
}

impl crate::xds::client::Apply for Control {
    fn apply(
        &self,
        services: Vec<crate::config::ServiceConfig>,
        clusters: Vec<crate::config::ClusterConfig>,
    ) -> Result<String> {
        let file = self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let effective = crate::xds::merged(&file, &services, &clusters);
        // The rest is the file's, validated; the mesh is built (and checked) by the reload.
        crate::config::validate_mesh_fields(&effective).map_err(|e| anyhow::anyhow!("{e}"))?;
        let running = self.config();
        let summary = self.running.reload(&running, &effective)?;
        *self.cfg.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(effective);
        *self.xds_part.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            (services, clusters);
        Ok(summary)
    }

    fn apply_clusters(&self, clusters: Vec<crate::config::ClusterConfig>) -> Result<String> {
        use std::sync::PoisonError;
        let first = self.file.lock().unwrap_or_else(PoisonError::into_inner).clusters.len();
        let mut part = self.xds_part.lock().unwrap_or_else(PoisonError::into_inner);
        let running = self.config();
        let mut changed = Vec::with_capacity(clusters.len());
        for c in clusters {
            // xDS's clusters follow the file's in the configuration in effect.
            let Some(i) = part.1.iter().position(|x| x.name == c.name) else {
                bail!("cluster `{}` is not in force", c.name);
            };
            if running.clusters.get(first + i).map(|x| &x.name) != Some(&c.name) {
                bail!("cluster `{}` is not where xDS's clusters are", c.name);
            }
            changed.push((first + i, c));
        }
        crate::config::validate_cluster_updates(&running, &changed)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let summary = self.running.reload_clusters(&running, &changed)?;
        drop(running);
        let mut cfg = self.cfg.lock().unwrap_or_else(PoisonError::into_inner);
        // In place unless a reader holds the configuration just now.
        let effective = Arc::make_mut(&mut cfg);
        for (i, c) in changed {
            part.1[i - first] = c.clone();
            effective.clusters[i] = c;
        }
        Ok(summary)
    }
}
