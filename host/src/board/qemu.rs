//! The emulated board: the firmware ELF booted in `qemu-system-arm -machine
//! mps2-an386`, its UART0 connected to a TCP port this process listens on,
//! its defmt log (semihosting, QEMU's stdout) collected.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::Client;

/// The firmware's cargo workspace (`firmware/` beside `host/`).
pub fn firmware_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware")
}

/// Where `cargo build --release` in `firmware/` puts the AN386 ELF.
pub fn default_elf() -> PathBuf {
    firmware_dir().join("target/thumbv7em-none-eabihf/release/facemark-firmware")
}

/// The emulated board's firmware ELF: `$FACEMARK_FIRMWARE_ELF` if set;
/// otherwise `firmware/`'s release build, first brought up to date with
/// `cargo build --release` when `build` is true (cargo rebuilds only what
/// changed, the embedded model included). Without cargo, an existing ELF is
/// used as it is.
pub fn firmware_elf(build: bool) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("FACEMARK_FIRMWARE_ELF") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("FACEMARK_FIRMWARE_ELF={} is not a file", p.display());
        }
        return Ok(p);
    }
    let elf = default_elf();
    if build {
        match build_firmware(None) {
            Ok(()) => {}
            Err(e) if elf.is_file() => {
                eprintln!(
                    "warning: could not rebuild the firmware ({e:#}); using {}",
                    elf.display()
                );
            }
            Err(e) => return Err(e),
        }
    }
    if !elf.is_file() {
        bail!(
            "no firmware ELF at {} (run `cargo build --release` in {})",
            elf.display(),
            firmware_dir().display()
        );
    }
    Ok(elf)
}

/// `cargo build --release` in `firmware/`, with this process's cargo
/// variables removed (a test run's must not leak into the nested build).
/// `model` embeds another model file than `models/facemark.fmq` (as
/// `FACEMARK_MODEL` does; `None` leaves that variable as it is).
pub fn build_firmware(model: Option<&Path>) -> anyhow::Result<()> {
    build_in_firmware(&["build", "--release"], model)
}

/// Runs cargo with `args` in `firmware/` (cleaned environment, see
/// [`build_firmware`]).
pub fn build_in_firmware(args: &[&str], model: Option<&Path>) -> anyhow::Result<()> {
    let dir = firmware_dir();
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
    /// `-icount shift=0`: SysTick then counts instructions (the firmware's
    /// cost unit); without it costs follow the host's speed.
    pub icount: bool,
    /// How long QEMU may take to connect to the UART's port.
    pub connect_timeout: Duration,
}

impl Default for QemuOptions {
    fn default() -> Self {
        Self {
            qemu: "qemu-system-arm".into(),
            icount: true,
            connect_timeout: Duration::from_secs(60),
        }
    }
}

/// True when `qemu-system-arm` (or `$FACEMARK_QEMU`) runs.
pub fn qemu_available() -> bool {
    Command::new(qemu_binary())
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
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
        cmd.args(["-machine", "mps2-an386", "-cpu", "cortex-m4", "-nographic"])
            .args(["-monitor", "none"])
            .args(["-semihosting-config", "enable=on,target=native"]);
        if o.icount {
            cmd.args(["-icount", "shift=0"]);
        }
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
        let client = Client::from_tcp(
            stream,
            format!("qemu mps2-an386 (uart0 on 127.0.0.1:{port})"),
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
