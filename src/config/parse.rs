//! The hand-written walk from a span-preserving TOML document to a [`Config`].
//!
//! Each table first rejects keys it does not know, then reads its fields; each field
//! carries its path and source span so any error can say file:line:column and which
//! field. Only the first error is reported: later ones are often consequences.

use std::net::IpAddr;
use std::ops::Range;
use std::path::PathBuf;

use ipnet::IpNet;
use toml_edit::{ImDocument, Item, Table, TableLike, Value};

use super::error::{ConfigError, Problem};
use super::{
    host_net, without_host_bits, Config, DaemonConfig, EngineConfig, InterfaceMatch, LengthRange,
    LogTarget, PortRange, Protocol, QueueRange, RateLimit, RatePeriod, Rule, RuleAction, Service,
    TcpFlagMatch, Timeouts, Track,
};
use super::{BusyPoll, FailOpenInvalid, Journald, LogFormat, SheddingPolicy};
use crate::engine::meta::CtState;
use crate::engine::policy::{Action, Mode};

type Span = Option<Range<usize>>;
type Result<T> = std::result::Result<T, ConfigError>;

const ROOT_KEYS: &[&str] = &["daemon", "engine", "service"];
const DAEMON_KEYS: &[&str] = &[
    "mode",
    "queues",
    "queue_maxlen",
    "fail_open",
    "log",
    "log_rate_per_reason",
    "summary_interval",
    "vouch_mark",
    "state_mask",
    "fail_open_invalid",
    "shedding",
    "metrics",
    "log_format",
    "journald",
    "feed_group",
    "feed_size",
    "feed_threshold",
    "busy_poll_us",
    "busy_poll",
];
const ENGINE_KEYS: &[&str] = &["max_flows", "max_peers", "max_rate_sources", "timeouts"];
const TIMEOUT_KEYS: &[&str] = &["syn", "established", "closing", "closed", "udp", "other"];
const SERVICE_KEYS: &[&str] = &[
    "name",
    "protocol",
    "ports",
    "addresses",
    "mode",
    "default",
    "stateless",
    "queue",
    "sack_repair",
    "track",
    "sample",
    "handback",
    "rule",
];
const RULE_KEYS: &[&str] = &[
    "name",
    "action",
    "source",
    "destination",
    "source_ports",
    "destination_ports",
    "tcp_flags",
    "ct_state",
    "interface",
    "length",
    "rate",
    "burst",
    "mark",
];

const EXP_MODE: &str = "\"enforce\" or \"log-only\"";
const EXP_QUEUES: &str = "a queue number or range such as 0 or \"0-3\"";
const EXP_POSITIVE: &str = "an integer from 1 to 4294967295";
const EXP_SECONDS: &str = "a number of seconds from 1 to 4294967295";
const EXP_BOOL: &str = "true or false";
const EXP_SAMPLE: &str = "a sampling rate \"1/N\", N from 1 to 1000000000";
const EXP_LOG: &str = "\"stdout\", \"stderr\" or a file path";
const EXP_TABLE: &str = "a table";
const EXP_SERVICES: &str = "an array of tables such as [[service]]";
const EXP_RULES: &str = "an array of tables such as [[service.rule]]";
const EXP_NAME: &str = "a name of 1 to 32 letters, digits, \"-\", \"_\" or \".\"";
const EXP_PROTOCOL: &str = "\"tcp\", \"udp\", \"icmp\" or \"any\"";
const EXP_PORT: &str = "a port from 0 to 65535 or a range such as \"8000-8080\"";
const EXP_CIDR: &str = "an IPv4 or IPv6 CIDR such as 192.0.2.0/24";
const EXP_DEFAULT: &str = "\"accept\" or \"drop\"";
const EXP_ACTION: &str = "\"accept\", \"drop\" or \"log\"";
const EXP_CT: &str =
    "a conntrack state: \"new\", \"invalid\", \"untracked\", \"established\" or \"related\"";
const EXP_FLAGS: &str = "a comma list of TCP flags such as \"syn,!ack\"";
const EXP_IFACE: &str =
    "an interface name of 1 to 15 characters, with a trailing \"+\" for a prefix, such as \"eth0\" or \"veth+\"";
const EXP_LENGTH: &str = "a length in bytes or a range such as \"0-1500\"";
const EXP_RATE: &str = "a rate such as \"50/s\" or \"600/min\" (at least 1 per s, min or hour)";
const EXP_MARK: &str = "a mark from 0 to 4294967295";
const EXP_RULE_MARK: &str =
    "a mark with none of the bits of daemon.vouch_mark and daemon.state_mask (nfqwall's own)";
const EXP_VOUCH_MARK: &str =
    "a mark with exactly one bit set, outside daemon.state_mask, such as 0x10000000";
const EXP_STATE_MASK: &str =
    "a mask of exactly three adjacent bits, outside daemon.vouch_mark, such as 0x0e000000";
const EXP_FAIL_OPEN_INVALID: &str = "\"host\" or \"accept\"";
const EXP_SHEDDING: &str = "\"auto\", \"always\" or \"never\"";
const EXP_METRICS: &str =
    "an address and port such as \"127.0.0.1:9477\" or \"[::1]:9477\" (port 1 to 65535)";
const EXP_LOG_FORMAT: &str = "\"nfqwall\" or \"eve\"";
const EXP_JOURNALD: &str = "true, false or \"auto\"";
const EXP_TRACK: &str = "\"shadow\" or \"none\"";
const EXP_TRACK_STATELESS: &str =
    "\"none\" (a stateless service has no conntrack state: nothing is ESTABLISHED to feed)";
const EXP_FEED_GROUP: &str = "an NFLOG group from 0 to 65535";
const EXP_FEED_SIZE: &str = "a copy range in bytes from 64 to 65535";
const EXP_FEED_THRESHOLD: &str = "a batch size in packets from 1 to 1024";
const MAX_BUSY_POLL_US: i64 = 1000;
const EXP_BUSY_POLL: &str = "microseconds from 0 to 1000";
const EXP_BUSY_POLL_MODE: &str = "\"adaptive\" or \"always\"";

/// Ids are `u16`, so more services, or rules in one service, cannot be numbered.
const MAX_IDS: usize = u16::MAX as usize;

/// Where errors point: the text (for line and column) and its name.
struct Cx<'t> {
    text: &'t str,
    origin: &'t str,
    /// The mark bits nfqwall's ruleset owns (`daemon.vouch_mark | daemon.state_mask`),
    /// which a rule's `mark` must leave alone; set once `[daemon]` is read.
    reserved_marks: std::cell::Cell<u32>,
}

impl Cx<'_> {
    /// Line and column (both from 1, column in characters) of a byte offset.
    fn position(&self, span: &Span) -> (usize, usize) {
        let offset = span.as_ref().map_or(0, |r| r.start).min(self.text.len());
        // Spans from the parser are char boundaries; fall back to line 1 if not.
        let Some(before) = self.text.get(..offset) else {
            return (1, 1);
        };
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    fn line(&self, span: &Span) -> usize {
        self.position(span).0
    }

    fn invalid(&self, span: &Span, field: &str, problem: Problem) -> ConfigError {
        let (line, column) = self.position(span);
        ConfigError::Invalid {
            origin: self.origin.to_string(),
            line,
            column,
            field: field.to_string(),
            problem,
        }
    }
}

/// Anything a field can hold in a parsed document.
#[derive(Clone, Copy)]
enum Raw<'a> {
    Item(&'a Item),
    Value(&'a Value),
    Table(&'a Table),
}

/// A field: its content, where it is and its path.
#[derive(Clone)]
struct Node<'a> {
    raw: Raw<'a>,
    span: Span,
    path: String,
}

impl<'a> Node<'a> {
    fn value(&self) -> Option<&'a Value> {
        match self.raw {
            Raw::Item(Item::Value(v)) | Raw::Value(v) => Some(v),
            _ => None,
        }
    }

    fn table_like(&self) -> Option<&'a dyn TableLike> {
        match self.raw {
            Raw::Item(i) => i.as_table_like(),
            Raw::Value(v) => v.as_inline_table().map(|t| t as &dyn TableLike),
            Raw::Table(t) => Some(t),
        }
    }

    /// The value as the error message shows it: scalars as TOML, containers by kind.
    fn found(&self) -> String {
        match self.value() {
            Some(Value::String(s)) => format!("{:?}", s.value()),
            Some(Value::Integer(i)) => i.value().to_string(),
            Some(Value::Float(x)) => x.value().to_string(),
            Some(Value::Boolean(b)) => b.value().to_string(),
            Some(Value::Datetime(d)) => d.value().to_string(),
            Some(Value::Array(_)) => "an array".to_string(),
            Some(Value::InlineTable(_)) => "a table".to_string(),
            None => match self.raw {
                Raw::Item(Item::ArrayOfTables(_)) => "an array of tables".to_string(),
                _ => "a table".to_string(),
            },
        }
    }

    fn err(&self, cx: &Cx, problem: Problem) -> ConfigError {
        cx.invalid(&self.span, &self.path, problem)
    }

    fn expected(&self, cx: &Cx, expected: &'static str) -> ConfigError {
        self.err(
            cx,
            Problem::Expected {
                expected,
                found: self.found(),
            },
        )
    }

    fn str(&self, cx: &Cx, expected: &'static str) -> Result<&'a str> {
        match self.value() {
            Some(Value::String(s)) => Ok(s.value().as_str()),
            _ => Err(self.expected(cx, expected)),
        }
    }

    fn int(&self, cx: &Cx, min: i64, max: i64, expected: &'static str) -> Result<i64> {
        match self.value() {
            Some(Value::Integer(i)) if (min..=max).contains(i.value()) => Ok(*i.value()),
            _ => Err(self.expected(cx, expected)),
        }
    }

    fn u32_positive(&self, cx: &Cx, expected: &'static str) -> Result<u32> {
        // The range check makes the conversion exact.
        Ok(self.int(cx, 1, i64::from(u32::MAX), expected)? as u32)
    }

    fn bool(&self, cx: &Cx) -> Result<bool> {
        match self.value() {
            Some(Value::Boolean(b)) => Ok(*b.value()),
            _ => Err(self.expected(cx, EXP_BOOL)),
        }
    }

    /// An array's elements, or the value itself: `ports = 80` means `ports = [80]`.
    fn list(&self) -> Vec<Node<'a>> {
        match self.value() {
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| Node {
                    raw: Raw::Value(v),
                    span: v.span().or_else(|| self.span.clone()),
                    path: format!("{}[{i}]", self.path),
                })
                .collect(),
            _ => vec![self.clone()],
        }
    }

    fn table(&self, cx: &Cx) -> Result<Tab<'a>> {
        match self.table_like() {
            Some(t) => Ok(Tab {
                t,
                span: self.span.clone(),
                path: self.path.clone(),
            }),
            None => Err(self.expected(cx, EXP_TABLE)),
        }
    }

    /// `[[x]]` tables or an array of inline tables.
    fn tables(&self, cx: &Cx, expected: &'static str) -> Result<Vec<Tab<'a>>> {
        let nodes: Vec<Node<'a>> = match (self.raw, self.value()) {
            (Raw::Item(Item::ArrayOfTables(a)), _) => a
                .iter()
                .enumerate()
                .map(|(i, t)| Node {
                    raw: Raw::Table(t),
                    span: t.span().or_else(|| self.span.clone()),
                    path: format!("{}[{i}]", self.path),
                })
                .collect(),
            (_, Some(Value::Array(_))) => self.list(),
            _ => return Err(self.expected(cx, expected)),
        };
        nodes.iter().map(|n| n.table(cx)).collect()
    }
}

/// A table (header table, dotted table or inline table) with its path.
struct Tab<'a> {
    t: &'a dyn TableLike,
    span: Span,
    path: String,
}

impl<'a> Tab<'a> {
    fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn check_keys(&self, cx: &Cx, allowed: &'static [&'static str]) -> Result<()> {
        for (key, _) in self.t.iter() {
            if allowed.contains(&key) {
                continue;
            }
            let span = self
                .t
                .get_key_value(key)
                .and_then(|(k, v)| k.span().or_else(|| v.span()))
                .or_else(|| self.span.clone());
            return Err(cx.invalid(
                &span,
                &self.child_path(key),
                Problem::UnknownKey {
                    key: key.to_string(),
                    allowed,
                },
            ));
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Option<Node<'a>> {
        let (k, item) = self.t.get_key_value(key)?;
        if item.is_none() {
            return None;
        }
        Some(Node {
            raw: Raw::Item(item),
            span: item
                .span()
                .or_else(|| k.span())
                .or_else(|| self.span.clone()),
            path: self.child_path(key),
        })
    }

    fn required(&self, cx: &Cx, key: &'static str) -> Result<Node<'a>> {
        self.get(key)
            .ok_or_else(|| cx.invalid(&self.span, &self.path, Problem::MissingKey { key }))
    }
}

/// Parses and validates `text`.
pub(super) fn parse(text: &str, origin: &str) -> Result<Config> {
    let cx = Cx {
        text,
        origin,
        reserved_marks: std::cell::Cell::new(0),
    };
    let doc = ImDocument::parse(text).map_err(|e| {
        let (line, column) = cx.position(&e.span());
        ConfigError::Syntax {
            origin: origin.to_string(),
            line,
            column,
            message: e.message().trim().replace('\n', "; "),
        }
    })?;
    let root = Tab {
        t: doc.as_table(),
        span: Some(0..0),
        path: String::new(),
    };
    root.check_keys(&cx, ROOT_KEYS)?;
    let mut config = Config::builtin_default();
    config.services.clear();
    if let Some(n) = root.get("daemon") {
        daemon(&cx, &n.table(&cx)?, &mut config.daemon)?;
    }
    cx.reserved_marks
        .set(config.daemon.vouch_mark | config.daemon.state_mask);
    if let Some(n) = root.get("engine") {
        engine(&cx, &n.table(&cx)?, &mut config.engine)?;
    }
    if let Some(n) = root.get("service") {
        let tables = n.tables(&cx, EXP_SERVICES)?;
        let mut seen: Vec<(String, usize)> = Vec::new();
        for (i, t) in tables.iter().enumerate() {
            if i >= MAX_IDS {
                return Err(cx.invalid(
                    &t.span,
                    &t.path,
                    Problem::TooMany {
                        what: "services",
                        max: MAX_IDS,
                    },
                ));
            }
            let (svc, name_node) = service(&cx, t)?;
            check_unique(&cx, &mut seen, &svc.name, &name_node, "service")?;
            config.services.push(svc);
        }
    }
    Ok(config)
}

/// Rejects a second use of `name`; remembers the first.
fn check_unique(
    cx: &Cx,
    seen: &mut Vec<(String, usize)>,
    name: &str,
    node: &Node,
    kind: &'static str,
) -> Result<()> {
    if let Some((_, first_line)) = seen.iter().find(|(n, _)| n == name) {
        return Err(node.err(
            cx,
            Problem::Duplicate {
                kind,
                name: name.to_string(),
                first_line: *first_line,
            },
        ));
    }
    seen.push((name.to_string(), cx.line(&node.span)));
    Ok(())
}

fn daemon(cx: &Cx, t: &Tab, d: &mut DaemonConfig) -> Result<()> {
    t.check_keys(cx, DAEMON_KEYS)?;
    if let Some(n) = t.get("mode") {
        d.mode = mode(cx, &n)?;
    }
    if let Some(n) = t.get("queues") {
        d.queues = queues(cx, &n)?;
    }
    if let Some(n) = t.get("queue_maxlen") {
        d.queue_maxlen = n.u32_positive(cx, EXP_POSITIVE)?;
    }
    if let Some(n) = t.get("fail_open") {
        d.fail_open = n.bool(cx)?;
    }
    if let Some(n) = t.get("log") {
        d.log = match n.str(cx, EXP_LOG)? {
            "" => return Err(n.expected(cx, EXP_LOG)),
            "stdout" => LogTarget::Stdout,
            "stderr" => LogTarget::Stderr,
            path => LogTarget::File(PathBuf::from(path)),
        };
    }
    if let Some(n) = t.get("log_rate_per_reason") {
        d.log_rate_per_reason = n.u32_positive(cx, EXP_POSITIVE)?;
    }
    if let Some(n) = t.get("summary_interval") {
        d.summary_interval = n.u32_positive(cx, EXP_SECONDS)?;
    }
    if let Some(n) = t.get("fail_open_invalid") {
        d.fail_open_invalid = match n.str(cx, EXP_FAIL_OPEN_INVALID)? {
            "host" => FailOpenInvalid::Host,
            "accept" => FailOpenInvalid::Accept,
            _ => return Err(n.expected(cx, EXP_FAIL_OPEN_INVALID)),
        };
    }
    if let Some(n) = t.get("shedding") {
        d.shedding = match n.str(cx, EXP_SHEDDING)? {
            "auto" => SheddingPolicy::Auto,
            "always" => SheddingPolicy::Always,
            "never" => SheddingPolicy::Never,
            _ => return Err(n.expected(cx, EXP_SHEDDING)),
        };
    }
    if let Some(n) = t.get("metrics") {
        let text = n.str(cx, EXP_METRICS)?;
        match text.parse::<std::net::SocketAddr>() {
            Ok(a) if a.port() != 0 => d.metrics = Some(a),
            _ => return Err(n.expected(cx, EXP_METRICS)),
        }
    }
    if let Some(n) = t.get("log_format") {
        d.log_format = match n.str(cx, EXP_LOG_FORMAT)? {
            "nfqwall" => LogFormat::Nfqwall,
            "eve" => LogFormat::Eve,
            _ => return Err(n.expected(cx, EXP_LOG_FORMAT)),
        };
    }
    if let Some(n) = t.get("journald") {
        d.journald = match n.value() {
            Some(Value::Boolean(b)) if *b.value() => Journald::On,
            Some(Value::Boolean(_)) => Journald::Off,
            Some(Value::String(s)) if s.value() == "auto" => Journald::Auto,
            _ => return Err(n.expected(cx, EXP_JOURNALD)),
        };
    }
    if let Some(n) = t.get("feed_group") {
        d.feed_group = n.int(cx, 0, 65535, EXP_FEED_GROUP)? as u16;
    }
    if let Some(n) = t.get("feed_size") {
        d.feed_size = n.int(cx, 64, 65535, EXP_FEED_SIZE)? as u32;
    }
    if let Some(n) = t.get("feed_threshold") {
        d.feed_threshold = n.int(cx, 1, 1024, EXP_FEED_THRESHOLD)? as u16;
    }
    if let Some(n) = t.get("busy_poll_us") {
        d.busy_poll_us = n.int(cx, 0, MAX_BUSY_POLL_US, EXP_BUSY_POLL)? as u32;
    }
    if let Some(n) = t.get("busy_poll") {
        d.busy_poll = match n.value() {
            Some(Value::String(s)) if s.value() == "adaptive" => BusyPoll::Adaptive,
            Some(Value::String(s)) if s.value() == "always" => BusyPoll::Always,
            _ => return Err(n.expected(cx, EXP_BUSY_POLL_MODE)),
        };
    }
    let vouch = t.get("vouch_mark");
    let state = t.get("state_mask");
    if let Some(n) = &vouch {
        d.vouch_mark = n.int(cx, 1, i64::from(u32::MAX), EXP_VOUCH_MARK)? as u32;
    }
    if let Some(n) = &state {
        d.state_mask = n.int(cx, 1, i64::from(u32::MAX), EXP_STATE_MASK)? as u32;
    }
    let shift = d.state_mask.trailing_zeros();
    let state_ok = d.state_mask.count_ones() == 3 && shift <= 29 && d.state_mask >> shift == 0b111;
    if !state_ok || d.state_mask & d.vouch_mark != 0 {
        if let Some(n) = state.as_ref().filter(|_| !state_ok).or(state.as_ref()) {
            return Err(n.expected(cx, EXP_STATE_MASK));
        }
    }
    if d.vouch_mark.count_ones() != 1 || d.state_mask & d.vouch_mark != 0 {
        if let Some(n) = vouch.as_ref() {
            return Err(n.expected(cx, EXP_VOUCH_MARK));
        }
    }
    Ok(())
}

fn engine(cx: &Cx, t: &Tab, e: &mut EngineConfig) -> Result<()> {
    t.check_keys(cx, ENGINE_KEYS)?;
    if let Some(n) = t.get("max_flows") {
        e.max_flows = n.u32_positive(cx, EXP_POSITIVE)?;
    }
    if let Some(n) = t.get("max_peers") {
        e.max_peers = n.u32_positive(cx, EXP_POSITIVE)?;
    }
    if let Some(n) = t.get("max_rate_sources") {
        e.max_rate_sources = n.u32_positive(cx, EXP_POSITIVE)?;
    }
    if let Some(n) = t.get("timeouts") {
        timeouts(cx, &n.table(cx)?, &mut e.timeouts)?;
    }
    Ok(())
}

fn timeouts(cx: &Cx, t: &Tab, to: &mut Timeouts) -> Result<()> {
    t.check_keys(cx, TIMEOUT_KEYS)?;
    let fields: [(&str, &mut u32); 6] = [
        ("syn", &mut to.syn),
        ("established", &mut to.established),
        ("closing", &mut to.closing),
        ("closed", &mut to.closed),
        ("udp", &mut to.udp),
        ("other", &mut to.other),
    ];
    for (key, slot) in fields {
        if let Some(n) = t.get(key) {
            *slot = n.u32_positive(cx, EXP_SECONDS)?;
        }
    }
    Ok(())
}

fn mode(cx: &Cx, n: &Node) -> Result<Mode> {
    match n.str(cx, EXP_MODE)? {
        "enforce" => Ok(Mode::Enforce),
        "log-only" => Ok(Mode::LogOnly),
        _ => Err(n.expected(cx, EXP_MODE)),
    }
}

fn name<'a>(cx: &Cx, n: &Node<'a>) -> Result<&'a str> {
    let s = n.str(cx, EXP_NAME)?;
    let ok = (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(s)
    } else {
        Err(n.expected(cx, EXP_NAME))
    }
}

/// Parses "N" or "A-B" (decimal, optional spaces around the dash) into (A, B).
fn parse_range(s: &str) -> Option<(u64, u64)> {
    fn num(s: &str) -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    }
    match s.split_once('-') {
        Some((a, b)) => Some((num(a)?, num(b)?)),
        None => num(s).map(|n| (n, n)),
    }
}

/// An integer or a "N"/"A-B" string within `0..=max`, start not above end.
fn range(cx: &Cx, n: &Node, max: u64, expected: &'static str) -> Result<(u64, u64)> {
    let (a, b) = match n.value() {
        Some(Value::Integer(i)) => {
            let v = u64::try_from(*i.value()).map_err(|_| n.expected(cx, expected))?;
            (v, v)
        }
        Some(Value::String(s)) => parse_range(s.value()).ok_or_else(|| n.expected(cx, expected))?,
        _ => return Err(n.expected(cx, expected)),
    };
    if a > max || b > max {
        return Err(n.expected(cx, expected));
    }
    if a > b {
        return Err(n.err(cx, Problem::InvertedRange { start: a, end: b }));
    }
    Ok((a, b))
}

fn queues(cx: &Cx, n: &Node) -> Result<QueueRange> {
    let (a, b) = range(cx, n, u64::from(u16::MAX), EXP_QUEUES)?;
    Ok(QueueRange {
        first: a as u16,
        last: b as u16,
    })
}

fn ports(cx: &Cx, n: &Node) -> Result<Vec<PortRange>> {
    n.list()
        .iter()
        .map(|e| {
            let (a, b) = range(cx, e, u64::from(u16::MAX), EXP_PORT)?;
            Ok(PortRange {
                first: a as u16,
                last: b as u16,
            })
        })
        .collect()
}

fn cidrs(cx: &Cx, n: &Node) -> Result<Vec<IpNet>> {
    n.list()
        .iter()
        .map(|e| {
            let s = e.str(cx, EXP_CIDR)?;
            if let Ok(net) = s.parse::<IpNet>() {
                return without_host_bits(net).ok_or_else(|| {
                    e.err(
                        cx,
                        Problem::HostBits {
                            cidr: s.to_string(),
                            network: net.trunc().to_string(),
                        },
                    )
                });
            }
            // A bare address is a host, as in iptables.
            s.parse::<IpAddr>()
                .map(host_net)
                .map_err(|_| e.expected(cx, EXP_CIDR))
        })
        .collect()
}

fn ct_states(cx: &Cx, n: &Node) -> Result<Vec<CtState>> {
    let mut out = Vec::new();
    for e in n.list() {
        let state = CtState::from_name(e.str(cx, EXP_CT)?).ok_or_else(|| e.expected(cx, EXP_CT))?;
        // Repeats are harmless; keep the first.
        if !out.contains(&state) {
            out.push(state);
        }
    }
    Ok(out)
}

fn service<'a>(cx: &Cx, t: &Tab<'a>) -> Result<(Service, Node<'a>)> {
    t.check_keys(cx, SERVICE_KEYS)?;
    let name_node = t.required(cx, "name")?;
    let svc_name = name(cx, &name_node)?.to_string();
    let proto_node = t.required(cx, "protocol")?;
    let protocol = match proto_node.str(cx, EXP_PROTOCOL)? {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "icmp" => Protocol::Icmp,
        "any" => Protocol::Any,
        _ => return Err(proto_node.expected(cx, EXP_PROTOCOL)),
    };
    let mut svc = Service::with_defaults(svc_name, protocol);
    if let Some(n) = t.get("ports") {
        need_ports(cx, &n, protocol, "ports")?;
        svc.ports = ports(cx, &n)?;
    }
    if let Some(n) = t.get("addresses") {
        svc.addresses = cidrs(cx, &n)?;
    }
    if let Some(n) = t.get("mode") {
        svc.mode = Some(mode(cx, &n)?);
    }
    if let Some(n) = t.get("default") {
        svc.default = match n.str(cx, EXP_DEFAULT)? {
            "accept" => Action::Accept,
            "drop" => Action::Drop,
            _ => return Err(n.expected(cx, EXP_DEFAULT)),
        };
    }
    if let Some(n) = t.get("stateless") {
        svc.stateless = n.bool(cx)?;
    }
    if svc.stateless {
        // Without conntrack every packet is UNTRACKED; that is what must be queued.
        svc.queue = vec![CtState::Untracked];
    }
    if let Some(n) = t.get("queue") {
        svc.queue = ct_states(cx, &n)?;
        if svc.stateless {
            for e in n.list() {
                // Already validated by ct_states above.
                let state = CtState::from_name(e.str(cx, EXP_CT)?);
                if let Some(state) = state.filter(|s| *s != CtState::Untracked) {
                    return Err(e.err(cx, Problem::StatelessQueue { state }));
                }
            }
        }
    }
    if let Some(n) = t.get("sack_repair") {
        svc.sack_repair = n.bool(cx)?;
    }
    if let Some(n) = t.get("handback") {
        svc.handback = n.bool(cx)?;
        if svc.handback {
            if protocol != Protocol::Tcp {
                return Err(n.err(
                    cx,
                    Problem::NotForProtocol {
                        what: "handback",
                        protocol,
                        needs: "\"tcp\"",
                    },
                ));
            }
            if svc.stateless {
                return Err(n.err(
                    cx,
                    Problem::Conflicts {
                        other: "stateless",
                        why: "a stateless service has no conntrack entry to hand back",
                    },
                ));
            }
            if svc.sack_repair {
                return Err(n.err(
                    cx,
                    Problem::Conflicts {
                        other: "sack_repair",
                        why: "a repaired flow must stay with nfqwall, which rewrites its SACK \
                              blocks; handback is for services that do not repair",
                    },
                ));
            }
        }
    }
    svc.track = svc.default_track();
    if let Some(n) = t.get("track") {
        svc.track = match n.str(cx, EXP_TRACK)? {
            "shadow" if svc.stateless => return Err(n.expected(cx, EXP_TRACK_STATELESS)),
            "shadow" if !matches!(protocol, Protocol::Tcp | Protocol::Any) => {
                return Err(n.err(
                    cx,
                    Problem::NotForProtocol {
                        what: "track = \"shadow\"",
                        protocol,
                        needs: "\"tcp\" or \"any\"",
                    },
                ))
            }
            "shadow" => Track::Shadow,
            "none" => Track::None,
            _ => return Err(n.expected(cx, EXP_TRACK)),
        };
    }
    if let Some(n) = t.get("sample") {
        svc.sample = Some(sample(cx, &n)?);
    }
    if let Some(n) = t.get("rule") {
        let mut seen = Vec::new();
        for (i, rt) in n.tables(cx, EXP_RULES)?.iter().enumerate() {
            if i >= MAX_IDS {
                return Err(cx.invalid(
                    &rt.span,
                    &rt.path,
                    Problem::TooMany {
                        what: "rules in one service",
                        max: MAX_IDS,
                    },
                ));
            }
            let (r, name_node) = rule(cx, rt, protocol)?;
            check_unique(cx, &mut seen, &r.name, &name_node, "rule")?;
            svc.rules.push(r);
        }
    }
    Ok((svc, name_node))
}

/// `"1/N"`, N from 1 to 1,000,000,000: the N.
fn sample(cx: &Cx, n: &Node) -> Result<u32> {
    let text = n.str(cx, EXP_SAMPLE)?;
    text.strip_prefix("1/")
        .and_then(|d| d.parse::<u32>().ok())
        .filter(|d| (1..=1_000_000_000).contains(d))
        .ok_or_else(|| n.expected(cx, EXP_SAMPLE))
}

/// Rejects a port field on a service whose protocol has no ports.
fn need_ports(cx: &Cx, n: &Node, protocol: Protocol, what: &'static str) -> Result<()> {
    if protocol.has_ports() {
        return Ok(());
    }
    Err(n.err(
        cx,
        Problem::NotForProtocol {
            what,
            protocol,
            needs: "\"tcp\" or \"udp\"",
        },
    ))
}

fn rule<'a>(cx: &Cx, t: &Tab<'a>, protocol: Protocol) -> Result<(Rule, Node<'a>)> {
    t.check_keys(cx, RULE_KEYS)?;
    let name_node = t.required(cx, "name")?;
    let rule_name = name(cx, &name_node)?.to_string();
    let action_node = t.required(cx, "action")?;
    let action = match action_node.str(cx, EXP_ACTION)? {
        "accept" => RuleAction::Accept,
        "drop" => RuleAction::Drop,
        "log" => RuleAction::Log,
        _ => return Err(action_node.expected(cx, EXP_ACTION)),
    };
    let mut r = Rule {
        name: rule_name,
        action,
        source: Vec::new(),
        destination: Vec::new(),
        source_ports: Vec::new(),
        destination_ports: Vec::new(),
        tcp_flags: None,
        ct_state: Vec::new(),
        interface: None,
        length: None,
        rate: None,
        mark: None,
    };
    if let Some(n) = t.get("source") {
        r.source = cidrs(cx, &n)?;
    }
    if let Some(n) = t.get("destination") {
        r.destination = cidrs(cx, &n)?;
    }
    if let Some(n) = t.get("source_ports") {
        need_ports(cx, &n, protocol, "source_ports")?;
        r.source_ports = ports(cx, &n)?;
    }
    if let Some(n) = t.get("destination_ports") {
        need_ports(cx, &n, protocol, "destination_ports")?;
        r.destination_ports = ports(cx, &n)?;
    }
    if let Some(n) = t.get("tcp_flags") {
        if protocol != Protocol::Tcp {
            return Err(n.err(
                cx,
                Problem::NotForProtocol {
                    what: "tcp_flags",
                    protocol,
                    needs: "\"tcp\"",
                },
            ));
        }
        r.tcp_flags = Some(tcp_flags(cx, &n)?);
    }
    if let Some(n) = t.get("ct_state") {
        r.ct_state = ct_states(cx, &n)?;
    }
    if let Some(n) = t.get("interface") {
        r.interface = Some(interface(cx, &n)?);
    }
    if let Some(n) = t.get("length") {
        let (min, max) = range(cx, &n, u64::from(u32::MAX), EXP_LENGTH)?;
        r.length = Some(LengthRange {
            min: min as u32,
            max: max as u32,
        });
    }
    let burst = match t.get("burst") {
        Some(n) if t.get("rate").is_none() => {
            return Err(n.err(cx, Problem::Requires { other: "rate" }))
        }
        Some(n) => Some(n.u32_positive(cx, EXP_POSITIVE)?),
        None => None,
    };
    if let Some(n) = t.get("rate") {
        r.rate = Some(rate(cx, &n, burst)?);
    }
    if let Some(n) = t.get("mark") {
        let mark = n.int(cx, 0, i64::from(u32::MAX), EXP_MARK)? as u32;
        if mark & cx.reserved_marks.get() != 0 {
            return Err(n.expected(cx, EXP_RULE_MARK));
        }
        r.mark = Some(mark);
    }
    Ok((r, name_node))
}

/// TCP flag names in header bit order.
const FLAG_NAMES: [(&str, u8); 8] = [
    ("fin", 0x01),
    ("syn", 0x02),
    ("rst", 0x04),
    ("psh", 0x08),
    ("ack", 0x10),
    ("urg", 0x20),
    ("ece", 0x40),
    ("cwr", 0x80),
];

fn tcp_flags(cx: &Cx, n: &Node) -> Result<TcpFlagMatch> {
    let s = n.str(cx, EXP_FLAGS)?;
    let mut m = TcpFlagMatch { mask: 0, value: 0 };
    for part in s.split(',') {
        let part = part.trim();
        let (clear, flag) = match part.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, part),
        };
        if flag.is_empty() {
            return Err(n.expected(cx, EXP_FLAGS));
        }
        let Some(&(_, bit)) = FLAG_NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(flag))
        else {
            return Err(n.err(
                cx,
                Problem::UnknownTcpFlag {
                    flag: flag.to_string(),
                },
            ));
        };
        if m.mask & bit != 0 {
            return Err(n.err(
                cx,
                Problem::RepeatedTcpFlag {
                    flag: flag.to_string(),
                },
            ));
        }
        m.mask |= bit;
        if !clear {
            m.value |= bit;
        }
    }
    Ok(m)
}

fn interface(cx: &Cx, n: &Node) -> Result<InterfaceMatch> {
    let s = n.str(cx, EXP_IFACE)?;
    let (name, prefix) = match s.strip_suffix('+') {
        Some(stem) => (stem, true),
        None => (s, false),
    };
    // Linux names are at most IFNAMSIZ-1 = 15 bytes, no '/', ':' or whitespace;
    // a lone "+" (empty stem) matches every interface, as in iptables.
    let ok = s.len() <= 15
        && (prefix || !name.is_empty())
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if !ok {
        return Err(n.expected(cx, EXP_IFACE));
    }
    Ok(InterfaceMatch {
        name: name.to_string(),
        prefix,
    })
}

fn rate(cx: &Cx, n: &Node, burst: Option<u32>) -> Result<RateLimit> {
    let s = n.str(cx, EXP_RATE)?;
    let (count, unit) = s.split_once('/').ok_or_else(|| n.expected(cx, EXP_RATE))?;
    let count = count.trim();
    let count: u32 = if !count.is_empty() && count.bytes().all(|b| b.is_ascii_digit()) {
        count.parse().map_err(|_| n.expected(cx, EXP_RATE))?
    } else {
        return Err(n.expected(cx, EXP_RATE));
    };
    let period = match unit.trim() {
        "s" | "sec" | "second" => RatePeriod::Second,
        "m" | "min" | "minute" => RatePeriod::Minute,
        "h" | "hour" => RatePeriod::Hour,
        _ => return Err(n.expected(cx, EXP_RATE)),
    };
    if count == 0 {
        return Err(n.expected(cx, EXP_RATE));
    }
    let per_second = match period {
        RatePeriod::Second => count,
        RatePeriod::Minute => count / 60,
        RatePeriod::Hour => count / 3600,
    };
    Ok(RateLimit {
        count,
        period,
        burst: burst.unwrap_or(per_second.max(1)),
    })
}
