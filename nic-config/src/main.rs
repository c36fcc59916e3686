//! `nic-config`: host setup for weir (bind NICs, reserve hugepages, check the IOMMU).
#![forbid(unsafe_code)]

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use nic_config::bind::{self, Driver};
use nic_config::hugepages::{self, PageSize};
use nic_config::plan::{self, Note, Plan, SystemRunner};
use nic_config::sysfs::DEFAULT_STATE_FILE;
use nic_config::{apply_file, check, pci, status, Host};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit status of `check` when the host is not ready (1 is any error).
const EXIT_NOT_READY: u8 = 2;

/// Prepares a host for DPDK: binds NICs to vfio-pci or uio, reserves hugepages, checks the
/// IOMMU. Every change is planned first; --dry-run prints the plan instead of applying it.
#[derive(Debug, Parser)]
#[command(name = "nic-config", version)]
struct Cli {
    /// Root of sysfs.
    #[arg(long, global = true, value_name = "DIR", default_value = "/sys")]
    sysfs_root: PathBuf,
    /// Root of procfs.
    #[arg(long, global = true, value_name = "DIR", default_value = "/proc")]
    procfs_root: PathBuf,
    /// Root of /dev (hugetlbfs is mounted below it).
    #[arg(long, global = true, value_name = "DIR", default_value = "/dev")]
    dev_root: PathBuf,
    /// Where nic-config records the drivers devices had before it rebound them.
    #[arg(long, global = true, value_name = "FILE", default_value = DEFAULT_STATE_FILE)]
    state_file: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct DryRun {
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// PCI network devices: drivers, interfaces, IOMMU group, NUMA node, kernel use.
    Status {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Bind devices to a DPDK driver.
    Bind {
        /// PCI addresses (0000:00:04.0 or 00:04.0) or interface names.
        #[arg(required = true, value_name = "DEV")]
        devices: Vec<String>,
        /// The driver.
        #[arg(long, value_enum)]
        driver: Driver,
        /// Rebind even an interface the kernel uses (addresses, routes).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        apply: DryRun,
    },
    /// Unbind devices from their driver and clear driver_override.
    Unbind {
        /// PCI addresses or interface names.
        #[arg(required = true, value_name = "DEV")]
        devices: Vec<String>,
        /// Unbind even an interface the kernel uses.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        apply: DryRun,
    },
    /// Give devices back the driver they had before nic-config rebound them.
    Restore {
        /// PCI addresses or interface names; every recorded device when omitted.
        #[arg(value_name = "DEV")]
        devices: Vec<String>,
        #[command(flatten)]
        apply: DryRun,
    },
    /// Reserve hugepages and mount hugetlbfs for them.
    Hugepages {
        /// Page size.
        #[arg(long, value_enum)]
        size: PageSize,
        /// Pages to reserve (the total; 0 frees them).
        #[arg(long)]
        count: u64,
        /// NUMA node (default: the whole host).
        #[arg(long)]
        node: Option<u32>,
        #[command(flatten)]
        apply: DryRun,
    },
    /// Is the host ready for DPDK? Exit status 2 when not.
    Check {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Apply a YAML setup file (hugepages and devices).
    Apply {
        /// The file.
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: PathBuf,
        /// Rebind even interfaces the kernel uses (as `force: true` in the file).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        apply: DryRun,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes to stdout. Errors are ignored: a closed pipe (`nic-config status | head`) must
/// neither panic, as `println!` does, nor stop a plan halfway through applying.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// As [`say!`], without the newline.
macro_rules! say_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

fn print_notes(plan: &Plan) {
    for note in &plan.notes {
        match note {
            Note::Info(_) => say!("{note}"),
            Note::Warning(_) => eprintln!("{note}"),
        }
    }
}

/// Prints the plan (dry run) or applies it, naming each step.
fn execute(plan: &Plan, dry_run: bool) -> anyhow::Result<()> {
    print_notes(plan);
    if dry_run {
        say!("plan (dry run, nothing changed):");
        say_raw!("{}", plan.render());
        return Ok(());
    }
    if plan.steps.is_empty() {
        say!("nothing to do");
        return Ok(());
    }
    plan::apply(plan, &mut SystemRunner, |n, total, step| say!("[{n}/{total}] {step}"))?;
    say!("applied {} steps", plan.steps.len());
    Ok(())
}

/// Resolves devices before a plan changes them: interface names vanish once unbound.
fn resolve(
    host: &Host,
    requests: &[(String, Driver)],
) -> anyhow::Result<Vec<(pci::PciAddr, Driver)>> {
    requests.iter().map(|(arg, driver)| Ok((pci::resolve(host, arg)?.address, *driver))).collect()
}

fn bind_and_verify(
    host: &Host,
    requests: &[(String, Driver)],
    plan: &Plan,
    dry_run: bool,
) -> anyhow::Result<()> {
    let targets = resolve(host, requests)?;
    execute(plan, dry_run)?;
    if dry_run || plan.steps.is_empty() {
        return Ok(());
    }
    let problems = bind::verify(host, &targets)?;
    if !problems.is_empty() {
        anyhow::bail!("applied, but {}", problems.join("; "));
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let host = Host {
        sysfs: cli.sysfs_root,
        procfs: cli.procfs_root,
        dev: cli.dev_root,
        state_file: cli.state_file,
    };
    match cli.command {
        Command::Status { json } => {
            let devices = status::collect(&host)?;
            if json {
                say!("{}", serde_json::to_string_pretty(&devices)?);
            } else {
                say_raw!("{}", status::render_table(&devices));
            }
        }
        Command::Bind { devices, driver, force, apply } => {
            let requests: Vec<(String, Driver)> =
                devices.into_iter().map(|d| (d, driver)).collect();
            let plan = bind::plan_bind(&host, &requests, force)?;
            bind_and_verify(&host, &requests, &plan, apply.dry_run)?;
        }
        Command::Unbind { devices, force, apply } => {
            execute(&bind::plan_unbind(&host, &devices, force)?, apply.dry_run)?;
        }
        Command::Restore { devices, apply } => {
            execute(&bind::plan_restore(&host, &devices)?, apply.dry_run)?;
        }
        Command::Hugepages { size, count, node, apply } => {
            let req = hugepages::Request { size, count, node };
            let plan = hugepages::plan(&host, &req)?;
            execute(&plan, apply.dry_run)?;
            if !apply.dry_run {
                let rb = hugepages::readback(&host, &req)?;
                if rb.is_short() {
                    anyhow::bail!(hugepages::shortfall_message(&req, &rb));
                }
                say!("{} {} hugepages reserved", rb.reserved, req.size);
            }
        }
        Command::Check { json } => {
            let report = check::run(&host)?;
            if json {
                say!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                say_raw!("{}", report.render());
            }
            if report.verdict == check::Verdict::NotReady {
                return Ok(ExitCode::from(EXIT_NOT_READY));
            }
        }
        Command::Apply { config, force, apply } => {
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("cannot read {}", config.display()))?;
            let mut file = apply_file::parse(&text)
                .with_context(|| format!("{} is not a valid setup file", config.display()))?;
            file.force |= force;
            let plan = apply_file::plan(&host, &file)?;
            let requests: Vec<(String, Driver)> =
                file.devices.iter().map(|d| (d.device.clone(), d.driver)).collect();
            bind_and_verify(&host, &requests, &plan, apply.dry_run)?;
            if let (Some(req), false) = (&file.hugepages, apply.dry_run) {
                let rb = hugepages::readback(&host, req)?;
                if rb.is_short() {
                    anyhow::bail!(hugepages::shortfall_message(req, &rb));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory as _;

    /// clap checks its definitions only when a command runs; this checks all of them.
    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
