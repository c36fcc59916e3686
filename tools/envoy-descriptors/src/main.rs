//! `envoy-descriptors PROTO_DIR OUT`: compiles Envoy's v3 API (the .proto files the
//! envoy-types crate ships under PROTO_DIR) into one FileDescriptorSet, without source info.

use prost::Message;
use std::path::{Path, PathBuf};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, proto, out] = args.as_slice() else {
        eprintln!("usage: envoy-descriptors PROTO_DIR OUT");
        std::process::exit(2);
    };
    let proto = Path::new(proto);
    let own = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    let mut includes: Vec<PathBuf> = [
        "data-plane-api",
        "xds",
        "protoc-gen-validate",
        "googleapis",
        "cel-spec/proto",
        "opentelemetry-proto",
        "client_model",
        "ratelimit",
    ]
    .iter()
    .map(|d| proto.join(d))
    .collect();
    // TypedStruct (udpa and xds), which Istio wraps filter configs in, is not shipped.
    includes.push(own);
    let mut files = vec![
        "udpa/type/v1/typed_struct.proto".to_owned(),
        "xds/type/v3/typed_struct.proto".to_owned(),
        "xds/type/matcher/v3/ip.proto".to_owned(),
    ];
    // Envoy's API, and the xds types (matchers) its resources embed.
    for dir in ["data-plane-api", "xds"] {
        let root = proto.join(dir);
        let mut found = Vec::new();
        walk(&root, &mut found);
        found.sort();
        // envoy/extensions/config declares the package `envoy.extensions.config`, which
        // shadows `config.core.v3` for every extension that names it relative to its own.
        files.extend(
            found
                .iter()
                .filter_map(|p| p.strip_prefix(&root).ok())
                .map(|p| p.to_string_lossy().into_owned())
                .filter(|p| !p.starts_with("envoy/extensions/config/")),
        );
    }
    let mut compiler = protox::Compiler::new(&includes).unwrap_or_else(|e| fail(&e));
    compiler.include_imports(true);
    let mut skipped = Vec::new();
    for f in &files {
        if let Err(e) = compiler.open_file(f) {
            skipped.push(format!("{f}: {e}"));
        }
    }
    let set = compiler.file_descriptor_set();
    std::fs::write(out, set.encode_to_vec()).unwrap_or_else(|e| fail(&e));
    eprintln!("{} files in {out}; {} not compiled:", set.file.len(), skipped.len());
    for s in skipped {
        eprintln!("  {s}");
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "proto") {
            out.push(p);
        }
    }
}

fn fail(e: &dyn std::fmt::Display) -> ! {
    eprintln!("envoy-descriptors: {e}");
    std::process::exit(1);
}
