//! Shared pieces of the integration tests: root and tool checks, the weir binary, counters.
#![allow(dead_code)]

use std::path::PathBuf;
use weir::netns::have;

/// True when the test can run; otherwise prints why, loudly, and the test returns.
pub fn ready(tools: &[&str]) -> bool {
    if std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout != b"0\n")
        .unwrap_or(true)
    {
        eprintln!(
            "SKIPPED: needs root (it builds network namespaces); run scripts/test.sh as root"
        );
        return false;
    }
    for t in tools {
        if !have(t) {
            eprintln!("SKIPPED: needs `{t}` (scripts/deps.sh installs it)");
            return false;
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
