//! Events straight to the systemd journal, with fields to query them by.
//!
//! Written with the journal's native protocol (one datagram per entry to
//! `/run/systemd/journal/socket`, fields `KEY=value\n`, or `KEY\n`, a 64-bit
//! little-endian length and the value when it holds a newline), so nfqwall links no
//! libsystemd. Each entry's `MESSAGE` is the event line exactly as it would be
//! written to stdout; beside it `PRIORITY` (by the reason's class for packets, so
//! `journalctl -u nfqwall PRIORITY=4` finds the hostile verdicts), `MESSAGE_ID` (one
//! per event kind), `SYSLOG_IDENTIFIER=nfqwall`, `NFQWALL_EVENT`, and for packets
//! `NFQWALL_CLASS` and `NFQWALL_REASON`.

use crate::engine::reason::Class;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// The journal's native socket.
pub const SOCKET: &str = "/run/systemd/journal/socket";

/// `MESSAGE_ID` of each event kind (`journalctl MESSAGE_ID=...`); stable, documented
/// in `SCHEMA.md`. Kinds not listed use the last entry's id.
pub const MESSAGE_IDS: [(&str, &str); 16] = [
    ("packet", "aeccef56650640769d98423499d91f5e"),
    ("suppressed", "6c1ee618856f4be3a8cb05cd8c20ae7c"),
    ("peer_summary", "2dbb15ea30a949589ec073ef0182a482"),
    ("peer_summary_omitted", "16d373284f3c4b0cb88caf3090a0aa20"),
    ("start", "5d47eec037ad4fdfbdf78338fed7836f"),
    ("stop", "14d1dd16bccd4a61895b73b59ec0db80"),
    ("stopping", "32bc6905c7714d529c883b147e8bb039"),
    ("reload", "4aa984d6be3a410e975e214cc4cb3e16"),
    ("reload_failed", "cc5a1bf26a664a8da2240b048cb0688f"),
    ("rules", "45f77f6260144f8482efaaccc4b0f401"),
    ("shedding_start", "1588cee4d95841e896b13726840a1481"),
    ("shedding_stop", "49bdf50e02854653b71a54b148623ce1"),
    ("internal_error", "eebde647c65040ae9ed51dc3f2089fd2"),
    ("warning", "e6ade5d6a6bc43af8bf81baf684ce36e"),
    ("fail_open", "ce06888a9dae419ba1e7650421fdd0a2"),
    ("other", "bfd156a9ecba496896065d0135fa223e"),
];

/// The `MESSAGE_ID` of `kind`.
pub fn message_id(kind: &str) -> &'static str {
    MESSAGE_IDS
        .iter()
        .find(|(k, _)| *k == kind)
        .unwrap_or(&MESSAGE_IDS[MESSAGE_IDS.len() - 1])
        .1
}

/// What the journal is told about one line besides the line itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta<'a> {
    /// The event kind (`packet`, `start`, ...).
    pub kind: &'a str,
    /// For packets: the reason's class (`None`: no reason, a `log` rule matched).
    pub class: Option<Class>,
    /// For packets: the reason's name.
    pub reason: Option<&'a str>,
}

/// syslog priority of a line: for packets by class (hostile 4 warning; policy and
/// fail-open 5 notice; benign, unproven and `log` rule matches 6 info); for other
/// lines by kind (internal errors and refused reloads 3, warnings, kernel fail-open
/// and the start of shedding 4, start, stop and reloads 5, the rest 6).
pub fn priority(m: &Meta<'_>) -> u8 {
    if m.kind == "packet" {
        return match m.class {
            Some(Class::Hostile) => 4,
            Some(Class::Policy) | Some(Class::FailOpen) => 5,
            _ => 6,
        };
    }
    match m.kind {
        "internal_error" | "reload_failed" => 3,
        "warning" | "fail_open" | "shedding_start" => 4,
        "start" | "stop" | "stopping" | "reload" => 5,
        _ => 6,
    }
}

/// Appends one field in the native protocol.
fn field(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    out.extend_from_slice(key.as_bytes());
    if value.contains(&b'\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// The datagram for one event line.
pub fn entry(line: &str, m: &Meta<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len() + 200);
    field(&mut out, "MESSAGE", line.as_bytes());
    field(&mut out, "PRIORITY", priority(m).to_string().as_bytes());
    field(&mut out, "MESSAGE_ID", message_id(m.kind).as_bytes());
    field(&mut out, "SYSLOG_IDENTIFIER", b"nfqwall");
    field(&mut out, "NFQWALL_EVENT", m.kind.as_bytes());
    if let Some(c) = m.class {
        field(&mut out, "NFQWALL_CLASS", c.name().as_bytes());
    }
    if let Some(r) = m.reason {
        field(&mut out, "NFQWALL_REASON", r.as_bytes());
    }
    out
}

/// A connected journal socket.
pub struct Journal {
    sock: UnixDatagram,
}

impl Journal {
    /// Connects to the journal socket at `path`.
    pub fn connect(path: &Path) -> io::Result<Journal> {
        let sock = UnixDatagram::unbound()?;
        sock.connect(path)?;
        Ok(Journal { sock })
    }

    /// Sends one entry.
    pub fn send(&self, line: &str, m: &Meta<'_>) -> io::Result<()> {
        self.sock.send(&entry(line, m)).map(|_| ())
    }
}

/// Returns true if and only if standard output is the journal: systemd set
/// `JOURNAL_STREAM` to its `device:inode` (see systemd.exec(5)).
pub fn stdout_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    // SAFETY: fstat on fd 1 with a zeroed stat buffer it fills.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(1, &mut st) } != 0 {
        return false;
    }
    dev.parse::<u64>().ok() == Some(st.st_dev) && ino.parse::<u64>().ok() == Some(st.st_ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_is_the_native_protocol_exactly() {
        let m = Meta {
            kind: "packet",
            class: Some(Class::Hostile),
            reason: Some("rst_out_of_window"),
        };
        let e = entry("{\"a\":1}", &m);
        assert_eq!(
            String::from_utf8(e).unwrap(),
            "MESSAGE={\"a\":1}\nPRIORITY=4\nMESSAGE_ID=aeccef56650640769d98423499d91f5e\n\
             SYSLOG_IDENTIFIER=nfqwall\nNFQWALL_EVENT=packet\nNFQWALL_CLASS=hostile\n\
             NFQWALL_REASON=rst_out_of_window\n"
        );
        // A value with a newline is sent with its length, little-endian.
        let mut out = Vec::new();
        field(&mut out, "MESSAGE", b"a\nb");
        assert_eq!(out, b"MESSAGE\n\x03\0\0\0\0\0\0\0a\nb\n");
    }

    #[test]
    fn priorities_and_ids() {
        let p = |kind, class| {
            priority(&Meta {
                kind,
                class,
                reason: None,
            })
        };
        assert_eq!(p("packet", Some(Class::Hostile)), 4);
        assert_eq!(p("packet", Some(Class::Policy)), 5);
        assert_eq!(p("packet", Some(Class::Benign)), 6);
        assert_eq!(p("packet", None), 6);
        assert_eq!(p("internal_error", None), 3);
        assert_eq!(p("start", None), 5);
        assert_eq!(p("peer_summary", None), 6);
        assert_eq!(message_id("start"), "5d47eec037ad4fdfbdf78338fed7836f");
        assert_eq!(message_id("nonesuch"), message_id("other"));
        let mut ids: Vec<_> = MESSAGE_IDS.iter().map(|(_, i)| *i).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), MESSAGE_IDS.len());
        assert!(ids
            .iter()
            .all(|i| i.len() == 32 && i.bytes().all(|b| b.is_ascii_hexdigit())));
    }

    #[test]
    fn sends_datagrams_to_the_socket() {
        let dir = std::env::temp_dir().join(format!("nfqwall-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("socket");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let j = Journal::connect(&path).unwrap();
        let m = Meta {
            kind: "start",
            class: None,
            reason: None,
        };
        j.send("{\"event\":\"start\"}", &m).unwrap();
        let mut buf = [0u8; 4096];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], entry("{\"event\":\"start\"}", &m).as_slice());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
