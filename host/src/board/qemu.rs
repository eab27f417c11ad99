//! The emulated boards: a board crate's firmware ELF booted in
//! `qemu-system-arm` (the MPS2 AN386 by default, or the 1 MB-flash STM32F405
//! of the netduinoplus2 machine), its serial port connected to a TCP port
//! this process listens on, its defmt log (semihosting, QEMU's stdout)
//! collected.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::Client;

/// The Facemark repository the firmware is built from and the committed
/// models are read from: `$FACEMARK_REPO` if set; else the nearest folder
/// at or above the current directory that holds `firmware/boards`; else the
/// one this binary was built from. So an installed `facemark` (`cargo
/// install --path host`) works from anywhere inside a clone, or anywhere
/// with `FACEMARK_REPO`; where none of them exists, building the firmware
/// fails with an error that says so ([`run_cargo`]).
pub fn repo_root() -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cwd = std::env::current_dir().unwrap_or_default();
    find_repo(
        std::env::var_os("FACEMARK_REPO").map(PathBuf::from),
        &cwd,
        &built,
    )
}

/// [`repo_root`]'s rule, without the process's environment.
pub fn find_repo(env: Option<PathBuf>, cwd: &Path, built: &Path) -> PathBuf {
    if let Some(p) = env {
        return p;
    }
    cwd.ancestors()
        .find(|d| d.join("firmware/boards").is_dir())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| built.to_path_buf())
}

/// The firmware's cargo workspace (`firmware/` in [`repo_root`]).
pub fn firmware_dir() -> PathBuf {
    repo_root().join("firmware")
}

/// An emulated board: its crate under `firmware/boards/` and the QEMU
/// machine that runs it, whose command line is its line of
/// `firmware/qemu-machines` (read by the crates' cargo runner too).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Machine {
    /// Arm MPS2 AN386 (Cortex-M4F, 4 MB of code memory): the int8 model.
    #[default]
    An386,
    /// STM32F405 (Cortex-M4F, 1 MB flash, 128 KB SRAM) of QEMU's
    /// netduinoplus2 machine: the int4 model.
    Netduinoplus2,
    /// Arm MPS2 AN521 (SSE-200, two Cortex-M33): the int8 model, each
    /// inference shared between both cores as on the Pico 2.
    An521,
}

impl Machine {
    /// The board crate's folder name (under `firmware/boards/`).
    pub const fn name(self) -> &'static str {
        match self {
            Machine::An386 => "an386",
            Machine::Netduinoplus2 => "netduinoplus2",
            Machine::An521 => "an521",
        }
    }
    /// QEMU's name for the machine.
    pub const fn qemu_machine(self) -> &'static str {
        match self {
            Machine::An386 => "mps2-an386",
            Machine::Netduinoplus2 => "netduinoplus2",
            Machine::An521 => "mps2-an521",
        }
    }
    /// The model the board crate embeds, relative to the repository root
    /// (its `.cargo/config.toml` sets `FACEMARK_MODEL` where it is not the
    /// default): the int8 one does not fit the STM32F405's flash.
    pub const fn model_file(self) -> &'static str {
        match self {
            Machine::An386 | Machine::An521 => "models/facemark.fmq",
            Machine::Netduinoplus2 => "models/facemark-int4.fmq",
        }
    }
    pub const fn target(self) -> &'static str {
        match self {
            Machine::An386 | Machine::Netduinoplus2 => "thumbv7em-none-eabihf",
            Machine::An521 => "thumbv8m.main-none-eabihf",
        }
    }
    /// The board crate.
    pub fn crate_dir(self) -> PathBuf {
        firmware_dir().join("boards").join(self.name())
    }
    /// The ELF of `cargo build` (`profile` "release" or "debug") in the crate.
    pub fn elf(self, profile: &str) -> PathBuf {
        firmware_dir()
            .join("target")
            .join(self.target())
            .join(profile)
            .join(format!("facemark-{}", self.name()))
    }
    /// QEMU's arguments for the machine, before `-serial` and `-kernel`
    /// (its line of `firmware/qemu-machines`).
    pub fn qemu_args(self) -> Vec<&'static str> {
        qemu_machine_args(self.qemu_machine())
            .expect("firmware/qemu-machines lists every Machine (tested)")
    }
}

/// `firmware/qemu-machines`, embedded so that an installed binary has it:
/// the QEMU command lines that the boards' cargo runner (`qemu-run.sh`)
/// reads too.
const QEMU_MACHINES: &str = include_str!("../../../firmware/qemu-machines");

/// QEMU's arguments for a machine of `firmware/qemu-machines` (`mps2-an386`,
/// `netduinoplus2`, `mps2-an505`, `mps2-an521`), before `-serial` and `-kernel`.
pub fn qemu_machine_args(machine: &str) -> Option<Vec<&'static str>> {
    QEMU_MACHINES
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some(machine)).then(|| words.collect())
        })
}

/// Where `cargo build --release` in `firmware/boards/an386` puts its ELF.
pub fn default_elf() -> PathBuf {
    Machine::An386.elf("release")
}

/// An emulated board's firmware ELF: `$FACEMARK_FIRMWARE_ELF` if set;
/// otherwise the board crate's release build, first brought up to date
/// with `cargo build --release` when `build` is true (cargo rebuilds only
/// what changed, the embedded model included). Without cargo, an existing
/// ELF is used as it is.
pub fn board_elf(
    machine: Machine,
    build: bool,
    progress: &dyn crate::progress::Progress,
) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("FACEMARK_FIRMWARE_ELF") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("FACEMARK_FIRMWARE_ELF={} is not a file", p.display());
        }
        return Ok(p);
    }
    let elf = machine.elf("release");
    if build {
        match build_board(machine, &["build", "--release"], None) {
            Ok(()) => {}
            Err(e) if elf.is_file() => {
                progress.note(&format!(
                    "warning: could not rebuild the firmware ({e:#}); using {}",
                    elf.display()
                ));
            }
            Err(e) => return Err(e),
        }
    }
    if !elf.is_file() {
        bail!(
            "no firmware ELF at {} (run `cargo build --release` in {})",
            elf.display(),
            machine.crate_dir().display()
        );
    }
    Ok(elf)
}

/// Runs cargo with `args` in a board crate's folder, where its
/// `.cargo/config.toml` (target, link flags, default model) applies.
pub fn build_board(machine: Machine, args: &[&str], model: Option<&Path>) -> anyhow::Result<()> {
    run_cargo(&machine.crate_dir(), args, model)
}

/// Runs cargo with `args` in `firmware/` (the Raspberry Pi crates).
pub fn build_in_firmware(args: &[&str], model: Option<&Path>) -> anyhow::Result<()> {
    run_cargo(&firmware_dir(), args, model)
}

/// Cargo with `args` in `dir`, this process's cargo variables removed.
pub fn run_cargo(dir: &Path, args: &[&str], model: Option<&Path>) -> anyhow::Result<()> {
    let dir = dir.to_path_buf();
    if !dir.join("Cargo.toml").is_file() {
        bail!(
            "no firmware crate at {}: run facemark from inside a Facemark clone, set \
             FACEMARK_REPO=/path/to/facemark, or pass --elf",
            dir.display()
        );
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(args).current_dir(&dir);
    if let Some(m) = model {
        cmd.env("FACEMARK_MODEL", m);
    }
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        let leaks = (k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_NET_OFFLINE")
            || k.starts_with("RUSTC")
            || k.starts_with("RUSTDOC")
            || k == "RUSTFLAGS"
            || k.starts_with("DEP_")
            || k == "OUT_DIR"
            || k == "TARGET"
            || k == "HOST"
            || k == "OPT_LEVEL"
            || k == "PROFILE"
            || k == "DEBUG";
        if leaks {
            cmd.env_remove(k.as_ref());
        }
    }
    let out = cmd.output().with_context(|| {
        format!(
            "cannot run {} in {}",
            cargo.to_string_lossy(),
            dir.display()
        )
    })?;
    if !out.status.success() {
        bail!(
            "`cargo {}` in {} failed ({}):\n{}",
            args.join(" "),
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// How to start QEMU.
#[derive(Clone, Debug)]
pub struct QemuOptions {
    /// The emulator binary.
    pub qemu: PathBuf,
    /// How long QEMU may take to connect to the UART's port.
    pub connect_timeout: Duration,
    /// The machine to emulate (the ELF must be built for it).
    pub machine: Machine,
}

impl Default for QemuOptions {
    fn default() -> Self {
        Self {
            qemu: "qemu-system-arm".into(),
            connect_timeout: Duration::from_secs(60),
            machine: Machine::An386,
        }
    }
}

fn qemu_binary() -> PathBuf {
    std::env::var_os("FACEMARK_QEMU")
        .map(PathBuf::from)
        .unwrap_or_else(|| "qemu-system-arm".into())
}

/// A running emulated board; dropping it ends QEMU.
pub struct Qemu {
    child: Child,
    elf: PathBuf,
    log: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

fn collect(mut r: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut v) = into.lock() {
                v.extend_from_slice(&buf[..n]);
            }
        }
    });
}

impl Qemu {
    /// Boots `elf` with UART0 connected to a fresh localhost port, and
    /// returns the board and a client on that UART.
    pub fn boot(elf: &Path, o: &QemuOptions) -> anyhow::Result<(Self, Client)> {
        if !elf.is_file() {
            bail!("no firmware ELF at {}", elf.display());
        }
        let listener =
            TcpListener::bind("127.0.0.1:0").context("cannot listen on a localhost port")?;
        let port = listener.local_addr()?.port();
        let qemu = if o.qemu == Path::new("qemu-system-arm") {
            qemu_binary()
        } else {
            o.qemu.clone()
        };
        let mut cmd = Command::new(&qemu);
        cmd.args(o.machine.qemu_args());
        cmd.arg("-serial")
            .arg(format!("tcp:127.0.0.1:{port}"))
            .arg("-kernel")
            .arg(elf)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "cannot start {} (install QEMU's Arm system emulator: apt-get install qemu-system-arm)",
                qemu.display()
            )
        })?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            collect(out, log.clone());
        }
        if let Some(err) = child.stderr.take() {
            collect(err, stderr.clone());
        }
        let mut board = Qemu {
            child,
            elf: elf.to_path_buf(),
            log,
            stderr,
        };
        listener.set_nonblocking(true)?;
        let start = Instant::now();
        let stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e).context("accepting QEMU's UART connection"),
            }
            if let Some(status) = board.child.try_wait()? {
                bail!(
                    "QEMU exited ({status}) before connecting its UART: {}",
                    board.stderr_text()
                );
            }
            if start.elapsed() > o.connect_timeout {
                bail!(
                    "QEMU did not connect its UART to 127.0.0.1:{port} within {:?}: {}",
                    o.connect_timeout,
                    board.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        stream.set_nonblocking(false)?;
        // QEMU connects before the guest runs, and the STM32's USART drops
        // what reaches it before the firmware enables it: wait for the
        // firmware's first log bytes, which it writes after its UART is up
        // (a build that logs nothing at boot, DEFMT_LOG=off, costs 10 s).
        let logged = Instant::now();
        while board.raw_log().is_empty() && logged.elapsed() < Duration::from_secs(10) {
            if let Some(status) = board.child.try_wait()? {
                bail!(
                    "QEMU exited ({status}) before the firmware logged anything: {}",
                    board.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let client = Client::from_tcp(
            stream,
            format!(
                "qemu {} (serial on 127.0.0.1:{port})",
                o.machine.qemu_machine()
            ),
        )?;
        Ok((board, client))
    }

    /// The ELF it runs.
    pub fn elf(&self) -> &Path {
        &self.elf
    }

    /// The raw defmt stream so far.
    pub fn raw_log(&self) -> Vec<u8> {
        self.log.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// QEMU's own messages so far.
    pub fn stderr_text(&self) -> String {
        let v = self.stderr.lock().map(|v| v.clone()).unwrap_or_default();
        String::from_utf8_lossy(&v).trim().to_string()
    }

    /// The defmt log so far, decoded with the ELF's tables.
    pub fn decoded_log(&self) -> anyhow::Result<Vec<String>> {
        super::log::decode(&self.elf, &self.raw_log())
    }

    /// QEMU's exit status, if it has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_machine_has_its_qemu_line() {
        for m in [Machine::An386, Machine::Netduinoplus2] {
            let args = m.qemu_args();
            let at = args.iter().position(|&a| a == "-machine").unwrap();
            assert_eq!(args[at + 1], m.qemu_machine());
            // SysTick counts instructions only under -icount shift=0.
            assert!(
                args.windows(2).any(|w| w == ["-icount", "shift=0"]),
                "{args:?}"
            );
        }
        assert_eq!(
            qemu_machine_args("mps2-an505").unwrap()[..4],
            ["-machine", "mps2-an505", "-cpu", "cortex-m33"]
        );
        assert_eq!(qemu_machine_args("mps2"), None);
        assert_eq!(qemu_machine_args("#"), None);
    }

    #[test]
    fn the_repository_is_found_from_inside_it_or_named() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("clone");
        let deep = repo.join("host/src");
        std::fs::create_dir_all(repo.join("firmware/boards")).unwrap();
        std::fs::create_dir_all(&deep).unwrap();
        let built = Path::new("/nowhere/built");
        assert_eq!(find_repo(None, &deep, built), repo);
        assert_eq!(find_repo(None, &repo, built), repo);
        // Outside any clone: the build's own, or the one named.
        assert_eq!(find_repo(None, tmp.path(), built), built);
        let named = PathBuf::from("/elsewhere/facemark");
        assert_eq!(find_repo(Some(named.clone()), &deep, built), named);
    }

    #[test]
    fn building_without_a_repository_says_what_to_pass() {
        let tmp = tempfile::tempdir().unwrap();
        let e = run_cargo(tmp.path(), &["build"], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("FACEMARK_REPO") && e.contains("--elf"), "{e}");
    }
}
