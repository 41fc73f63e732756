//! Generates nfqwall's man pages (clap_mangen) and shell completions (clap_complete)
//! from the clap definitions in `src/cli`, into `doc/`, where `cargo deb` and
//! `systemd/install.sh` take them from.
//!
//!     cargo run --example gen_docs            # rewrite doc/man and doc/completions
//!     cargo run --example gen_docs -- --check # exit 1 if they are stale
//!
//! `tests/package.rs` fails when the committed files differ from what this renders,
//! so the clap definitions stay the one source. The generators are dev-dependencies:
//! the `nfqwall` binary does not link them. (The CLI is included by path, as
//! `src/main.rs` includes it; only `Cli::command()` is used here.)

#[allow(dead_code)]
#[path = "../src/cli/mod.rs"]
mod cli;

use clap::CommandFactory;
use clap_complete::Shell;
use std::path::{Path, PathBuf};

/// Man page section: nfqwall is a system administration command.
const SECTION: &str = "8";

/// Extra sections of nfqwall(8): what the package and the unit add around the CLI.
const MAIN_EXTRA: &str = r#".SH FILES
.TP
\fI/etc/nfqwall/nfqwall.toml\fR
The configuration read by the systemd unit (a copy of the built-in default,
printed by \fBnfqwall config \-\-default\fR: log\-only, NFQUEUE 0, every TCP
service). Checked with \fBnfqwall check\fR before the service starts.
.TP
\fI/run/nfqwall/\fR
The stats socket read by \fBnfqwall stats\fR, and the record of the tables the
rules install created, which \fBnfqwall rules remove\fR deletes if empty.
.TP
\fI/usr/lib/systemd/system/nfqwall.service\fR
The unit: \fBsystemctl start nfqwall\fR runs \fBnfqwall run\fR on the file above;
its rules are removed after any exit; \fBsystemctl reload nfqwall\fR applies a new
config and ruleset atomically, or none.
.SH EXIT STATUS
0 on success; 1 on any error, which is printed once on standard error.
.SH SEE ALSO
\fBnfqwall\-run\fR(8), \fBnfqwall\-rules\fR(8), \fBnfqwall\-replay\fR(8),
\fBnfqwall\-stats\fR(8), \fBnfqwall\-report\fR(8), \fBiptables\fR(8), \fBsystemctl\fR(1),
\fI/usr/share/doc/nfqwall/README.md\fR
"#;

/// Every generated file: its path under `doc/` and its contents.
pub fn files() -> Vec<(PathBuf, Vec<u8>)> {
    let mut cmd = cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    man_pages(&cmd, &mut out);
    for (shell, name) in [
        (Shell::Bash, "nfqwall.bash"),
        (Shell::Zsh, "_nfqwall"),
        (Shell::Fish, "nfqwall.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "nfqwall", &mut buf);
        out.push((PathBuf::from("completions").join(name), buf));
    }
    out
}

/// nfqwall(8) and one page per (nested) subcommand: nfqwall-run(8),
/// nfqwall-rules-install(8), ... (the names clap_mangen's SUBCOMMANDS lists use).
fn man_pages(cmd: &clap::Command, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    let man = clap_mangen::Man::new(cmd.clone())
        .section(SECTION)
        .source(concat!("nfqwall ", env!("CARGO_PKG_VERSION")))
        .manual("System Administration");
    let mut buf = Vec::new();
    man.render(&mut buf).expect("render to memory");
    if cmd.get_name() == "nfqwall" {
        buf.extend_from_slice(MAIN_EXTRA.as_bytes());
    }
    out.push((PathBuf::from("man").join(man.get_filename()), buf));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, out);
    }
}

/// The files under `dir` that differ from what [`files`] renders, or are missing.
pub fn stale(dir: &Path) -> Vec<PathBuf> {
    files()
        .into_iter()
        .filter(|(rel, data)| std::fs::read(dir.join(rel)).ok().as_deref() != Some(&data[..]))
        .map(|(rel, _)| rel)
        .collect()
}

/// The committed copy.
pub fn doc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("doc")
}

fn main() -> std::process::ExitCode {
    let dir = doc_dir();
    if std::env::args().any(|a| a == "--check") {
        let stale = stale(&dir);
        for f in &stale {
            eprintln!("stale: doc/{}", f.display());
        }
        return if stale.is_empty() {
            std::process::ExitCode::SUCCESS
        } else {
            eprintln!("run: cargo run --example gen_docs");
            std::process::ExitCode::FAILURE
        };
    }
    for sub in ["man", "completions"] {
        let _ = std::fs::remove_dir_all(dir.join(sub));
    }
    for (rel, data) in files() {
        let path = dir.join(&rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, data).unwrap();
        println!("doc/{}", rel.display());
    }
    std::process::ExitCode::SUCCESS
}
