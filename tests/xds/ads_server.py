#!/usr/bin/env python3
"""A second ADS management server, on grpcio and the xds-protos package (Envoy's protos as the
gRPC project publishes them), to check that weir's client agrees with another implementation
of the protocol.

    ads_server.py SOCKET sotw|delta VIP BACKEND...

Serves on unix:SOCKET and, once weir connects, pushes a cluster `web` (EDS), a listener on
VIP:80 to it and its endpoints (each BACKEND:80, weight 1), checking that each is ACKed; then
prints READY. Then reads commands on stdin, one per line, and answers each on stdout:
  weights W...   push the endpoints with these weights; answers OK or NACK <reason>
  ring_hash      push the cluster with lb_policy RING_HASH; answers NACK <reason> or ACK
  quit           ends
Anything unexpected ends it with a message on stderr and exit status 1.
"""

import queue
import sys
import threading
from concurrent import futures

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, wrappers_pb2

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ENDPOINTS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
TIMEOUT = 15


def fail(message):
    print(f"ads_server.py: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def packed(message):
    a = any_pb2.Any()
    a.Pack(message)
    return a


def socket_address(ip, port):
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=ip, port_value=port))


def cluster(policy):
    return cluster_pb2.Cluster(
        name="web",
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=config_source_pb2.ConfigSource(
                ads=config_source_pb2.AggregatedConfigSource())),
        lb_policy=policy)


def listener(vip):
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix="web", cluster="web")
    return listener_pb2.Listener(
        name="web",
        address=socket_address(vip, 80),
        filter_chains=[listener_components_pb2.FilterChain(filters=[
            listener_components_pb2.Filter(
                name="envoy.filters.network.tcp_proxy", typed_config=packed(proxy))
        ])])


def endpoints(backends, weights):
    lb = [
        endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(address=socket_address(b, 80)),
            load_balancing_weight=wrappers_pb2.UInt32Value(value=w))
        for b, w in zip(backends, weights)
    ]
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name="web",
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lb)])


class Stream:
    """One client stream: what it sent, and a way to answer it."""

    def __init__(self):
        self.received = queue.Queue()
        self.outbound = queue.Queue()
        # Requests received but not yet expected (an EDS request can come before the ACK
        # the script waits for).
        self.backlog = []

    def expect(self, what, match):
        for i, r in enumerate(self.backlog):
            if match(r):
                return self.backlog.pop(i)
        try:
            while True:
                r = self.received.get(timeout=TIMEOUT)
                if match(r):
                    return r
                self.backlog.append(r)
        except queue.Empty:
            fail(f"no {what} within {TIMEOUT} s")


class Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):

    def __init__(self):
        self.streams = queue.Queue()

    def _serve(self, request_iterator):
        s = Stream()

        def read():
            try:
                for r in request_iterator:
                    s.received.put(r)
            except grpc.RpcError:
                pass

        threading.Thread(target=read, daemon=True).start()
        self.streams.put(s)
        while True:
            r = s.outbound.get()
            if r is None:
                return
            yield r

    def StreamAggregatedResources(self, request_iterator, context):
        return self._serve(request_iterator)

    def DeltaAggregatedResources(self, request_iterator, context):
        return self._serve(request_iterator)


class Script:
    """Pushes in the protocol of the stream and checks the replies."""

    def __init__(self, stream, delta):
        self.s = stream
        self.delta = delta
        self.n = 0

    def push(self, type_url, name, message):
        self.n += 1
        nonce, version = f"py{self.n}", str(self.n)
        if self.delta:
            self.s.outbound.put(discovery_pb2.DeltaDiscoveryResponse(
                system_version_info=version, type_url=type_url, nonce=nonce,
                resources=[discovery_pb2.Resource(
                    name=name, version=version, resource=packed(message))]))
        else:
            self.s.outbound.put(discovery_pb2.DiscoveryResponse(
                version_info=version, type_url=type_url, nonce=nonce,
                resources=[packed(message)]))
        reply = self.s.expect(f"reply to {nonce}", lambda r: r.response_nonce == nonce)
        if reply.HasField("error_detail"):
            return reply.error_detail.message
        return None


def main():
    if len(sys.argv) < 5 or sys.argv[2] not in ("sotw", "delta"):
        fail("usage: ads_server.py SOCKET sotw|delta VIP BACKEND...")
    socket, protocol, vip, backends = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    delta = protocol == "delta"
    ads = Ads()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, server)
    server.add_insecure_port(f"unix:{socket}")
    server.start()
    try:
        stream = ads.streams.get(timeout=TIMEOUT)
    except queue.Empty:
        fail("weir did not connect")
    first = stream.expect("CDS request", lambda r: r.type_url == CLUSTER)
    if first.node.id != "weir-test":
        fail(f"the first request's node is {first.node!r}")
    stream.expect("LDS request", lambda r: r.type_url == LISTENER)
    script = Script(stream, delta)
    for type_url, message in ((CLUSTER, cluster(cluster_pb2.Cluster.ROUND_ROBIN)),
                              (LISTENER, listener(vip))):
        error = script.push(type_url, "web", message)
        if error is not None:
            fail(f"{type_url} NACKed: {error}")
    names = (lambda r: list(r.resource_names_subscribe)) if delta else (
        lambda r: list(r.resource_names))
    stream.expect("EDS request for web", lambda r: r.type_url == ENDPOINTS and names(r) == ["web"])
    error = script.push(ENDPOINTS, "web", endpoints(backends, [1] * len(backends)))
    if error is not None:
        fail(f"endpoints NACKed: {error}")
    print("READY", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "weights":
            error = script.push(ENDPOINTS, "web", endpoints(backends, [int(w) for w in words[1:]]))
            print("OK" if error is None else f"NACK {error}", flush=True)
        elif words[0] == "ring_hash":
            error = script.push(CLUSTER, "web", cluster(cluster_pb2.Cluster.RING_HASH))
            print("ACK" if error is None else f"NACK {error}", flush=True)
        elif words[0] == "quit":
            break
        else:
            fail(f"unknown command {line!r}")
    stream.outbound.put(None)
    server.stop(grace=1)


if __name__ == "__main__":
    main()
