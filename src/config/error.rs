//! Config errors that say where (file:line:column, field path) and what was expected.

use core::fmt;

use crate::config::Protocol;
use crate::engine::meta::CtState;

/// Why a config could not be loaded. Display reads
/// `FILE:LINE:COLUMN: FIELD: PROBLEM`, lines and columns counted from 1.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// The path as given.
        path: String,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The text is not well-formed TOML.
    Syntax {
        /// File name or other origin of the text.
        origin: String,
        /// Line of the error, from 1.
        line: usize,
        /// Column of the error in characters, from 1.
        column: usize,
        /// The TOML parser's message.
        message: String,
    },
    /// The TOML is well-formed but a value breaks the schema or a consistency rule.
    Invalid {
        /// File name or other origin of the text.
        origin: String,
        /// Line of the offending key or value, from 1.
        line: usize,
        /// Column of the offending key or value in characters, from 1.
        column: usize,
        /// Field path, such as `service[1].rule[0].source[0]`.
        field: String,
        /// What is wrong.
        problem: Problem,
    },
}

impl ConfigError {
    /// The line the error points at (from 1), if it points into the text.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Syntax { line, .. } | ConfigError::Invalid { line, .. } => Some(*line),
        }
    }

    /// The schema problem, if the error is one.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            ConfigError::Invalid { problem, .. } => Some(problem),
            _ => None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => write!(f, "{path}: cannot read: {source}"),
            ConfigError::Syntax {
                origin,
                line,
                column,
                message,
            } => write!(f, "{origin}:{line}:{column}: invalid TOML: {message}"),
            ConfigError::Invalid {
                origin,
                line,
                column,
                field,
                problem,
            } => write!(f, "{origin}:{line}:{column}: {field}: {problem}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// What is wrong with a field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A key the schema does not know (a typo, or an option from another version).
    UnknownKey {
        /// The key as written.
        key: String,
        /// The keys allowed in that table.
        allowed: &'static [&'static str],
    },
    /// A key that must be present is absent.
    MissingKey {
        /// The missing key.
        key: &'static str,
    },
    /// A value of the wrong type or format.
    Expected {
        /// What the field accepts, with an example.
        expected: &'static str,
        /// The value as found, quoted as TOML.
        found: String,
    },
    /// A range whose start lies after its end.
    InvertedRange {
        /// The start as written.
        start: u64,
        /// The end as written.
        end: u64,
    },
    /// A CIDR with bits set after the prefix, which would silently widen to the network.
    HostBits {
        /// The CIDR as written.
        cidr: String,
        /// The network it would mean.
        network: String,
    },
    /// A TCP flag name that does not exist.
    UnknownTcpFlag {
        /// The flag as written.
        flag: String,
    },
    /// The same TCP flag named twice in one test.
    RepeatedTcpFlag {
        /// The flag as written the second time.
        flag: String,
    },
    /// A name used twice where names must be unique.
    Duplicate {
        /// "service" or "rule".
        kind: &'static str,
        /// The repeated name.
        name: String,
        /// Line of the first use.
        first_line: usize,
    },
    /// A match that packets of the service's protocol cannot satisfy (ports on ICMP).
    NotForProtocol {
        /// The field, such as "destination_ports".
        what: &'static str,
        /// The service's protocol.
        protocol: Protocol,
        /// Protocols that can carry it, for the message.
        needs: &'static str,
    },
    /// A field that means nothing without another one.
    Requires {
        /// The field that is needed too.
        other: &'static str,
    },
    /// Two fields that cannot both be set in one table.
    Conflicts {
        /// The other field, set too.
        other: &'static str,
        /// Why they exclude each other.
        why: &'static str,
    },
    /// A conntrack state a stateless service can never see.
    StatelessQueue {
        /// The state that cannot occur.
        state: CtState,
    },
    /// More entries than identifiers can number.
    TooMany {
        /// What there are too many of.
        what: &'static str,
        /// The limit.
        max: usize,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::UnknownKey { key, allowed } => {
                write!(f, "unknown key \"{key}\"; expected one of: {}", allowed.join(", "))
            }
            Problem::MissingKey { key } => write!(f, "missing required key \"{key}\""),
            Problem::Expected { expected, found } => write!(f, "expected {expected}, found {found}"),
            Problem::InvertedRange { start, end } => write!(
                f,
                "range start {start} is greater than its end {end} (write the lower bound first)"
            ),
            Problem::HostBits { cidr, network } => write!(
                f,
                "\"{cidr}\" has host bits set after the prefix; write {network} for the network \
                 or a /32 or /128 for one host"
            ),
            Problem::UnknownTcpFlag { flag } => write!(
                f,
                "unknown TCP flag \"{flag}\"; expected fin, syn, rst, psh, ack, urg, ece or cwr, \
                 optionally prefixed with \"!\" (must be clear)"
            ),
            Problem::RepeatedTcpFlag { flag } => {
                write!(f, "TCP flag \"{flag}\" is named more than once")
            }
            Problem::Duplicate {
                kind,
                name,
                first_line,
            } => write!(
                f,
                "duplicate {kind} name \"{name}\" (first used on line {first_line})"
            ),
            Problem::NotForProtocol {
                what,
                protocol,
                needs,
            } => write!(
                f,
                "{what} needs a service with protocol {needs}, but this service's protocol is \"{}\"",
                protocol.name()
            ),
            Problem::Requires { other } => {
                write!(f, "has no effect without \"{other}\" in the same table")
            }
            Problem::Conflicts { other, why } => {
                write!(f, "cannot be true together with \"{other}\" = true: {why}")
            }
            Problem::StatelessQueue { state } => write!(
                f,
                "a stateless service's packets are all untracked, so queueing \"{state}\" would \
                 send nothing to nfqwall; use [\"untracked\"]"
            ),
            Problem::TooMany { what, max } => write!(f, "more than {max} {what}"),
        }
    }
}
