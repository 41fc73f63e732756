//! Install and removal that leave the kernel as they found it.
//!
//! [`Lifecycle`] drives the planned transactions ([`super::apply`]) and keeps track of
//! what nfqwall's install brought into being beyond its own chains: with the nf_tables
//! backend, iptables-nft creates a table (`table ip filter`, `table ip6 raw`, ...) the
//! first time a transaction writes to it, and removing nfqwall's chains leaves that
//! table behind, empty but listed by `iptables-save` and `nft list tables`. So:
//!
//! - at install, the tables a committed transaction created (it writes to them and
//!   `iptables-save` did not list them before) are recorded, in memory and in a state
//!   file ([`state_file`], under `/run/nfqwall` or `$NFQWALL_STATE_DIR`, one per network
//!   namespace), so that a separate `nfqwall rules remove` (the unit's `ExecStopPost`)
//!   knows them too;
//! - at removal, after nfqwall's jumps and chains are gone, each recorded table that
//!   still holds nothing (`nft -j list table`: only built-in base chains with policy
//!   accept, no rule, set, map or other object; [`nft_table_is_empty`]) is deleted with
//!   `nft delete table`. A table something else put anything into stays.
//! - a partial install that [`super::apply::execute`] rolled back gets the tables its
//!   committed half created deleted the same way.
//!
//! The legacy backend (x_tables) has no such table life cycle: a table is instantiated
//! in a network namespace by the first use of its module and stays listed in
//! `/proc/net/ip_tables_names` (and by `iptables-legacy-save`, empty) until the
//! namespace goes; nothing is recorded or deleted there.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::apply::{self, Backend, Plan, RulesError};
use super::{command, Family, Ruleset};

/// Default directory of the state file (the unit's `RuntimeDirectory`).
pub const DEFAULT_STATE_DIR: &str = "/run/nfqwall";

/// Environment variable that moves the state directory (tests, other layouts).
pub const STATE_DIR_ENV: &str = "NFQWALL_STATE_DIR";

/// The state directory: `$NFQWALL_STATE_DIR` if set, else [`DEFAULT_STATE_DIR`].
pub fn default_state_dir() -> PathBuf {
    std::env::var_os(STATE_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

/// The state file in `dir` for this process's network namespace (named after the
/// namespace's inode, so nfqwall in two namespaces never reads the other's record).
pub fn state_file(dir: &Path) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let ns = std::fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino().to_string())
        .unwrap_or_else(|_| "unknown".into());
    dir.join(format!("created-tables.net{ns}"))
}

/// nftables' name for the family's table space: `ip` or `ip6`.
pub fn nft_family(family: Family) -> &'static str {
    match family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}

/// Tables nfqwall's install created, as (`ip`|`ip6`, table name).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreatedTables(BTreeSet<(String, String)>);

impl CreatedTables {
    /// Parses the state file: one `FAMILY TABLE` per line, `#` comments; other lines
    /// are skipped.
    pub fn parse(text: &str) -> CreatedTables {
        let mut set = BTreeSet::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('#') {
                continue;
            }
            let mut w = line.split_whitespace();
            if let (Some(f @ ("ip" | "ip6")), Some(t), None) = (w.next(), w.next(), w.next()) {
                if t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    set.insert((f.to_string(), t.to_string()));
                }
            }
        }
        CreatedTables(set)
    }

    /// The state file's text.
    pub fn to_text(&self) -> String {
        let mut t = String::from(
            "# nfqwall: tables its rules install created; `nfqwall rules remove` deletes each\n\
             # one that is still empty once nfqwall's chains are gone.\n",
        );
        for (f, n) in &self.0 {
            t.push_str(&format!("{f} {n}\n"));
        }
        t
    }

    /// Records `table` of `family`.
    pub fn insert(&mut self, family: Family, table: &str) {
        self.0
            .insert((nft_family(family).to_string(), table.to_string()));
    }

    /// Adds every entry of `other`.
    pub fn extend(&mut self, other: &CreatedTables) {
        self.0.extend(other.0.iter().cloned());
    }

    /// Returns true if and only if nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries, as (`ip`|`ip6`, table), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(f, t)| (f.as_str(), t.as_str()))
    }
}

/// Whether `nft -j list table FAMILY NAME` output shows a table that holds nothing:
/// `Ok(())` if its only objects are built-in base chains (named after their hook, as
/// iptables-nft makes them) with policy accept; otherwise why it is not empty.
pub fn nft_table_is_empty(json: &str) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("unreadable nft output: {e}"))?;
    let items = v
        .get("nftables")
        .and_then(|i| i.as_array())
        .ok_or("unreadable nft output: no \"nftables\" array")?;
    for item in items {
        let Some(obj) = item.as_object() else {
            return Err("unreadable nft output: an item is not an object".into());
        };
        for (kind, body) in obj {
            match kind.as_str() {
                "metainfo" | "table" => {}
                "chain" => {
                    let name = body.get("name").and_then(|n| n.as_str()).unwrap_or("");
                    let hook = body.get("hook").and_then(|n| n.as_str());
                    let policy = body.get("policy").and_then(|n| n.as_str());
                    if hook.is_none_or(|h| !h.eq_ignore_ascii_case(name)) {
                        return Err(format!("it has a chain {name} nfqwall did not make"));
                    }
                    if policy != Some("accept") {
                        return Err(format!(
                            "its chain {name} has policy {}",
                            policy.unwrap_or("none")
                        ));
                    }
                }
                "rule" => {
                    let chain = body.get("chain").and_then(|n| n.as_str()).unwrap_or("?");
                    return Err(format!("its chain {chain} has a rule"));
                }
                other => return Err(format!("it holds a {other}")),
            }
        }
    }
    Ok(())
}

/// What happened to one recorded table at removal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableOutcome {
    /// It was empty and is deleted.
    Deleted,
    /// It no longer exists (deleted by someone else).
    Gone,
    /// It stays, for this reason.
    Kept(String),
}

/// Install, replace and removal of nfqwall's rules, with the tables they create.
pub struct Lifecycle {
    backend: Backend,
    state_path: PathBuf,
    created: CreatedTables,
    notes: Vec<String>,
}

impl Lifecycle {
    /// A lifecycle driving `backend`, with its state file in `state_dir`.
    pub fn new(backend: Backend, state_dir: &Path) -> Lifecycle {
        Lifecycle {
            backend,
            state_path: state_file(state_dir),
            created: CreatedTables::default(),
            notes: Vec::new(),
        }
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The state file.
    pub fn state_path(&self) -> &Path {
        &self.state_path
    }

    /// The tables recorded as created by nfqwall (memory and state file).
    pub fn created(&mut self) -> &CreatedTables {
        self.load();
        &self.created
    }

    /// What was done besides the transactions (tables deleted or kept, state file
    /// trouble), one sentence each, since the last call.
    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    fn load(&mut self) {
        match std::fs::read_to_string(&self.state_path) {
            Ok(t) => self.created.extend(&CreatedTables::parse(&t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => self.notes.push(format!(
                "cannot read the state file {}: {e}",
                self.state_path.display()
            )),
        }
    }

    fn store(&mut self) {
        let path = self.state_path.clone();
        let result = if self.created.is_empty() {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                r => r,
            }
        } else {
            write_private(&path, &self.created.to_text())
        };
        if let Err(e) = result {
            self.notes.push(format!(
                "cannot update the state file {}: {e} (a separate `nfqwall rules remove` will not know which tables nfqwall created)",
                path.display()
            ));
        }
    }

    /// Plans and commits the install of `rulesets` (one per family); a partial commit
    /// is rolled back. Install over an installed ruleset replaces it.
    pub fn install(&mut self, rulesets: &[Ruleset]) -> Result<(), RulesError> {
        let plans = apply::plan_install_all(self.backend, rulesets)?;
        self.commit(&plans)
    }

    /// Commits `plans` ([`apply::execute`]), recording the tables they created; on a
    /// rollback, deletes the tables the undone half created.
    pub fn commit(&mut self, plans: &[Plan]) -> Result<(), RulesError> {
        self.load();
        let mut undone: Vec<Plan> = Vec::new();
        match apply::execute_with(self.backend, plans, &mut |p| undone.push(p.clone())) {
            Ok(()) => {
                if self.backend == Backend::Nft {
                    for p in plans {
                        for t in p.tables_created() {
                            self.created.insert(p.family, &t);
                        }
                    }
                    self.store();
                }
                Ok(())
            }
            Err(e) => {
                for p in &undone {
                    for t in p.tables_created() {
                        let outcome = self.delete_if_empty(p.family, &t);
                        self.note_outcome(p.family, &t, &outcome, "rollback");
                    }
                }
                Err(e)
            }
        }
    }

    /// Removes nfqwall's jumps and chains from both families, then deletes each table
    /// nfqwall created that is empty now, and forgets them.
    pub fn remove(&mut self) -> Result<(), RulesError> {
        let plans = apply::plan_remove_all(self.backend)?;
        apply::execute(self.backend, &plans)?;
        self.delete_created_tables();
        Ok(())
    }

    /// Deletes the recorded tables that hold nothing, keeps the others, and forgets all
    /// of them (a kept table is someone else's now).
    pub fn delete_created_tables(&mut self) {
        self.load();
        let recorded: Vec<(Family, String)> = self
            .created
            .iter()
            .filter_map(|(f, t)| {
                let family = Family::ALL.into_iter().find(|&x| nft_family(x) == f)?;
                Some((family, t.to_string()))
            })
            .collect();
        for (family, table) in recorded {
            let outcome = self.delete_if_empty(family, &table);
            self.note_outcome(family, &table, &outcome, "removal");
        }
        self.created = CreatedTables::default();
        self.store();
    }

    fn note_outcome(&mut self, family: Family, table: &str, outcome: &TableOutcome, when: &str) {
        let name = format!("table {} {table}", nft_family(family));
        self.notes.push(match outcome {
            TableOutcome::Deleted => {
                format!("{when}: deleted {name}: nfqwall's install created it and it is empty now")
            }
            TableOutcome::Gone => format!("{when}: {name} (created by nfqwall) is already gone"),
            TableOutcome::Kept(why) => {
                format!("{when}: kept {name}, which nfqwall's install created: {why}")
            }
        });
    }

    /// Deletes `table` of `family` if it holds nothing (nf_tables only).
    pub fn delete_if_empty(&mut self, family: Family, table: &str) -> TableOutcome {
        if self.backend != Backend::Nft {
            return TableOutcome::Kept("x_tables cannot delete a table".into());
        }
        let fam = nft_family(family);
        let listed = command::run(
            Command::new("nft").args(["-j", "list", "table", fam, table]),
            None,
        );
        let json = match listed {
            Ok(j) => j,
            Err(RulesError::Failed { stderr, .. }) if stderr.contains("No such file") => {
                return TableOutcome::Gone
            }
            Err(RulesError::Spawn { .. }) => {
                return TableOutcome::Kept(
                    "the `nft` command is missing (install nftables so nfqwall can delete it)"
                        .into(),
                )
            }
            Err(e) => return TableOutcome::Kept(e.to_string()),
        };
        if let Err(why) = nft_table_is_empty(&json) {
            return TableOutcome::Kept(format!("something else uses it ({why})"));
        }
        match command::run(
            Command::new("nft").args(["delete", "table", fam, table]),
            None,
        ) {
            Ok(_) => TableOutcome::Deleted,
            Err(e) => TableOutcome::Kept(e.to_string()),
        }
    }
}

/// Writes `text` to `path` (directory 0700 and file 0600, created if missing) through a
/// temporary file and a rename, so a reader never sees half a file.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_file_roundtrip_and_junk() {
        let mut c = CreatedTables::default();
        c.insert(Family::V6, "filter");
        c.insert(Family::V4, "mangle");
        c.insert(Family::V4, "filter");
        let text = c.to_text();
        assert!(
            text.ends_with("ip filter\nip mangle\nip6 filter\n"),
            "{text}"
        );
        assert_eq!(CreatedTables::parse(&text), c);
        let junk =
            CreatedTables::parse("inet nfqwall\nip\nip filter extra\nip fil;ter\n\nip raw\n");
        assert_eq!(junk.iter().collect::<Vec<_>>(), [("ip", "raw")]);
    }

    #[test]
    fn state_file_lives_in_the_dir_per_namespace() {
        let p = state_file(Path::new("/x/y"));
        assert_eq!(p.parent(), Some(Path::new("/x/y")));
        assert!(p
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("created-tables.net"));
    }

    use crate::rules::save::{plan_target, tables_created, SaveState};
    use crate::rules::OwnChain;

    const FOUND: &str = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
        :NFQWALL-IN - [0:0]\n-A INPUT -j NFQWALL-IN\n-A INPUT -s 203.0.113.9/32 -j DROP\n\
        -A NFQWALL-IN -p tcp -j NFQUEUE --queue-num 0\nCOMMIT\n";

    #[test]
    fn created_tables_are_the_ones_written_and_not_found() {
        let before = SaveState::parse(FOUND);
        let script = "# x\n*raw\n:NFQWALL-RAW-PRE - [0:0]\nCOMMIT\n*mangle\n:A - [0:0]\nCOMMIT\n*filter\n-F NFQWALL-IN\nCOMMIT\n";
        assert_eq!(tables_created(&before, script), ["raw", "mangle"]);
        assert!(tables_created(&SaveState::default(), "# nothing\n").is_empty());
    }

    #[test]
    fn rollback_puts_the_found_own_chains_back() {
        let before = SaveState::parse(FOUND);
        assert_eq!(
            before.own_chains(),
            [(
                OwnChain::In,
                vec!["-A NFQWALL-IN -p tcp -j NFQUEUE --queue-num 0".to_string()]
            )]
        );
        // The new rules were committed: NFQWALL-IN holds something else.
        let now = SaveState::parse(&FOUND.replace("--queue-num 0", "--queue-num 1"));
        let script = plan_target(&before.own_chains(), &now, "# back\n").unwrap();
        assert_eq!(
            script,
            "# back\n*filter\n:NFQWALL-IN - [0:0]\n-A NFQWALL-IN -p tcp -j NFQUEUE --queue-num 0\nCOMMIT\n"
        );
        // Already as found: nothing to do.
        assert_eq!(plan_target(&before.own_chains(), &before, "#\n"), None);
        // A first install rolled back: nfqwall's chain and jump go, the rest stays.
        let found = SaveState::default();
        let script = plan_target(&found.own_chains(), &before, "# back\n").unwrap();
        assert_eq!(
            script,
            "# back\n*filter\n-D INPUT -j NFQWALL-IN\n-F NFQWALL-IN\n-X NFQWALL-IN\nCOMMIT\n"
        );
    }

    #[test]
    fn saved_policies_tell_an_empty_table() {
        let s = SaveState::parse(FOUND);
        assert!(!s.table_is_empty("filter"));
        let e = SaveState::parse("*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n");
        assert!(e.table_is_empty("raw"));
        assert!(!e.table_is_empty("mangle"));
    }

    const META: &str = r#"{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}"#;
    const TABLE: &str = r#"{"table": {"family": "ip", "name": "filter", "handle": 1}}"#;

    fn listing(items: &[&str]) -> String {
        let mut all = vec![META, TABLE];
        all.extend_from_slice(items);
        format!("{{\"nftables\": [{}]}}", all.join(", "))
    }

    fn base(name: &str, policy: &str) -> String {
        format!(
            r#"{{"chain": {{"family": "ip", "table": "filter", "name": "{name}", "handle": 2, "type": "filter", "hook": "{}", "prio": 0, "policy": "{policy}"}}}}"#,
            name.to_lowercase()
        )
    }

    #[test]
    fn empty_tables_are_recognised() {
        // What iptables-nft leaves after nfqwall's chains are removed (measured).
        assert_eq!(
            nft_table_is_empty(&listing(&[&base("INPUT", "accept")])),
            Ok(())
        );
        assert_eq!(nft_table_is_empty(&listing(&[])), Ok(()));
        assert_eq!(
            nft_table_is_empty(&listing(&[
                &base("INPUT", "accept"),
                &base("OUTPUT", "accept")
            ])),
            Ok(())
        );
    }

    #[test]
    fn anything_else_keeps_the_table() {
        let drop = nft_table_is_empty(&listing(&[&base("INPUT", "drop")])).unwrap_err();
        assert!(drop.contains("policy drop"), "{drop}");
        let rule = r#"{"rule": {"family": "ip", "table": "filter", "chain": "INPUT", "handle": 3, "expr": []}}"#;
        let e = nft_table_is_empty(&listing(&[&base("INPUT", "accept"), rule])).unwrap_err();
        assert!(e.contains("INPUT has a rule"), "{e}");
        let user =
            r#"{"chain": {"family": "ip", "table": "filter", "name": "OPERATOR", "handle": 4}}"#;
        let e = nft_table_is_empty(&listing(&[user])).unwrap_err();
        assert!(e.contains("chain OPERATOR"), "{e}");
        let set = r#"{"set": {"family": "ip", "name": "blocked", "table": "filter", "type": "ipv4_addr", "handle": 5}}"#;
        assert!(nft_table_is_empty(&listing(&[set]))
            .unwrap_err()
            .contains("set"));
        assert!(nft_table_is_empty("not json").is_err());
        assert!(nft_table_is_empty("{}").is_err());
    }
}
