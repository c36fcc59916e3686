//! A scripted ADS management server for tests and benchmarks: it serves both protocols on a
//! Unix socket, records every request a client sends, and pushes what the test tells it to,
//! when it tells it to. It keeps no state of its own beyond that: the test is the control
//! plane.

use envoy_types::pb::envoy::service::discovery::v3::{
    aggregated_discovery_service_server::{
        AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
    },
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// A request the server received.
#[derive(Clone, Debug, PartialEq)]
pub enum Received {
    /// State of the world.
    Sotw(DiscoveryRequest),
    /// Delta.
    Delta(DeltaDiscoveryRequest),
}

impl Received {
    /// The type URL asked about.
    pub fn type_url(&self) -> &str {
        match self {
            Received::Sotw(r) => &r.type_url,
            Received::Delta(r) => &r.type_url,
        }
    }

    /// The nonce it answers (empty for a first request).
    pub fn response_nonce(&self) -> &str {
        match self {
            Received::Sotw(r) => &r.response_nonce,
            Received::Delta(r) => &r.response_nonce,
        }
    }

    /// The NACK's message, if it is one.
    pub fn error(&self) -> Option<&str> {
        match self {
            Received::Sotw(r) => r.error_detail.as_ref().map(|e| e.message.as_str()),
            Received::Delta(r) => r.error_detail.as_ref().map(|e| e.message.as_str()),
        }
    }
}

#[derive(Default)]
struct Inner {
    received: Mutex<Vec<Received>>,
    arrived: Condvar,
    sotw: Mutex<Option<UnboundedSender<Result<DiscoveryResponse, Status>>>>,
    delta: Mutex<Option<UnboundedSender<Result<DeltaDiscoveryResponse, Status>>>>,
    streams: AtomicU64,
    nonce: AtomicU64,
}

#[derive(Clone)]
struct Service(Arc<Inner>);

type Boxed<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Service {
    type StreamAggregatedResourcesStream = Boxed<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Boxed<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Ok(Response::new(self.open(&self.0.sotw, request.into_inner(), Received::Sotw)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Ok(Response::new(self.open(&self.0.delta, request.into_inner(), Received::Delta)))
    }
}

impl Service {
    /// A new stream of either protocol: its sender becomes the one pushes go to, and what the
    /// client sends on it is recorded as `received`.
    fn open<Q, R>(
        &self,
        sender: &Mutex<Option<UnboundedSender<Result<R, Status>>>>,
        mut inbound: Streaming<Q>,
        received: fn(Q) -> Received,
    ) -> Boxed<R>
    where
        Q: Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *lock(sender) = Some(tx);
        self.0.streams.fetch_add(1, Ordering::SeqCst);
        let inner = Arc::clone(&self.0);
        tokio::spawn(async move {
            while let Ok(Some(r)) = inbound.message().await {
                lock(&inner.received).push(received(r));
                inner.arrived.notify_all();
            }
        });
        Box::pin(UnboundedReceiverStream::new(rx))
    }
}

/// The server, on its own thread and runtime; stopped when dropped.
pub struct TestServer {
    inner: Arc<Inner>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Serves on a Unix socket at `path` (removed first if it exists).
    pub fn start_unix(path: &Path) -> std::io::Result<TestServer> {
        let _ = std::fs::remove_file(path);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let listener = {
            let _guard = rt.enter();
            tokio::net::UnixListener::bind(path)?
        };
        let inner = Arc::new(Inner::default());
        let service = Service(Arc::clone(&inner));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
                let _ = tonic::transport::Server::builder()
                    .add_service(
                        AggregatedDiscoveryServiceServer::new(service)
                            .max_decoding_message_size(usize::MAX),
                    )
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Ok(TestServer { inner, stop: Some(stop), thread: Some(thread) })
    }

    fn next_nonce(&self) -> String {
        format!("n{}", self.inner.nonce.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Sends a state-of-the-world response on the open stream; its nonce.
    pub fn push_sotw(&self, type_url: &str, version: &str, resources: Vec<Any>) -> String {
        let nonce = self.next_nonce();
        let r = DiscoveryResponse {
            version_info: version.to_owned(),
            resources,
            type_url: type_url.to_owned(),
            nonce: nonce.clone(),
            ..DiscoveryResponse::default()
        };
        if let Some(tx) = &*lock(&self.inner.sotw) {
            let _ = tx.send(Ok(r));
        }
        nonce
    }

    /// Sends a delta response on the open stream: resources as (name, version, resource),
    /// and names removed; its nonce.
    pub fn push_delta(
        &self,
        type_url: &str,
        version: &str,
        resources: Vec<(String, String, Any)>,
        removed: Vec<String>,
    ) -> String {
        let nonce = self.next_nonce();
        let r = DeltaDiscoveryResponse {
            system_version_info: version.to_owned(),
            resources: resources
                .into_iter()
                .map(|(name, version, any)| Resource {
                    name,
                    version,
                    resource: Some(any),
                    ..Resource::default()
                })
                .collect(),
            type_url: type_url.to_owned(),
            removed_resources: removed,
            nonce: nonce.clone(),
            ..DeltaDiscoveryResponse::default()
        };
        if let Some(tx) = &*lock(&self.inner.delta) {
            let _ = tx.send(Ok(r));
        }
        nonce
    }

    /// Ends the open stream (as a server going away does).
    pub fn disconnect(&self) {
        lock(&self.inner.sotw).take();
        lock(&self.inner.delta).take();
    }

    /// Streams opened so far.
    pub fn streams(&self) -> u64 {
        self.inner.streams.load(Ordering::SeqCst)
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.inner.received).clone()
    }

    /// Waits up to `timeout` for a request (among all received, oldest first) that
    /// satisfies `pred`.
    pub fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&Received) -> bool,
    ) -> Option<Received> {
        let until = Instant::now() + timeout;
        let mut got = lock(&self.inner.received);
        loop {
            if let Some(r) = got.iter().find(|r| pred(r)) {
                return Some(r.clone());
            }
            let left = until.checked_duration_since(Instant::now())?;
            got = self
                .inner
                .arrived
                .wait_timeout(got, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// The ACK or NACK of the response with `nonce`, waited for up to 10 s.
    pub fn reply_to(&self, nonce: &str) -> Option<Received> {
        self.wait_for(Duration::from_secs(10), |r| r.response_nonce() == nonce)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.disconnect();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Envoy resources as a control plane would send them, for tests and benchmarks.
pub mod build {
    use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
    use envoy_types::pb::envoy::config::core::v3::{
        address, config_source, socket_address, Address, AggregatedConfigSource, ConfigSource,
        SocketAddress,
    };
    use envoy_types::pb::envoy::config::endpoint::v3::{
        lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
    };
    use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
        tcp_proxy::{weighted_cluster::ClusterWeight, ClusterSpecifier, WeightedCluster},
        TcpProxy,
    };
    use envoy_types::pb::google::protobuf::{Any, UInt32Value};
    use prost::{Message, Name};
    use std::net::IpAddr;

    /// `msg` packed in an `Any`.
    pub fn any<M: Message + Name>(msg: &M) -> Any {
        Any { type_url: M::type_url(), value: msg.encode_to_vec() }
    }

    fn socket(ip: IpAddr, port: u16) -> Address {
        Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                protocol: socket_address::Protocol::Tcp as i32,
                address: ip.to_string(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
                ..SocketAddress::default()
            })),
        }
    }

    /// A TCP listener on `vip:port` with tcp_proxy to `cluster`.
    pub fn listener(name: &str, vip: IpAddr, port: u16, cluster: &str) -> Listener {
        tcp_listener(name, vip, port, ClusterSpecifier::Cluster(cluster.to_owned()))
    }

    /// A TCP listener on `vip:port` with tcp_proxy splitting by weight.
    pub fn weighted_listener(
        name: &str,
        vip: IpAddr,
        port: u16,
        split: &[(&str, u32)],
    ) -> Listener {
        let clusters = split
            .iter()
            .map(|(c, w)| ClusterWeight {
                name: (*c).to_owned(),
                weight: *w,
                ..ClusterWeight::default()
            })
            .collect();
        tcp_listener(
            name,
            vip,
            port,
            ClusterSpecifier::WeightedClusters(WeightedCluster { clusters }),
        )
    }

    fn tcp_listener(name: &str, vip: IpAddr, port: u16, spec: ClusterSpecifier) -> Listener {
        let proxy = TcpProxy {
            stat_prefix: name.to_owned(),
            cluster_specifier: Some(spec),
            ..TcpProxy::default()
        };
        Listener {
            name: name.to_owned(),
            address: Some(socket(vip, port)),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "envoy.filters.network.tcp_proxy".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(any(&proxy))),
                }],
                ..FilterChain::default()
            }],
            ..Listener::default()
        }
    }

    /// A UDP listener on `vip:port` with udp_proxy to `cluster`, forwarding by weir's `mode`
    /// (`nat`, `dnat`, `dsr`: the listener's `weir` metadata).
    pub fn udp_listener(name: &str, vip: IpAddr, port: u16, cluster: &str, mode: &str) -> Listener {
        use envoy_types::pb::envoy::config::core::v3::Metadata;
        use envoy_types::pb::envoy::config::listener::v3::{listener_filter, ListenerFilter};
        use envoy_types::pb::envoy::extensions::filters::udp::udp_proxy::v3::{
            udp_proxy_config::RouteSpecifier, UdpProxyConfig,
        };
        use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
        #[allow(deprecated)]
        let proxy = UdpProxyConfig {
            stat_prefix: name.to_owned(),
            route_specifier: Some(RouteSpecifier::Cluster(cluster.to_owned())),
            ..UdpProxyConfig::default()
        };
        let mut address = socket(vip, port);
        if let Some(address::Address::SocketAddress(a)) = &mut address.address {
            a.protocol = socket_address::Protocol::Udp as i32;
        }
        let weir = Struct {
            fields: [("mode".to_owned(), Value { kind: Some(Kind::StringValue(mode.to_owned())) })]
                .into(),
        };
        Listener {
            name: name.to_owned(),
            address: Some(address),
            listener_filters: vec![ListenerFilter {
                name: "envoy.filters.udp_listener.udp_proxy".into(),
                config_type: Some(listener_filter::ConfigType::TypedConfig(any(&proxy))),
                ..ListenerFilter::default()
            }],
            metadata: Some(Metadata {
                filter_metadata: [("weir".to_owned(), weir)].into(),
                ..Metadata::default()
            }),
            ..Listener::default()
        }
    }

    /// An EDS cluster (endpoints over ADS) picking by `policy`.
    pub fn eds_cluster(name: &str, policy: cluster::LbPolicy) -> Cluster {
        Cluster {
            name: name.to_owned(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32,
            )),
            eds_cluster_config: Some(cluster::EdsClusterConfig {
                eds_config: Some(ConfigSource {
                    config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                        AggregatedConfigSource {},
                    )),
                    ..ConfigSource::default()
                }),
                service_name: String::new(),
            }),
            lb_policy: policy as i32,
            ..Cluster::default()
        }
    }

    /// Endpoints of `cluster`: (address, port, weight), all at priority 0 in one locality.
    pub fn load_assignment(
        cluster: &str,
        endpoints: &[(IpAddr, u16, u32)],
    ) -> ClusterLoadAssignment {
        ClusterLoadAssignment {
            cluster_name: cluster.to_owned(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: endpoints
                    .iter()
                    .map(|&(ip, port, weight)| LbEndpoint {
                        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                            address: Some(socket(ip, port)),
                            ..Endpoint::default()
                        })),
                        load_balancing_weight: Some(UInt32Value { value: weight }),
                        ..LbEndpoint::default()
                    })
                    .collect(),
                ..LocalityLbEndpoints::default()
            }],
            ..ClusterLoadAssignment::default()
        }
    }
}
