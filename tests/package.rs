//! The Debian package (`cargo deb`, metadata in Cargo.toml) and what goes into it:
//! the generated man pages and completions are current; the .deb holds the binary, the
//! unit, the conffile, the man pages and the completions; the unit names the man page;
//! the pages render without warnings; the completions load in bash; the maintainer
//! scripts start nothing on a first install and take the rules out on removal. No root
//! needed: nothing is installed on this machine (the scripts run against stubs).

#[allow(dead_code)]
#[path = "../examples/gen_docs.rs"]
mod gen_docs;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_nfqwall");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nfqwall-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The clap definitions are the one source: doc/ must be what gen_docs renders now.
#[test]
fn generated_man_pages_and_completions_are_current() {
    let stale = gen_docs::stale(&gen_docs::doc_dir());
    assert!(
        stale.is_empty(),
        "stale under doc/: {stale:?}; run `cargo run --example gen_docs` and commit"
    );
    // nfqwall(8) and one page per subcommand, nested ones included.
    let man: Vec<String> = gen_docs::files()
        .into_iter()
        .filter_map(|(p, _)| p.strip_prefix("man").ok().map(|p| p.display().to_string()))
        .collect();
    for page in [
        "nfqwall.8",
        "nfqwall-run.8",
        "nfqwall-rules-remove.8",
        "nfqwall-replay.8",
    ] {
        assert!(man.iter().any(|m| m == page), "{page} missing from {man:?}");
    }
}

/// Builds the package from the binary this test run built (`cargo deb --no-build`, so
/// nothing is compiled again), or, in a debug test run, takes the one `cargo deb` left
/// in target/debian. None (skip) if there is neither, unless CI is set.
fn package() -> Option<PathBuf> {
    static DEB: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    DEB.get_or_init(find_or_build).clone()
}

fn find_or_build() -> Option<PathBuf> {
    let version = env!("CARGO_PKG_VERSION");
    let release = Path::new(BIN)
        .parent()
        .is_some_and(|d| d.file_name().is_some_and(|n| n == "release"));
    let has_cargo_deb = Command::new(env!("CARGO"))
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if release && has_cargo_deb {
        let out = scratch("deb-out");
        run(Command::new(env!("CARGO"))
            .current_dir(ROOT)
            .args(["deb", "--no-build", "--fast", "--quiet", "--output"])
            .arg(&out));
        let deb = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.starts_with(&format!("nfqwall_{version}-")) && n.ends_with(".deb")
            });
        return Some(deb.expect("cargo deb wrote no nfqwall_*.deb"));
    }
    let found = std::fs::read_dir(Path::new(ROOT).join("target/debian"))
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(&format!("nfqwall_{version}-")) && n.ends_with(".deb")
        });
    if found.is_none() {
        let why = "no cargo-deb (cargo install cargo-deb) and no target/debian/nfqwall_*.deb";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipping the package test: {why}");
    }
    found
}

#[test]
fn deb_holds_binary_unit_conffile_man_pages_and_completions() {
    let Some(deb) = package() else { return };
    let size = std::fs::metadata(&deb).unwrap().len();
    eprintln!("{}: {} KiB", deb.display(), size / 1024);

    // Files.
    let listing = stdout(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let mut want: Vec<String> = vec![
        "./usr/sbin/nfqwall".into(),
        "./usr/lib/systemd/system/nfqwall.service".into(),
        "./etc/nfqwall/nfqwall.toml".into(),
        "./usr/share/bash-completion/completions/nfqwall".into(),
        "./usr/share/zsh/vendor-completions/_nfqwall".into(),
        "./usr/share/fish/vendor_completions.d/nfqwall.fish".into(),
        "./usr/share/doc/nfqwall/README.md".into(),
        "./usr/share/doc/nfqwall/copyright".into(),
    ];
    let pages: Vec<String> = gen_docs::files()
        .into_iter()
        .filter_map(|(p, _)| {
            p.strip_prefix("man")
                .ok()
                .map(|p| format!("./usr/share/man/man8/{}.gz", p.display()))
        })
        .collect();
    want.extend(pages.iter().cloned());
    for path in &want {
        assert!(
            listing.lines().any(|l| l.ends_with(&format!(" {path}"))),
            "{path} not in the package:\n{listing}"
        );
    }
    let mode = |path: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" {path}")))
            .and_then(|l| l.split_whitespace().next())
            .unwrap()
            .to_string()
    };
    assert_eq!(mode("./usr/sbin/nfqwall"), "-rwxr-xr-x");
    // The config is root's alone, as systemd/install.sh installs it.
    assert_eq!(mode("./etc/nfqwall/nfqwall.toml"), "-rw-------");

    // Control: the conffile, the dependency on iptables, the maintainer scripts.
    let conffiles = stdout(
        Command::new("dpkg-deb")
            .arg("-I")
            .arg(&deb)
            .arg("conffiles"),
    );
    assert_eq!(conffiles.trim(), "/etc/nfqwall/nfqwall.toml", "{conffiles}");
    let control = stdout(Command::new("dpkg-deb").arg("-I").arg(&deb).arg("control"));
    assert!(control.contains("Package: nfqwall\n"), "{control}");
    let depends = control
        .lines()
        .find(|l| l.starts_with("Depends:"))
        .unwrap_or_else(|| panic!("no Depends: {control}"));
    assert!(depends.contains("iptables"), "{depends}");

    let root = scratch("deb-root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));

    // The binary runs and accepts the shipped config, which is the built-in default.
    let version = stdout(Command::new(root.join("usr/sbin/nfqwall")).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("nfqwall {}", env!("CARGO_PKG_VERSION"))
    );
    let conf = root.join("etc/nfqwall/nfqwall.toml");
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        nfqwall::config::Config::default_toml()
    );
    run(Command::new(root.join("usr/sbin/nfqwall"))
        .arg("check")
        .arg(&conf));

    // The unit: the repository's, as it is; binary in /usr/sbin; Documentation= names
    // nfqwall(8), and every man: page it names is in the package.
    let unit =
        std::fs::read_to_string(root.join("usr/lib/systemd/system/nfqwall.service")).unwrap();
    assert_eq!(
        unit,
        std::fs::read_to_string(Path::new(ROOT).join("systemd/nfqwall.service")).unwrap()
    );
    for line in unit.lines().filter(|l| l.starts_with("Exec")) {
        if line.contains("nfqwall ") {
            assert!(line.contains("/usr/sbin/nfqwall "), "{line}");
        }
    }
    let doc = unit
        .lines()
        .find(|l| l.starts_with("Documentation="))
        .expect("no Documentation=");
    assert!(
        doc.split_whitespace()
            .any(|w| w.ends_with("man:nfqwall(8)")),
        "{doc}"
    );
    for word in doc.trim_start_matches("Documentation=").split_whitespace() {
        let page = word
            .strip_prefix("man:")
            .unwrap_or_else(|| panic!("{word}: not a man page"));
        let file = page.replace("(8)", ".8.gz");
        assert!(
            root.join("usr/share/man/man8").join(&file).exists(),
            "{word} names no page in the package"
        );
    }

    // systemd-analyze verify, with man pointed at the package's pages, finds them.
    let staged = root.join("verify.service");
    let bin = root.join("usr/sbin/nfqwall");
    std::fs::write(
        &staged,
        unit.replace("/usr/sbin/nfqwall", &bin.display().to_string()),
    )
    .unwrap();
    match Command::new("systemd-analyze")
        .env("MANPATH", root.join("usr/share/man"))
        .arg("verify")
        .arg(&staged)
        .output()
    {
        Err(_) => eprintln!("no systemd-analyze: the packaged unit not verified"),
        Ok(out) => assert!(
            out.status.success() && out.stderr.is_empty(),
            "systemd-analyze verify: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }

    // Man pages render with man -l, with groff's warnings on, and say something.
    for page in &pages {
        let file = root.join(page.trim_start_matches("./"));
        let out = Command::new("man")
            .env("MANWIDTH", "80")
            .env("LC_ALL", "C.UTF-8")
            .env("MAN_DISABLE_SECCOMP", "1")
            .arg("--warnings")
            .arg("-l")
            .arg(&file)
            .output()
            .expect("man (apt-get install man-db)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "man -l {page}: {}", out.status);
        assert!(
            out.stderr.is_empty(),
            "man -l {page} warns:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("NAME") && text.contains("SYNOPSIS"),
            "{page}:\n{text}"
        );
    }
    let main = Command::new("man")
        .env("MANWIDTH", "80")
        .arg("-l")
        .arg(root.join("usr/share/man/man8/nfqwall.8.gz"))
        .output()
        .unwrap();
    let main = String::from_utf8_lossy(&main.stdout);
    for s in ["nfqwall-run(8)", "/etc/nfqwall/nfqwall.toml", "SEE ALSO"] {
        assert!(main.contains(s), "nfqwall(8) lacks {s}:\n{main}");
    }

    // The bash completion loads and completes the subcommands.
    let bash = root.join("usr/share/bash-completion/completions/nfqwall");
    let complete = stdout(Command::new("bash").arg("-c").arg(format!(
        "source '{}' && complete -p nfqwall && COMP_WORDS=(nfqwall r) COMP_CWORD=1 COMP_LINE='nfqwall r' COMP_POINT=9 && _nfqwall nfqwall r nfqwall && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        bash.display()
    )));
    assert!(
        complete.contains("complete") && complete.contains(" nfqwall"),
        "{complete}"
    );
    for sub in ["replay", "rules", "run"] {
        assert!(
            complete.lines().any(|l| l == sub),
            "{sub} not offered:\n{complete}"
        );
    }
    for (shell, file) in [
        ("zsh", "usr/share/zsh/vendor-completions/_nfqwall"),
        ("fish", "usr/share/fish/vendor_completions.d/nfqwall.fish"),
    ] {
        // Parsed by the shell itself where it is installed (neither is by default).
        match Command::new(shell).arg("-n").arg(root.join(file)).output() {
            Ok(out) => assert!(out.status.success(), "{shell} -n {file}: {out:?}"),
            Err(_) => eprintln!("{shell} not installed: {file} not parsed"),
        }
    }

    let _ = std::fs::remove_dir_all(&root);
}

/// Runs the package's maintainer scripts against stubs (systemctl, deb-systemd-helper,
/// deb-systemd-invoke and the binary itself log their arguments) with
/// /run/systemd/system pointed at a scratch directory: what each dpkg action would do.
#[test]
fn maintainer_scripts_start_nothing_and_remove_the_rules() {
    let Some(deb) = package() else { return };
    let dir = scratch("deb-scripts");
    let ctrl = dir.join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&ctrl));
    let stubs = dir.join("bin");
    let systemd = dir.join("run-systemd-system");
    std::fs::create_dir_all(&stubs).unwrap();
    std::fs::create_dir_all(&systemd).unwrap();
    let log = dir.join("calls");
    for tool in [
        "systemctl",
        "deb-systemd-helper",
        "deb-systemd-invoke",
        "nfqwall",
    ] {
        // debian-installed/was-enabled answer "no": a first install, never enabled.
        let script = format!(
            "#!/bin/sh\necho \"{tool} $*\" >> '{}'\ncase \"$*\" in *debian-installed*|*was-enabled*) exit 1;; esac\nexit 0\n",
            log.display()
        );
        let path = stubs.join(tool);
        std::fs::write(&path, script).unwrap();
        run(Command::new("chmod").arg("755").arg(&path));
    }
    let path = format!("{}:/usr/bin:/bin", stubs.display());
    let action = |script: &str, args: &[&str]| -> String {
        let _ = std::fs::remove_file(&log);
        let text = std::fs::read_to_string(ctrl.join(script)).unwrap();
        assert!(text.starts_with("#!/bin/sh"), "{script}");
        assert!(!text.contains("#DEBHELPER#"), "{script}: token left");
        let text = text
            .replace("/run/systemd/system", &systemd.display().to_string())
            .replace(
                "/usr/sbin/nfqwall",
                &stubs.join("nfqwall").display().to_string(),
            )
            .replace(
                "/usr/bin/deb-systemd-helper",
                &stubs.join("deb-systemd-helper").display().to_string(),
            );
        let staged = dir.join(format!("{script}.sh"));
        std::fs::write(&staged, text).unwrap();
        run(Command::new("sh")
            .arg(&staged)
            .args(args)
            .env("PATH", &path));
        std::fs::read_to_string(&log).unwrap_or_default()
    };

    // First install: systemd reloaded, nothing enabled, nothing started.
    let calls = action("postinst", &["configure", ""]);
    assert!(
        calls.contains("systemctl --system daemon-reload"),
        "{calls}"
    );
    for bad in [" start", " enable", "restart"] {
        assert!(!calls.contains(bad), "first install ran{bad}:\n{calls}");
    }
    // Upgrade: a running service is restarted, a stopped one stays stopped.
    let calls = action("postinst", &["configure", "0.0.1-1"]);
    assert!(
        calls.contains("deb-systemd-invoke try-restart nfqwall.service"),
        "{calls}"
    );
    assert!(!calls.contains(" start"), "{calls}");
    // Upgrade: prerm neither stops nor touches the rules (postinst restarts).
    let calls = action("prerm", &["upgrade", "0.2.0-1"]);
    assert!(
        !calls.contains("stop") && !calls.contains("rules"),
        "{calls}"
    );
    // Removal: stop (ExecStopPost removes the rules), then remove them defensively.
    let calls = action("prerm", &["remove"]);
    let lines: Vec<&str> = calls.lines().collect();
    let stop = lines
        .iter()
        .position(|l| *l == "deb-systemd-invoke stop nfqwall.service")
        .unwrap_or_else(|| panic!("no stop:\n{calls}"));
    let remove = lines
        .iter()
        .position(|l| *l == "nfqwall rules remove")
        .unwrap_or_else(|| panic!("no rules remove:\n{calls}"));
    assert!(stop < remove, "{calls}");
    // postrm (the binary is gone by then): systemd reloaded, no rules command.
    let calls = action("postrm", &["remove"]);
    assert!(
        calls.contains("systemctl --system daemon-reload"),
        "{calls}"
    );
    assert!(!calls.contains("nfqwall "), "{calls}");
    let calls = action("postrm", &["purge"]);
    assert!(
        calls.contains("deb-systemd-helper purge nfqwall.service"),
        "{calls}"
    );

    let _ = std::fs::remove_dir_all(&dir);
}

/// One unit, two installs: systemd/install.sh (source, PREFIX /usr/local) installs the
/// package's unit with only the binary's path in the Exec lines changed.
#[test]
fn install_script_unit_is_the_package_unit_with_its_prefix() {
    let root = scratch("install-unit");
    run(Command::new("sh")
        .arg(Path::new(ROOT).join("systemd/install.sh"))
        .env("DESTDIR", &root)
        .env_remove("PREFIX")
        .env("NFQWALL_BIN", BIN));
    let source = std::fs::read_to_string(Path::new(ROOT).join("systemd/nfqwall.service")).unwrap();
    let installed =
        std::fs::read_to_string(root.join("etc/systemd/system/nfqwall.service")).unwrap();
    assert_eq!(source.lines().count(), installed.lines().count());
    let mut changed = 0;
    for (s, i) in source.lines().zip(installed.lines()) {
        if s != i {
            changed += 1;
            assert!(s.starts_with("Exec"), "{s} -> {i}");
            assert_eq!(s.replace("/usr/sbin/nfqwall", "/usr/local/sbin/nfqwall"), i);
        }
    }
    assert_eq!(changed, 3, "ExecStartPre check, ExecStart, ExecStopPost");
    assert!(root.join("usr/local/sbin/nfqwall").exists());
    assert!(root.join("usr/local/share/man/man8/nfqwall.8").exists());
    let _ = std::fs::remove_dir_all(&root);
}
