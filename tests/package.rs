//! The Debian package as `cross/deb.sh` builds it (here from the binary under test, as amd64):
//! contents, conffiles, docs whose links work under /usr/share/doc, man pages and completions.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn stdout(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Relative link targets of a markdown text: `[text](target)`, without `#anchor`s and URLs.
fn links(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = md;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = rest[..end].split('#').next().unwrap_or_default();
        if !target.is_empty() && !target.contains("://") && !target.starts_with("mailto:") {
            out.push(target.to_string());
        }
    }
    out
}

fn files_under(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, ext, out);
        } else if p.extension().is_some_and(|x| x == ext) {
            out.push(p);
        }
    }
}

#[test]
fn the_deb_ships_docs_examples_man_pages_and_completions_and_unpacks_into_a_scratch_root() {
    if !have("dpkg-deb") || !have("objdump") {
        eprintln!("SKIP: dpkg-deb or objdump not installed (apt install dpkg binutils)");
        return;
    }
    let out = tempfile::tempdir().expect("tempdir");
    // Stripped and not xz-compressed: the debug binary is large, and xz on it takes minutes.
    let bin = out.path().join("edgewatch");
    stdout(
        Command::new("objcopy")
            .arg("--strip-debug")
            .arg(env!("CARGO_BIN_EXE_edgewatch"))
            .arg(&bin),
    );
    let built = stdout(
        Command::new(repo().join("cross/deb.sh"))
            .arg("amd64")
            .env("BIN", &bin)
            .env("OUT", out.path())
            .env("COMPRESS", "gzip")
            .env("GEN", env!("CARGO_BIN_EXE_edgewatch-gen")),
    );
    let version = env!("CARGO_PKG_VERSION");
    let deb = out.path().join(format!("edgewatch_{version}_amd64.deb"));
    assert!(deb.is_file(), "{built}");

    let contents = stdout(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    let listed: Vec<&str> = contents
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    let mut want: Vec<String> = [
        "./usr/bin/edgewatch",
        "./etc/edgewatch/edgewatch.toml",
        "./lib/systemd/system/edgewatch.service",
        "./usr/lib/sysusers.d/edgewatch.conf",
        "./usr/share/doc/edgewatch/README.md",
        "./usr/share/doc/edgewatch/cross/README.md",
        "./usr/share/bash-completion/completions/edgewatch",
        "./usr/share/zsh/vendor-completions/_edgewatch",
        "./usr/share/fish/vendor_completions.d/edgewatch.fish",
        "./usr/share/man/man1/edgewatch.1.gz",
        "./usr/share/man/man1/edgewatch-run.1.gz",
        "./usr/share/man/man1/edgewatch-check.1.gz",
        "./usr/share/man/man1/edgewatch-tail.1.gz",
        "./usr/share/man/man1/edgewatch-replay.1.gz",
        "./usr/share/man/man1/edgewatch-probe.1.gz",
    ]
    .map(String::from)
    .to_vec();
    // Every doc and every example config of the repository.
    for dir in ["docs", "config"] {
        for e in std::fs::read_dir(repo().join(dir)).expect(dir).flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".md") || name.ends_with(".toml") {
                want.push(format!("./usr/share/doc/edgewatch/{dir}/{name}"));
            }
        }
    }
    assert!(want.iter().any(|w| w.ends_with("docs/SOURCES.md")));
    assert!(want
        .iter()
        .any(|w| w.ends_with("config/serial-modbus.toml")));
    for w in &want {
        assert!(
            listed.contains(&w.as_str()),
            "{w} not in the .deb:\n{contents}"
        );
    }

    let conffiles = stdout(
        Command::new("dpkg-deb")
            .arg("--info")
            .arg(&deb)
            .arg("conffiles"),
    );
    assert_eq!(conffiles.trim(), "/etc/edgewatch/edgewatch.toml");
    let control = stdout(Command::new("dpkg-deb").arg("--info").arg(&deb));
    assert!(control.contains("Architecture: amd64"), "{control}");
    assert!(control.contains("Depends: libc6 (>= 2."), "{control}");

    // Into a scratch root.
    let root = out.path().join("root");
    stdout(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let unit =
        std::fs::read_to_string(root.join("lib/systemd/system/edgewatch.service")).expect("unit");
    assert_eq!(
        unit,
        std::fs::read_to_string(repo().join("systemd/edgewatch.service")).expect("repo unit")
    );
    let bin = root.join("usr/bin/edgewatch");
    let check = stdout(
        Command::new(&bin)
            .arg("check")
            .arg("--config")
            .arg(root.join("etc/edgewatch/edgewatch.toml")),
    );
    assert!(check.contains(": ok"), "{check}");
    let man = stdout(
        Command::new("gzip")
            .arg("-dc")
            .arg(root.join("usr/share/man/man1/edgewatch.1.gz")),
    );
    assert!(man.contains(".TH edgewatch 1"), "{man}");

    // The README's (and every doc's) relative links resolve inside /usr/share/doc/edgewatch.
    let doc = root.join("usr/share/doc/edgewatch");
    let mut mds = Vec::new();
    files_under(&doc, "md", &mut mds);
    assert!(mds.len() >= 8, "{mds:?}");
    let mut checked = 0;
    for md in &mds {
        let text = std::fs::read_to_string(md).expect("md");
        for l in links(&text) {
            let target = md.parent().expect("dir").join(&l);
            assert!(
                target.exists(),
                "{}: link {l} does not resolve in the package",
                md.strip_prefix(&root).unwrap_or(md).display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} links found");
}

#[test]
fn install_sh_installs_docs_man_pages_and_completions_into_a_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let out = stdout(
        Command::new(repo().join("cross/install.sh"))
            .arg(env!("CARGO_BIN_EXE_edgewatch"))
            .env("ROOT", &root)
            .env("GEN", env!("CARGO_BIN_EXE_edgewatch-gen")),
    );
    assert!(out.contains("installed into"), "{out}");
    for f in [
        "usr/local/bin/edgewatch",
        "etc/edgewatch/edgewatch.toml",
        "etc/systemd/system/edgewatch.service",
        "usr/local/share/doc/edgewatch/README.md",
        "usr/local/share/doc/edgewatch/docs/SOURCES.md",
        "usr/local/share/doc/edgewatch/docs/DETECTION.md",
        "usr/local/share/doc/edgewatch/config/serial-modbus.toml",
        "usr/local/share/man/man1/edgewatch.1",
        "usr/local/share/bash-completion/completions/edgewatch",
    ] {
        assert!(root.join(f).is_file(), "{f} not installed:\n{out}");
    }
    let unit =
        std::fs::read_to_string(root.join("etc/systemd/system/edgewatch.service")).expect("unit");
    assert!(
        unit.contains("ExecStart=/usr/local/bin/edgewatch run"),
        "{unit}"
    );
}

/// The Pi 1 / Zero package (`cross/deb.sh armv6`), built here around the binary under test: the
/// packaging path only (CI has no ARMv6 toolchain; cross/README.md has the real build). It must
/// say `armhf` (what 32-bit Raspberry Pi OS calls itself on an ARMv6 Pi), carry a version of its
/// own, need no libc (the binary is static) and leave out the ARMv7 package's CPU check.
#[test]
fn the_armv6_deb_is_armhf_with_its_own_version_no_libc_dependency_and_no_cpu_check() {
    if !have("dpkg-deb") {
        eprintln!("SKIP: dpkg-deb not installed (apt install dpkg)");
        return;
    }
    let out = tempfile::tempdir().expect("tempdir");
    let bin = out.path().join("edgewatch");
    stdout(
        Command::new("objcopy")
            .arg("--strip-debug")
            .arg(env!("CARGO_BIN_EXE_edgewatch"))
            .arg(&bin),
    );
    let built = stdout(
        Command::new(repo().join("cross/deb.sh"))
            .arg("armv6")
            .env("BIN", &bin)
            .env("OUT", out.path())
            .env("COMPRESS", "gzip")
            .env("GEN", env!("CARGO_BIN_EXE_edgewatch-gen")),
    );
    let version = env!("CARGO_PKG_VERSION");
    let deb = out
        .path()
        .join(format!("edgewatch_{version}_armhf-armv6.deb"));
    assert!(deb.is_file(), "{built}");
    let field = |name: &str| {
        stdout(Command::new("dpkg-deb").arg("--field").arg(&deb).arg(name))
            .trim()
            .to_string()
    };
    assert_eq!(field("Architecture"), "armhf");
    assert_eq!(field("Version"), format!("{version}+armv6"));
    assert_eq!(field("Depends"), "adduser");
    let ctrl = out.path().join("ctrl");
    stdout(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&ctrl));
    assert!(ctrl.join("postinst").is_file());
    assert!(
        !ctrl.join("preinst").exists(),
        "the armv6 package runs on every ARM Pi"
    );
}

/// The ARMv7 `armhf` package's preinst: on an ARMv6 CPU (`uname -m` = armv6l) it refuses, naming
/// the package to use; on ARMv7 and ARMv8 it lets the install go on.
#[test]
fn the_armv7_package_refuses_to_install_on_an_armv6_pi() {
    let dir = tempfile::tempdir().expect("tempdir");
    let preinst = repo().join("cross/deb/preinst-armv7");
    for (machine, ok) in [("armv6l", false), ("armv7l", true), ("aarch64", true)] {
        let uname = dir.path().join("uname");
        std::fs::write(&uname, format!("#!/bin/sh\necho {machine}\n")).expect("write");
        stdout(Command::new("chmod").arg("755").arg(&uname));
        let path = format!(
            "{}:{}",
            dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new("sh")
            .arg(&preinst)
            .arg("install")
            .env("PATH", path)
            .output()
            .expect("run preinst");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), ok, "{machine}: {err}");
        if !ok {
            assert!(err.contains("armhf-armv6.deb"), "{err}");
        }
    }
}
