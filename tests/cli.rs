//! The `weir` command line: `check` accepts a good file and names a bad field by path and line.

use std::process::Command;

fn weir(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_weir")).args(args).output().expect("weir runs")
}

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("weir-cli-{}-{name}.yaml", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p
}

const GOOD: &str = "ports:
  - name: a
    backend: tap
    addresses: [198.18.1.1/24]
  - name: b
    backend: tap
    addresses: [198.18.2.1/24, 2001:db8:2::1/64]
routes:
  - { prefix: 198.19.0.0/16, port: b, via: 198.18.2.2 }
";

#[test]
fn check_accepts_a_good_file() {
    let p = write("good", GOOD);
    let out = weir(&["check", "-c", p.to_str().unwrap()]);
    let _ = std::fs::remove_file(&p);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ok (2 ports, 1 routes, 1 workers, 0 services); memory "), "{text}");
    assert!(text.contains("mempool.buffers 34 MiB"), "{text}");
}

/// Each line: a change to the good file, and what `check` must say of it.
const ABUSE: &[(&str, &str, &str)] = &[
    (
        "addresses: [198.18.1.1/24]",
        "addresses: [198.18.2.1/24]",
        "ports[1].addresses[0]: 198.18.2.1 is already",
    ),
    (
        "    backend: tap\n    addresses: [198.18.2.1",
        "    backend: tap\n    interface: a\n    addresses: [198.18.2.1",
        "ports[1].interface: interface `a`",
    ),
    ("via: 198.18.2.2", "via: 198.18.9.9", "routes[0].via: 198.18.9.9 is not a host"),
    (
        "ports:",
        "neighbor: { capacity_entries: 1099511627776 }\nports:",
        "neighbor.capacity_entries: 1099511627776 is out of range",
    ),
    (
        "ports:",
        "mempool: { buffers: 4294967295 }\nports:",
        "mempool.buffers: 4294967295 is out of range",
    ),
    (
        "ports:",
        "idle: { sleep_ms: 4294967295 }\nports:",
        "idle.sleep_ms: 4294967295 is out of range",
    ),
    (
        "ports:",
        "mempool: { buffers: 16777216, buffer_bytes: 65535 }\nports:",
        "mempool.buffers: the configuration needs",
    ),
];

#[test]
fn check_refuses_absurd_configurations_naming_the_field() {
    for (i, (from, to, says)) in ABUSE.iter().enumerate() {
        assert!(GOOD.contains(from), "{from}");
        let p = write(&format!("abuse{i}"), &GOOD.replacen(from, to, 1));
        let out = weir(&["check", "-c", p.to_str().unwrap()]);
        let _ = std::fs::remove_file(&p);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{to}: {err}");
        assert!(err.contains(says), "{to}: {err}");
    }
}

#[test]
fn check_refuses_a_malicious_yaml_file_quickly() {
    let mut bomb = format!("eal:\n  file_prefix: &a \"{}\"\n  args:\n", "x".repeat(1 << 20));
    for _ in 0..20_000 {
        bomb.push_str("    - *a\n");
    }
    bomb.push_str(GOOD);
    let deep = format!("{GOOD}eal:\n  args: {}", "[".repeat(100_000));
    for (name, text) in [("bomb", bomb), ("deep", deep)] {
        let p = write(name, &text);
        let t0 = std::time::Instant::now();
        let out = weir(&["check", "-c", p.to_str().unwrap()]);
        let _ = std::fs::remove_file(&p);
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert!(t0.elapsed() < std::time::Duration::from_secs(10), "{name}: {:?}", t0.elapsed());
    }
}

#[test]
fn check_names_the_bad_field_by_path_and_line() {
    let p = write(
        "bad",
        &GOOD.replace(
            "    backend: tap\n    addresses: [198.18.2.1",
            "    backend: tap\n    mtu: 1400\n    addresses: [198.18.2.1",
        ),
    );
    let out = weir(&["check", "-c", p.to_str().unwrap()]);
    let _ = std::fs::remove_file(&p);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("ports[1]"), "{err}");
    assert!(err.contains("unknown field `mtu`"), "{err}");
    assert!(err.contains("line 7"), "{err}");
}

#[test]
fn help_lists_the_commands() {
    let out = weir(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["run", "check", "demo"] {
        assert!(text.contains(cmd), "{text}");
    }
}

/// The manual page and the completions come from the command line's definition: every
/// subcommand is in them.
#[test]
fn the_manual_and_completions_cover_every_subcommand() {
    let run = |args: &[&str]| {
        let out = weir(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let man = run(&["man"]);
    assert!(man.starts_with(".ie") || man.contains(".TH weir"), "{man}");
    let bash = run(&["completions", "bash"]);
    assert!(bash.contains("_weir()"), "{bash}");
    for sub in ["run", "check", "ctl", "demo", "man", "completions"] {
        assert!(man.contains(sub), "`{sub}` missing from the manual");
        assert!(bash.contains(sub), "`{sub}` missing from the bash completions");
    }
    assert!(run(&["completions", "zsh"]).contains("#compdef weir"));
}
