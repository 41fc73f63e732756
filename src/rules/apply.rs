//! Running the planned transactions: `iptables-save` to read, `iptables-restore
//! --noflush` to write, for the nf_tables or the legacy backend.
//!
//! Each family is one restore transaction, atomic in itself. Both transactions are
//! first run with `--test` (parsed and built, not committed) and only then committed,
//! so a transaction the tool rejects leaves both families untouched. The legacy tool
//! checks everything in `--test`; iptables-nft leaves some checks to the kernel at
//! commit (e.g. deleting a chain another rule still jumps to), so there an IPv6 commit
//! can still fail after the IPv4 one succeeded; the error then says which command failed.

use std::fmt;
use std::io::Write;
use std::process::{Command, Stdio};

use super::save::{plan_install, plan_remove, SaveState};
use super::{Family, Ruleset};

/// Which iptables implementation to drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// iptables-nft: the nf_tables kernel API (`iptables-nft-restore`).
    Nft,
    /// iptables-legacy: the x_tables kernel API (`iptables-legacy-restore`).
    Legacy,
}

/// What went wrong running iptables.
#[derive(Debug)]
pub enum RulesError {
    /// The command could not be started (not installed?).
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// The command ran and failed.
    Failed {
        /// The command line.
        command: String,
        /// Its exit status, as displayed.
        status: String,
        /// Its standard error, trimmed.
        stderr: String,
        /// For a restore transaction: the line its error names, as written.
        line: Option<String>,
    },
    /// `iptables -V` names neither backend.
    UnknownBackend {
        /// What `iptables -V` printed.
        version: String,
    },
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RulesError::Spawn { command, source } => {
                write!(f, "cannot run `{command}`: {source} (is iptables installed?)")
            }
            RulesError::Failed {
                command,
                status,
                stderr,
                line,
            } => {
                write!(f, "`{command}` failed ({status}): {stderr}")?;
                match line {
                    Some(l) => write!(f, " [the failing line: {l}]"),
                    None => Ok(()),
                }
            }
            RulesError::UnknownBackend { version } => write!(
                f,
                "cannot tell the backend from `iptables -V` ({version:?}): pass --backend nft or --backend legacy"
            ),
        }
    }
}

impl std::error::Error for RulesError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RulesError::Spawn { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Backend {
    /// The backend the plain `iptables` command uses, from `iptables -V`
    /// ("iptables v1.8.9 (nf_tables)" or "... (legacy)").
    pub fn detect() -> Result<Backend, RulesError> {
        let out = run(Command::new("iptables").arg("-V"), None)?;
        Backend::from_version(&out).ok_or(RulesError::UnknownBackend {
            version: out.trim().to_string(),
        })
    }

    /// Reads the backend from `iptables -V` output.
    pub fn from_version(version: &str) -> Option<Backend> {
        if version.contains("(nf_tables)") {
            Some(Backend::Nft)
        } else if version.contains("(legacy)") {
            Some(Backend::Legacy)
        } else {
            None
        }
    }

    /// "nft" or "legacy".
    pub fn name(self) -> &'static str {
        match self {
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
        }
    }

    /// The command for `tool` ("save" or "restore") of `family`, e.g. `ip6tables-nft-save`.
    pub fn command(self, family: Family, tool: &str) -> String {
        let base = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        format!("{base}-{}-{tool}", self.name())
    }

    /// Reads the current ruleset of `family`.
    pub fn save(self, family: Family) -> Result<SaveState, RulesError> {
        let out = run(&mut Command::new(self.command(family, "save")), None)?;
        Ok(SaveState::parse(&out))
    }

    /// Feeds `script` to `restore --noflush` (`--test` only checks it).
    pub fn restore(self, family: Family, script: &str, test: bool) -> Result<(), RulesError> {
        let mut cmd = Command::new(self.command(family, "restore"));
        cmd.args(["--noflush", "--wait"]);
        if test {
            cmd.arg("--test");
        }
        run(&mut cmd, Some(script))
            .map(|_| ())
            .map_err(|e| match e {
                RulesError::Failed {
                    command,
                    status,
                    stderr,
                    ..
                } => {
                    let line = failing_line(&stderr, script);
                    RulesError::Failed {
                        command,
                        status,
                        stderr,
                        line,
                    }
                }
                e => e,
            })
    }
}

/// Reads the counter of nfqwall's "queued, not judged" rule in `filter`, summed over
/// both families (`None` if neither could be read).
pub fn read_unjudged(backend: Backend) -> Option<u64> {
    let mut total = None;
    for family in super::Family::ALL {
        let mut cmd = Command::new(backend.command(family, "save"));
        cmd.args(["-c", "-t", "filter"]);
        let Ok(out) = run(&mut cmd, None) else {
            continue;
        };
        let n = unjudged_in_save(&out);
        total = Some(total.unwrap_or(0) + n);
    }
    total
}

/// The packet count of the "queued, not judged" rule in `iptables-save -c` output.
pub fn unjudged_in_save(text: &str) -> u64 {
    let needle = format!("--comment \"{}\"", super::UNJUDGED_COMMENT);
    text.lines()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| {
            let counts = l.strip_prefix('[')?.split(']').next()?;
            counts.split(':').next()?.parse::<u64>().ok()
        })
        .sum()
}

/// The script line an iptables-restore error names ("line 5 failed", "Error occurred
/// at line: 3", "line 5: CHAIN_DEL failed"), as written.
pub fn failing_line(stderr: &str, script: &str) -> Option<String> {
    let rest = stderr.split("line").skip(1).find_map(|after| {
        let digits: String = after
            .trim_start_matches([':', ' '])
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse::<usize>().ok()
    })?;
    script
        .lines()
        .nth(rest.checked_sub(1)?)
        .map(|l| l.trim().to_string())
}

/// Runs `cmd` (feeding `stdin` if given); its stdout, or an error naming the command
/// and its stderr.
fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<String, RulesError> {
    let command = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let spawn_err = |source| RulesError::Spawn {
        command: command.clone(),
        source,
    };
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A write error means the child exited early; its status and stderr say why.
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(RulesError::Failed {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            line: None,
        })
    }
}

/// One family's planned transaction; `None` when nothing changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The family.
    pub family: Family,
    /// The text for `restore --noflush`, or `None`.
    pub script: Option<String>,
}

/// Plans the install of `rulesets` (one per family) against what is installed now.
pub fn plan_install_all(backend: Backend, rulesets: &[Ruleset]) -> Result<Vec<Plan>, RulesError> {
    rulesets
        .iter()
        .map(|r| {
            let state = backend.save(r.family)?;
            Ok(Plan {
                family: r.family,
                script: plan_install(r, &state),
            })
        })
        .collect()
}

/// Plans the removal of nfqwall's chains from both families.
pub fn plan_remove_all(backend: Backend) -> Result<Vec<Plan>, RulesError> {
    Family::ALL
        .iter()
        .map(|&family| {
            let state = backend.save(family)?;
            Ok(Plan {
                family,
                script: plan_remove(&state, family),
            })
        })
        .collect()
}

/// Tests every planned transaction, then commits them, one per family.
pub fn execute(backend: Backend, plans: &[Plan]) -> Result<(), RulesError> {
    for p in plans {
        if let Some(s) = &p.script {
            backend.restore(p.family, s, true)?;
        }
    }
    for p in plans {
        if let Some(s) = &p.script {
            backend.restore(p.family, s, false)?;
        }
    }
    Ok(())
}
