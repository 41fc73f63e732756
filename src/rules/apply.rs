//! Running the planned transactions: `iptables-save` to read, `iptables-restore
//! --noflush` to write, for the nf_tables or the legacy backend.
//!
//! Each family is one restore transaction, atomic in itself. Both transactions are
//! first run with `--test` (parsed and built, not committed) and only then committed,
//! so a transaction the tool rejects leaves both families untouched. The legacy tool
//! checks everything in `--test`; iptables-nft leaves some checks to the kernel at
//! commit (e.g. deleting a chain another rule still jumps to), so there an IPv6 commit
//! can still fail after the IPv4 one succeeded. [`execute`] then rolls the committed
//! family back to the own chains its plan found (re-reading the ruleset and planning
//! the way back), and the error ([`RulesError::Partial`]) says what was undone.
//!
//! Every command runs with a bounded wait ([`super::command`]): `--wait N` bounds the
//! wait for the xtables lock, and the process is killed after the command limit.

use std::fmt;
use std::process::Command;
use std::time::Duration;

use super::command;
use super::save::{plan_install, plan_remove, plan_target, SaveState};
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
    /// The command did not exit within its limit; it was killed.
    Timeout {
        /// The command line.
        command: String,
        /// The limit.
        limit: Duration,
        /// What it had written to standard error by then.
        stderr: String,
    },
    /// A transaction failed after another family's had been committed; the committed
    /// ones were rolled back (or the rollback failed too).
    Partial {
        /// The family whose transaction failed.
        family: Family,
        /// Why.
        failed: Box<RulesError>,
        /// The families that had been committed before it.
        committed: Vec<Family>,
        /// `None` if the rollback worked; otherwise why it did not.
        rollback: Option<Box<RulesError>>,
    },
}

impl RulesError {
    /// Returns true if and only if the kernel is known to hold the ruleset it held
    /// before the failed operation (nothing was committed, or the rollback worked).
    pub fn kernel_unchanged(&self) -> bool {
        match self {
            RulesError::Partial { rollback, .. } => rollback.is_none(),
            // Every other error of `execute` comes before the first commit: a killed
            // commit (it may have committed just before) is rolled back as `Partial`.
            _ => true,
        }
    }
}

fn families(f: &[Family]) -> String {
    f.iter().map(|f| f.name()).collect::<Vec<_>>().join(" and ")
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
            RulesError::Timeout {
                command,
                limit,
                stderr,
            } => {
                write!(
                    f,
                    "`{command}` did not finish within {} s and was killed",
                    limit.as_secs_f64()
                )?;
                if !stderr.is_empty() {
                    write!(f, " (stderr so far: {stderr})")?;
                }
                Ok(())
            }
            RulesError::Partial {
                family,
                failed,
                committed,
                rollback,
            } => {
                write!(f, "the {} transaction failed: {failed}; ", family.name())?;
                match rollback {
                    None if committed.is_empty() => write!(
                        f,
                        "it had been cut short, and it was undone: the previous rules are in force"
                    ),
                    None => write!(
                        f,
                        "the {} transaction had already been committed and was rolled back: the previous rules are in force",
                        families(committed)
                    ),
                    Some(e) => write!(
                        f,
                        "the {} transaction had already been committed and rolling it back failed too ({e}): the kernel may hold a mix of old and new rules (run `nfqwall rules remove`)",
                        families(committed)
                    ),
                }
            }
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
        let out = command::run(Command::new("iptables").arg("-V"), None)?;
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
        let out = command::run(&mut Command::new(self.command(family, "save")), None)?;
        Ok(SaveState::parse(&out))
    }

    /// Feeds `script` to `restore --noflush` (`--test` only checks it).
    pub fn restore(self, family: Family, script: &str, test: bool) -> Result<(), RulesError> {
        let mut cmd = Command::new(self.command(family, "restore"));
        cmd.arg("--noflush")
            .arg(format!("--wait={}", command::lock_wait_seconds()));
        if test {
            cmd.arg("--test");
        }
        command::run(&mut cmd, Some(script))
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
        let Ok(out) = super::command::run(&mut cmd, None) else {
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

/// One family's planned transaction; `None` when nothing changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The family.
    pub family: Family,
    /// The text for `restore --noflush`, or `None`.
    pub script: Option<String>,
    /// The ruleset the plan was made against: a rollback restores its own chains.
    pub before: SaveState,
}

impl Plan {
    /// The tables committing this plan creates (nf_tables creates a table on first
    /// use; see [`super::save::tables_created`]).
    pub fn tables_created(&self) -> Vec<String> {
        self.script
            .as_deref()
            .map(|s| super::save::tables_created(&self.before, s))
            .unwrap_or_default()
    }
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
                before: state,
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
                before: state,
            })
        })
        .collect()
}

/// Tests every planned transaction, then commits them, one per family.
///
/// If a commit fails, every family already committed, and the failing one too if its
/// restore was killed (it may have committed just before), is rolled back: its ruleset
/// is read again and the own chains its plan found are put back ([`rollback`]). The
/// error is then [`RulesError::Partial`].
pub fn execute(backend: Backend, plans: &[Plan]) -> Result<(), RulesError> {
    execute_with(backend, plans, &mut |_| {})
}

/// [`execute`], calling `undone` with each plan that was rolled back (the caller
/// deletes the tables that plan created, see [`super::lifecycle`]).
pub fn execute_with(
    backend: Backend,
    plans: &[Plan],
    undone: &mut dyn FnMut(&Plan),
) -> Result<(), RulesError> {
    for p in plans {
        if let Some(s) = &p.script {
            backend.restore(p.family, s, true)?;
        }
    }
    let mut committed: Vec<&Plan> = Vec::new();
    for p in plans {
        let Some(s) = &p.script else { continue };
        match backend.restore(p.family, s, false) {
            Ok(()) => committed.push(p),
            Err(failed) => {
                let maybe_applied = matches!(failed, RulesError::Timeout { .. });
                if committed.is_empty() && !maybe_applied {
                    return Err(failed);
                }
                let mut to_undo: Vec<&Plan> = committed.clone();
                if maybe_applied {
                    to_undo.push(p);
                }
                let mut rollback_error = None;
                for u in to_undo.iter().rev() {
                    match rollback(backend, u) {
                        Ok(()) => undone(u),
                        Err(e) => {
                            rollback_error.get_or_insert(Box::new(e));
                        }
                    }
                }
                return Err(RulesError::Partial {
                    family: p.family,
                    failed: Box::new(failed),
                    committed: committed.iter().map(|c| c.family).collect(),
                    rollback: rollback_error,
                });
            }
        }
    }
    Ok(())
}

/// Puts the own chains of `plan.family` back as `plan.before` had them (none, for a
/// first install; the previous ruleset, for a replace); a no-op if they already are.
pub fn rollback(backend: Backend, plan: &Plan) -> Result<(), RulesError> {
    let now = backend.save(plan.family)?;
    let header = format!(
        "# nfqwall: {} rollback to the rules found before\n",
        plan.family.name()
    );
    match plan_target(&plan.before.own_chains(), &now, &header) {
        Some(script) => backend.restore(plan.family, &script, false),
        None => Ok(()),
    }
}
