//! A plan: the steps a command takes, built without changing anything, then rendered
//! (`--dry-run`) or applied in order, stopping at the first step that fails.
//!
//! Every step carries its full path, so a plan applies the same whatever [`Host`] built it,
//! and `modprobe`/`mount` go through a [`Runner`] that tests replace with a recorder.
//!
//! [`Host`]: crate::sysfs::Host

use crate::pci::PciAddr;
use crate::state::{Entry, State};
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::process::Command;

/// One change to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Load a kernel module.
    Modprobe {
        /// Module name (`vfio-pci`).
        module: String,
    },
    /// Write a value to an existing file (a sysfs attribute), as `echo VALUE > PATH` would.
    Write {
        /// The attribute.
        path: PathBuf,
        /// Exactly what is written.
        value: String,
    },
    /// Create a directory (and its parents).
    CreateDir {
        /// The directory.
        path: PathBuf,
    },
    /// Mount a file system.
    Mount {
        /// File system type (`hugetlbfs`).
        fstype: String,
        /// Source (`nodev` for hugetlbfs).
        source: String,
        /// Mount point.
        target: PathBuf,
        /// Options (`pagesize=2M`).
        options: String,
    },
    /// Record a device's original driver in the state file (kept if already recorded).
    Remember {
        /// The state file.
        state_file: PathBuf,
        /// The device.
        device: PciAddr,
        /// The driver it had; `None` when it had none.
        original_driver: Option<String>,
    },
    /// Drop a device from the state file.
    Forget {
        /// The state file.
        state_file: PathBuf,
        /// The device.
        device: PciAddr,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Modprobe { module } => write!(f, "modprobe {module}"),
            Self::Write { path, value } => write!(f, "write {value:?} to {}", path.display()),
            Self::CreateDir { path } => write!(f, "mkdir -p {}", path.display()),
            Self::Mount { fstype, source, target, options } => {
                write!(f, "mount -t {fstype} -o {options} {source} {}", target.display())
            }
            Self::Remember { state_file, device, original_driver } => write!(
                f,
                "record {device}'s original driver ({}) in {}",
                original_driver.as_deref().unwrap_or("none"),
                state_file.display()
            ),
            Self::Forget { state_file, device } => {
                write!(f, "remove {device} from {}", state_file.display())
            }
        }
    }
}

/// Something the operator should read alongside the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// For information (`already bound to vfio-pci: nothing to do`).
    Info(String),
    /// Something risky or surprising (no-IOMMU mode).
    Warning(String),
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Info(s) => write!(f, "note: {s}"),
            Self::Warning(s) => write!(f, "WARNING: {s}"),
        }
    }
}

/// Steps in order, and notes about them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// What to do, in order.
    pub steps: Vec<Step>,
    /// What to tell the operator.
    pub notes: Vec<Note>,
}

impl Plan {
    /// Appends another plan's steps and notes.
    pub fn extend(&mut self, other: Plan) {
        self.steps.extend(other.steps);
        self.notes.extend(other.notes);
    }

    /// Adds a step.
    pub fn push(&mut self, step: Step) {
        self.steps.push(step);
    }

    /// Adds an informational note.
    pub fn info(&mut self, text: impl Into<String>) {
        self.notes.push(Note::Info(text.into()));
    }

    /// Adds a warning.
    pub fn warn(&mut self, text: impl Into<String>) {
        self.notes.push(Note::Warning(text.into()));
    }

    /// The warnings' texts.
    pub fn warnings(&self) -> impl Iterator<Item = &str> {
        self.notes.iter().filter_map(|n| match n {
            Note::Warning(s) => Some(s.as_str()),
            Note::Info(_) => None,
        })
    }

    /// The numbered steps, one a line (`  1. modprobe vfio-pci`), or `nothing to do`.
    pub fn render(&self) -> String {
        if self.steps.is_empty() {
            return "nothing to do\n".to_owned();
        }
        let mut out = String::new();
        for (i, step) in self.steps.iter().enumerate() {
            out.push_str(&format!("{:>3}. {step}\n", i + 1));
        }
        out
    }
}

/// Runs the external commands of a plan (`modprobe`, `mount`).
pub trait Runner {
    /// Runs `program` with `args`; `Err` carries what went wrong, in words.
    fn run(&mut self, program: &str, args: &[&str]) -> Result<(), String>;
}

/// Runs commands for real.
#[derive(Debug, Default)]
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn run(&mut self, program: &str, args: &[&str]) -> Result<(), String> {
        let out = Command::new(program)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(format!("{program} failed ({}): {}", out.status, stderr.trim()))
    }
}

/// Records commands instead of running them (tests, and fixture trees).
#[derive(Debug, Default)]
pub struct RecordingRunner {
    /// Each command run, as one line (`modprobe vfio-pci`).
    pub commands: Vec<String>,
}

impl Runner for RecordingRunner {
    fn run(&mut self, program: &str, args: &[&str]) -> Result<(), String> {
        let mut line = program.to_owned();
        for a in args {
            line.push(' ');
            line.push_str(a);
        }
        self.commands.push(line);
        Ok(())
    }
}

/// A step that failed, named.
#[derive(Debug, thiserror::Error)]
#[error("step {number} of {total} failed ({step}): {reason}")]
pub struct ApplyError {
    /// 1-based position of the step.
    pub number: usize,
    /// Steps in the plan.
    pub total: usize,
    /// The step, rendered.
    pub step: String,
    /// What went wrong.
    pub reason: String,
}

fn io_reason(e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::PermissionDenied {
        format!("{e} (nic-config must run as root)")
    } else {
        e.to_string()
    }
}

/// Applies one step.
pub fn apply_step(step: &Step, runner: &mut dyn Runner) -> Result<(), String> {
    match step {
        Step::Modprobe { module } => runner.run("modprobe", &[module]),
        Step::Write { path, value } => {
            // No `create`: a sysfs attribute that is missing means the wrong path or a driver
            // that is not there, and creating a plain file would hide that.
            let mut file = OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(path)
                .map_err(|e| io_reason(&e))?;
            file.write_all(value.as_bytes()).map_err(|e| io_reason(&e))
        }
        Step::CreateDir { path } => fs::create_dir_all(path).map_err(|e| io_reason(&e)),
        Step::Mount { fstype, source, target, options } => {
            let target = target.to_string_lossy();
            runner.run("mount", &["-t", fstype, "-o", options, source, &target])
        }
        Step::Remember { state_file, device, original_driver } => {
            let mut state = State::load(state_file).map_err(|e| e.to_string())?;
            state
                .devices
                .entry(*device)
                .or_insert_with(|| Entry { original_driver: original_driver.clone() });
            state.save(state_file).map_err(|e| io_reason(&e))
        }
        Step::Forget { state_file, device } => {
            let mut state = State::load(state_file).map_err(|e| e.to_string())?;
            state.devices.remove(device);
            state.save(state_file).map_err(|e| io_reason(&e))
        }
    }
}

/// Applies the steps in order; `progress` hears of each before it runs. Stops at the first
/// failure: the steps before it stay applied (the message says which one failed, so the
/// operator knows where the host is).
pub fn apply(
    plan: &Plan,
    runner: &mut dyn Runner,
    mut progress: impl FnMut(usize, usize, &Step),
) -> Result<(), ApplyError> {
    let total = plan.steps.len();
    for (i, step) in plan.steps.iter().enumerate() {
        progress(i + 1, total, step);
        apply_step(step, runner).map_err(|reason| ApplyError {
            number: i + 1,
            total,
            step: step.to_string(),
            reason,
        })?;
    }
    Ok(())
}
