//! Reading `iptables-save` output and planning transactions from it, without I/O.
//!
//! The install and remove transactions depend on what is installed now (a jump is
//! added only if absent; a stale own chain is deleted), so they are planned from the
//! parsed save output: [`plan_install`] and [`plan_remove`] return the exact text fed
//! to `iptables-restore --noflush`, or `None` when there is nothing to change.

use std::collections::BTreeMap;

use super::{OwnChain, Ruleset, TABLES};

/// One table of `iptables-save` output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SavedTable {
    /// Declared chains (built-in and user-defined), in save order.
    pub chains: Vec<String>,
    /// Rules, each as printed (`-A CHAIN ...`), in save order.
    pub rules: Vec<String>,
    /// Each declared chain with its policy as printed (`ACCEPT`, `DROP`; `-` for a
    /// user-defined chain), in save order.
    pub policies: Vec<(String, String)>,
}

/// Parsed `iptables-save` output of one family: table name to contents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SaveState {
    /// The tables present, by name.
    pub tables: BTreeMap<String, SavedTable>,
}

impl SaveState {
    /// Parses `iptables-save` (or `ip6tables-save`) output; comments and counters are
    /// ignored, unknown lines skipped.
    pub fn parse(text: &str) -> SaveState {
        let mut state = SaveState::default();
        let mut current: Option<String> = None;
        for line in text.lines() {
            let line = line.trim_end();
            if let Some(name) = line.strip_prefix('*') {
                current = Some(name.to_string());
                state.tables.entry(name.to_string()).or_default();
                continue;
            }
            let Some(table) = current.as_ref().and_then(|t| state.tables.get_mut(t)) else {
                continue;
            };
            if line == "COMMIT" {
                current = None;
            } else if let Some(decl) = line.strip_prefix(':') {
                let mut words = decl.split_whitespace();
                if let Some(name) = words.next() {
                    table.chains.push(name.to_string());
                    let policy = words.next().unwrap_or("-").to_string();
                    table.policies.push((name.to_string(), policy));
                }
            } else if line.starts_with("-A ") {
                table.rules.push(line.to_string());
            } else if line.starts_with('[') {
                // `iptables-save -c`: "[pkts:bytes] -A ...".
                if let Some(i) = line.find("] -A ") {
                    table.rules.push(line[i + 2..].to_string());
                }
            }
        }
        state
    }

    /// Returns true if and only if `chain` exists.
    pub fn has_chain(&self, chain: OwnChain) -> bool {
        self.tables
            .get(chain.table())
            .is_some_and(|t| t.chains.iter().any(|c| c == chain.name()))
    }

    /// The rules of `chain` (`-A NAME ...` lines), in order.
    pub fn chain_rules(&self, chain: OwnChain) -> Vec<&str> {
        let prefix = format!("-A {} ", chain.name());
        self.tables
            .get(chain.table())
            .map(|t| {
                t.rules
                    .iter()
                    .filter(|r| r.starts_with(&prefix))
                    .map(String::as_str)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many times nfqwall's jump to `chain` appears in its built-in chain.
    pub fn jump_count(&self, chain: OwnChain) -> usize {
        let Some(jump) = chain.jump_rule() else {
            return 0;
        };
        self.tables
            .get(chain.table())
            .map(|t| t.rules.iter().filter(|r| **r == jump).count())
            .unwrap_or(0)
    }

    /// Returns true if and only if every own chain is exactly as `ruleset` renders it:
    /// the rendered chains exist with the rendered rules and one jump each, and no other
    /// own chain exists.
    pub fn matches(&self, ruleset: &Ruleset) -> bool {
        self.matches_target(&target_of(ruleset))
    }

    /// [`SaveState::matches`] for any [`Target`].
    pub fn matches_target(&self, target: &Target) -> bool {
        OwnChain::ALL
            .iter()
            .all(|&c| match target_rules(target, c) {
                Some(rules) => {
                    self.has_chain(c)
                        && (c.hook().is_none() || self.jump_count(c) == 1)
                        && self.chain_rules(c) == rules
                }
                None => !self.has_chain(c) && self.jump_count(c) == 0,
            })
    }

    /// The own chains that exist now, each with its rules: what a rollback restores.
    pub fn own_chains(&self) -> Target {
        OwnChain::ALL
            .into_iter()
            .filter(|&c| self.has_chain(c))
            .map(|c| {
                (
                    c,
                    self.chain_rules(c)
                        .into_iter()
                        .map(str::to_string)
                        .collect(),
                )
            })
            .collect()
    }

    /// Returns true if and only if `table` holds nothing: no rule, no user-defined
    /// chain, every built-in chain with policy ACCEPT (as far as `iptables-save` can
    /// tell; with nf_tables, [`super::lifecycle`] asks `nft` itself before deleting).
    pub fn table_is_empty(&self, table: &str) -> bool {
        self.tables
            .get(table)
            .is_some_and(|t| t.rules.is_empty() && t.policies.iter().all(|(_, p)| p == "ACCEPT"))
    }
}

/// What the own chains of one family should hold: each chain that should exist, with
/// its rules in order (possibly none). Chains not listed should not exist.
pub type Target = Vec<(OwnChain, Vec<String>)>;

/// The target `ruleset` renders: its chains that have rules.
pub fn target_of(ruleset: &Ruleset) -> Target {
    OwnChain::ALL
        .into_iter()
        .filter(|&c| ruleset.has(c))
        .map(|c| (c, ruleset.rules(c).to_vec()))
        .collect()
}

fn target_rules(target: &Target, chain: OwnChain) -> Option<&[String]> {
    target
        .iter()
        .find(|(c, _)| *c == chain)
        .map(|(_, r)| r.as_slice())
}

/// The tables a restore `script` writes to (`*table` lines), in order.
pub fn script_tables(script: &str) -> Vec<String> {
    script
        .lines()
        .filter_map(|l| l.strip_prefix('*'))
        .map(|t| t.trim().to_string())
        .collect()
}

/// The tables committing `script` creates: those it writes to that `before` lacks.
/// (`iptables-save` prints exactly the tables that exist; `--test` creates none.)
pub fn tables_created(before: &SaveState, script: &str) -> Vec<String> {
    script_tables(script)
        .into_iter()
        .filter(|t| !before.tables.contains_key(t))
        .collect()
}

/// Lines that delete nfqwall's jumps to `chain`, then the chain itself.
fn delete_lines(state: &SaveState, chain: OwnChain, out: &mut Vec<String>) {
    if let Some(hook) = chain.hook() {
        for _ in 0..state.jump_count(chain) {
            out.push(format!("-D {hook} -j {}", chain.name()));
        }
    }
    if state.has_chain(chain) {
        out.push(format!("-F {}", chain.name()));
        out.push(format!("-X {}", chain.name()));
    }
}

/// Wraps per-table lines in `*table ... COMMIT`; `None` if no table has any.
fn transaction(header: &str, per_table: BTreeMap<&str, Vec<String>>) -> Option<String> {
    if per_table.values().all(Vec::is_empty) {
        return None;
    }
    let mut t = String::from(header);
    for table in TABLES {
        let Some(lines) = per_table.get(table).filter(|l| !l.is_empty()) else {
            continue;
        };
        t.push('*');
        t.push_str(table);
        t.push('\n');
        for l in lines {
            t.push_str(l);
            t.push('\n');
        }
        t.push_str("COMMIT\n");
    }
    Some(t)
}

/// The `iptables-restore --noflush` transaction that makes the own chains of `state`
/// equal to `ruleset`; `None` if they already are.
///
/// Rendered chains are declared (which creates them, or flushes them if they exist)
/// and refilled; a jump is added only if absent, and extra copies of it are deleted;
/// own chains the ruleset no longer renders are unhooked, flushed and deleted. All
/// in one transaction: the kernel sees the old ruleset or the new one, never a mix.
pub fn plan_install(ruleset: &Ruleset, state: &SaveState) -> Option<String> {
    let header = format!(
        "# nfqwall rules install: {} transaction\n",
        ruleset.family.name()
    );
    plan_target(&target_of(ruleset), state, &header)
}

/// The transaction that makes the own chains of `state` equal to `target`, as
/// [`plan_install`] does for a rendered ruleset (a rollback uses it to put back the
/// own chains a failed transaction found); `None` if they already are.
pub fn plan_target(target: &Target, state: &SaveState, header: &str) -> Option<String> {
    if state.matches_target(target) {
        return None;
    }
    let wanted: Vec<OwnChain> = OwnChain::ALL
        .into_iter()
        .filter(|&c| target_rules(target, c).is_some())
        .collect();
    let mut per_table: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for chain in OwnChain::ALL {
        let lines = per_table.entry(chain.table()).or_default();
        if wanted.contains(&chain) {
            lines.push(format!(":{} - [0:0]", chain.name()));
        } else {
            delete_lines(state, chain, lines);
        }
    }
    for &chain in &wanted {
        let lines = per_table.entry(chain.table()).or_default();
        lines.extend(
            target_rules(target, chain)
                .unwrap_or_default()
                .iter()
                .cloned(),
        );
    }
    for &chain in &wanted {
        let Some(hook) = chain.hook() else {
            continue;
        };
        let lines = per_table.entry(chain.table()).or_default();
        match state.jump_count(chain) {
            0 => lines.push(format!("-I {hook} -j {}", chain.name())),
            n => {
                for _ in 1..n {
                    lines.push(format!("-D {hook} -j {}", chain.name()));
                }
            }
        }
    }
    transaction(header, per_table)
}

/// The transaction that deletes nfqwall's jumps and own chains from `state`, and
/// nothing else; `None` if none is installed.
pub fn plan_remove(state: &SaveState, family: super::Family) -> Option<String> {
    let mut per_table: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for chain in OwnChain::ALL {
        delete_lines(state, chain, per_table.entry(chain.table()).or_default());
    }
    let header = format!("# nfqwall rules remove: {} transaction\n", family.name());
    transaction(&header, per_table)
}
