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
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (2 ports, 1 routes, 1 workers)"));
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
