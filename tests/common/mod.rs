//! Shared pieces of the integration tests: root and tool checks, the weir binary, counters.
#![allow(dead_code)]

use std::path::PathBuf;
use weir::netns::have;

/// True when the test can run; otherwise prints why, loudly, and the test returns. In CI
/// (`CI` set), where everything it needs must be there, it fails instead.
pub fn ready(tools: &[&str]) -> bool {
    let skip = |why: String| {
        if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
            panic!("{why}: in CI this is a failure, not a skip");
        }
        eprintln!("SKIPPED: {why}");
        false
    };
    if std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout != b"0\n")
        .unwrap_or(true)
    {
        return skip(
            "needs root (it builds network namespaces); run scripts/test.sh as root".into(),
        );
    }
    for t in tools {
        if !have(t) {
            return skip(format!("needs `{t}` (scripts/deps.sh installs it)"));
        }
    }
    true
}

/// The weir binary under test.
pub fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weir"))
}

/// A counter from weir's final JSON.
pub fn drop_count(stats: &serde_json::Value, reason: &str) -> u64 {
    stats["drops"][reason].as_u64().unwrap_or(0)
}

/// The sum of a per-worker counter.
pub fn worker_sum(stats: &serde_json::Value, key: &str) -> u64 {
    stats["workers"]
        .as_array()
        .map(|ws| ws.iter().map(|w| w[key].as_u64().unwrap_or(0)).sum())
        .unwrap_or(0)
}

/// Debian's python3, which has scapy (python3-scapy), whatever python3 is first on the PATH.
pub const PY: &str = "/usr/bin/python3";

/// [`ready`], and scapy importable by [`PY`]; otherwise says why, loudly.
pub fn ready_with_scapy(tools: &[&str]) -> bool {
    if !ready(tools) {
        return false;
    }
    let scapy = std::process::Command::new(PY)
        .args(["-c", "import scapy.all"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !scapy {
        eprintln!("SKIPPED: needs scapy for {PY} (apt-get install python3-scapy)");
    }
    scapy
}
