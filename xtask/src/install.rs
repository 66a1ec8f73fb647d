//! `cargo xtask install`: the daemon as a system service. The release
//! binary into PREFIX/bin, the systemd unit (its ExecStart pointing there)
//! into /etc/systemd/system, the example configuration into
//! /etc/mmtrace/mmtrace.toml unless one is there (then beside it, as
//! mmtrace.toml.example), and the `mmtrace` group that may use the control
//! socket. With --destdir everything goes under that directory instead (a
//! staging tree for a package): no group is made and systemd is not told.
//! Nothing is enabled or started: the last lines say how.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{cargo, is_root, run, step, target_dir, which, workspace_root, HOST_PACKAGES};

/// The group the control socket is given to (packaging/mmtrace.toml's
/// default `[socket] group`).
pub const GROUP: &str = "mmtrace";
/// Where packaging/mmtrace.service expects the binary.
const UNIT_BINARY: &str = "/usr/local/bin/mmtrace";

/// What goes where, relative to `root` (/ or a staging directory).
pub struct Layout {
    pub root: PathBuf,
    pub prefix: PathBuf,
}

impl Layout {
    fn under(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }

    pub fn binary(&self) -> PathBuf {
        self.under(&self.prefix.join("bin/mmtrace"))
    }

    pub fn unit(&self) -> PathBuf {
        self.under(Path::new("/etc/systemd/system/mmtrace.service"))
    }

    pub fn config(&self) -> PathBuf {
        self.under(Path::new("/etc/mmtrace/mmtrace.toml"))
    }
}

pub fn install(prefix: &Path, destdir: Option<&Path>) -> Result<()> {
    if !prefix.is_absolute() {
        bail!(
            "--prefix must be an absolute path, not {}",
            prefix.display()
        );
    }
    if destdir.is_none() && !is_root() {
        bail!(
            "cargo xtask install writes to /etc and {}: run it as root (or give --destdir)",
            prefix.display()
        );
    }
    crate::setup::check()?;
    run(cargo()
        .args(["build", "--release"])
        .args(HOST_PACKAGES)
        .args(["--bin", "mmtrace"]))?;
    let built = target_dir().join("release/mmtrace");
    let layout = Layout {
        root: destdir.map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
        prefix: prefix.to_path_buf(),
    };
    let placed = place(&layout, &built, workspace_root())?;
    for line in &placed {
        step(line);
    }
    if destdir.is_some() {
        step(format!(
            "staged under {}: no group made, systemd not told",
            layout.root.display()
        ));
        return Ok(());
    }
    group()?;
    if which("systemctl").is_some() && Path::new("/run/systemd/system").is_dir() {
        run(Command::new("systemctl").arg("daemon-reload"))?;
        step("start it: systemctl enable --now mmtrace (status: mmtrace status; logs: journalctl -u mmtrace)");
    } else {
        step(format!(
            "no systemd here: run {} daemon --config /etc/mmtrace/mmtrace.toml",
            layout.binary().display()
        ));
    }
    Ok(())
}

/// Puts the binary `built`, the unit and the configuration from the
/// workspace `src` into `layout`; returns a line per file. An existing
/// configuration is never replaced.
pub fn place(layout: &Layout, built: &Path, src: &Path) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let binary = layout.binary();
    copy_new(built, &binary, 0o755)?;
    done.push(format!("installed {}", binary.display()));

    let unit_text = fs::read_to_string(src.join("packaging/mmtrace.service"))
        .context("reading packaging/mmtrace.service")?;
    let exec = layout.prefix.join("bin/mmtrace");
    let unit_text = unit_text.replace(UNIT_BINARY, &exec.to_string_lossy());
    let unit = layout.unit();
    write_file(&unit, unit_text.as_bytes(), 0o644)?;
    done.push(format!("installed {}", unit.display()));

    let example =
        fs::read(src.join("packaging/mmtrace.toml")).context("reading packaging/mmtrace.toml")?;
    let config = layout.config();
    if config.symlink_metadata().is_ok() {
        let beside = config.with_extension("toml.example");
        write_file(&beside, &example, 0o644)?;
        done.push(format!(
            "kept the existing {}; the example is {}",
            config.display(),
            beside.display()
        ));
    } else {
        write_file(&config, &example, 0o644)?;
        done.push(format!("installed {}", config.display()));
    }
    Ok(done)
}

/// Copies `from` to `to` through a temporary file renamed over it (a
/// running binary is replaced, not written into).
fn copy_new(from: &Path, to: &Path, mode: u32) -> Result<()> {
    let bytes = fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    write_file(to, &bytes, mode)
}

fn write_file(to: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = to.parent().context("a file with no directory")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = to.file_name().context("no file name")?.to_string_lossy();
    let temp = dir.join(format!(".{name}.xtask-{}", std::process::id()));
    fs::write(&temp, bytes).with_context(|| format!("writing {}", temp.display()))?;
    fs::set_permissions(&temp, fs::Permissions::from_mode(mode))?;
    fs::rename(&temp, to).with_context(|| format!("installing {}", to.display()))?;
    Ok(())
}

/// The system group `mmtrace`, made unless it exists.
fn group() -> Result<()> {
    let known = Command::new("getent")
        .args(["group", GROUP])
        .output()
        .is_ok_and(|o| o.status.success());
    if known {
        step(format!(
            "group {GROUP}: exists (its members may use the control socket)"
        ));
        return Ok(());
    }
    run(Command::new("groupadd").args(["--system", GROUP]))?;
    step(format!(
        "group {GROUP}: made; add the users who may run `mmtrace status` and `ps`: usermod -aG {GROUP} USER"
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_the_files_and_keeps_an_existing_config() {
        let root = std::env::temp_dir().join(format!("xtask-install-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        let built = root.join("built-mmtrace");
        fs::write(&built, b"binary").unwrap();
        let layout = Layout {
            root: root.join("stage"),
            prefix: PathBuf::from("/opt/mmtrace"),
        };
        let lines = place(&layout, &built, workspace_root()).unwrap();
        assert_eq!(lines.len(), 3, "{lines:?}");
        let bin = root.join("stage/opt/mmtrace/bin/mmtrace");
        assert_eq!(fs::read(&bin).unwrap(), b"binary");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&bin), 0o755);
        let unit =
            fs::read_to_string(root.join("stage/etc/systemd/system/mmtrace.service")).unwrap();
        assert!(
            unit.contains("ExecStart=/opt/mmtrace/bin/mmtrace daemon"),
            "{unit}"
        );
        assert!(!unit.contains(UNIT_BINARY));
        let config = root.join("stage/etc/mmtrace/mmtrace.toml");
        assert_eq!(mode(&config), 0o644);
        // Again, over a configuration someone edited: it stays.
        fs::write(&config, b"# mine\n").unwrap();
        let lines = place(&layout, &built, workspace_root()).unwrap();
        assert!(lines[2].starts_with("kept the existing"), "{lines:?}");
        assert_eq!(fs::read(&config).unwrap(), b"# mine\n");
        assert!(root
            .join("stage/etc/mmtrace/mmtrace.toml.example")
            .is_file());
        let _ = fs::remove_dir_all(&root);
    }
}
