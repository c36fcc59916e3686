//! Finds the system's DPDK with pkg-config, compiles the C shim against it and generates the
//! bindings. Shared-library builds of DPDK load their drivers (PMDs) at run time from
//! `RTE_EAL_PMD_PATH`, which the shim reports; nothing here links a PMD.

use std::path::PathBuf;
use std::process::Command;

const MIN_VERSION: &str = "22.11";

fn fail(msg: &str) -> ! {
    eprintln!("\nerror: {msg}\n");
    std::process::exit(1);
}

fn main() {
    println!("cargo:rerun-if-changed=csrc");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let lib = match pkg_config::Config::new().atleast_version(MIN_VERSION).probe("libdpdk") {
        Ok(lib) => lib,
        Err(e) => fail(&format!(
            "dpdk-sys needs DPDK >= {MIN_VERSION} found by pkg-config as `libdpdk`: install \
             Debian's libdpdk-dev and pkg-config (apt-get install libdpdk-dev pkg-config), or \
             point PKG_CONFIG_PATH at a DPDK install. pkg-config said: {e}"
        )),
    };

    // The full compiler flags (pkg-config's `-include rte_config.h -march=...` among them): the
    // headers need the instruction set DPDK itself was built for.
    let pkg_config = std::env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into());
    let out = Command::new(&pkg_config)
        .args(["--cflags", "libdpdk"])
        .output()
        .unwrap_or_else(|e| fail(&format!("running {pkg_config} --cflags libdpdk: {e}")));
    let cflags: Vec<String> =
        String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned).collect();

    let mut build = cc::Build::new();
    build.file("csrc/shim.c").include("csrc").warnings(false).opt_level(3);
    for f in &cflags {
        build.flag(f);
    }
    build.compile("weir_dpdk_shim");

    let mut bindgen = bindgen::Builder::default()
        .header("csrc/wrapper.h")
        .clang_args(&cflags)
        .clang_arg("-Icsrc")
        .allowlist_function("rte_eal_.*")
        .allowlist_function("rte_eth_.*")
        .allowlist_function("rte_pktmbuf_.*")
        .allowlist_function("rte_mempool_.*")
        .allowlist_function("rte_lcore_.*")
        .allowlist_function("rte_dev_probe")
        .allowlist_function("rte_dev_remove")
        .allowlist_function("rte_thread_register")
        .allowlist_function("rte_thread_unregister")
        .allowlist_function("rte_socket_id")
        .allowlist_function("rte_strerror")
        .allowlist_function("rte_version")
        .allowlist_function("rte_get_tsc_hz")
        .allowlist_function("weir_.*")
        .allowlist_type("rte_mbuf")
        .allowlist_type("weir_.*")
        .allowlist_var("RTE_ETH_.*")
        .allowlist_var("RTE_MBUF_.*")
        .allowlist_var("RTE_MAX_.*")
        .allowlist_var("RTE_ETHER_.*")
        .allowlist_var("RTE_MEMPOOL_.*")
        .allowlist_var("RTE_PKTMBUF_.*")
        .allowlist_var("SOCKET_ID_ANY")
        .allowlist_var("LCORE_ID_ANY")
        .allowlist_var("RTE_VER_.*")
        // Keep the ethdev internals (fast-path ops tables, PMD structs) out: weir calls ethdev
        // through its API and the shim only.
        .blocklist_type("rte_eth_dev")
        .blocklist_type("rte_eth_fp_ops")
        .opaque_type("rte_mempool")
        .opaque_type("rte_ring")
        .derive_default(true)
        .derive_debug(false)
        .layout_tests(true)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for p in &lib.include_paths {
        bindgen = bindgen.clang_arg(format!("-I{}", p.display()));
    }
    // bindgen loads libclang at run time and panics when it is missing: say what to install.
    let generated =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || bindgen.generate()));
    let bindings = match generated {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => fail(&format!("bindgen could not read the DPDK headers: {e}")),
        Err(_) => fail(
            "dpdk-sys needs libclang to generate its bindings: install Debian's libclang-dev \
             (apt-get install libclang-dev)",
        ),
    };
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .unwrap_or_else(|e| fail(&format!("writing the DPDK bindings: {e}")));
}
