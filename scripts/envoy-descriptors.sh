#!/usr/bin/env bash
# Remakes src/xds/envoy-v3.desc from the .proto files of the envoy-types version in Cargo.lock.
# Run it after updating envoy-types.
set -euo pipefail
cd "$(dirname "$0")/.."
manifest=$(cargo metadata --format-version 1 --locked |
    python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "envoy-types"))')
cargo run --release --manifest-path tools/envoy-descriptors/Cargo.toml -- \
    "$(dirname "$manifest")/proto" src/xds/envoy-v3.desc
