//! `nfqwall report`: renders reports from shared captures, from a capture through a
//! sequence-randomizing middlebox and from a hand-built events log (the live format,
//! `src/events/SCHEMA.md`), loads each in headless Chromium and checks what it drew:
//! the peer sections, the timeline rows and marks of each, the middlebox offsets; that
//! nothing in the file points outside it; that it prints (to PDF); and that a
//! screenshot comes out. Skips, saying so, only where `chromium` is not installed
//! (`tests/run-all.sh` installs it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "captures/middlebox.rs"]
mod middlebox;
use middlebox::OFFSET;

const BIN: &str = env!("CARGO_BIN_EXE_nfqwall");
const PCAPS: &str = "tests/fixtures/pcaps";
/// Bins of a timeline (`nfqwall::report::html::BINS`).
const BINS: usize = nfqwall::report::html::BINS;

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
        })
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nfqwall-report-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `cmd` with a deadline (the machine may be loaded), killing it past it.
fn run_with_deadline(cmd: &mut Command, secs: u64) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let id = child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    let watchdog = std::thread::spawn(move || {
        let start = Instant::now();
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            if start.elapsed() > Duration::from_secs(secs) {
                let _ = Command::new("kill").args(["-9", &id.to_string()]).status();
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    });
    let out = child.wait_with_output().expect("wait");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(!watchdog.join().unwrap(), "{cmd:?} ran past {secs} s");
    out
}

/// Headless Chromium with a fresh profile, no network services, `extra` arguments,
/// on `file`.
fn chrome(browser: &Path, profile: &Path, extra: &[&str], file: &Path) -> Output {
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(format!("file://{}", file.display()));
    let out = run_with_deadline(&mut cmd, 180);
    assert!(
        out.status.success(),
        "chromium failed on {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The DOM Chromium built from `html`.
fn dump_dom(browser: &Path, dir: &Path, html: &Path) -> String {
    let out = chrome(browser, &dir.join("profile"), &["--dump-dom"], html);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("<h1>nfqwall report</h1>"),
        "no report in:\n{dom}"
    );
    dom
}

fn report(input: &Path, out: &Path, extra: &[&str]) -> String {
    let o = Command::new(BIN)
        .arg("report")
        .arg(input)
        .arg("-o")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "report failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let html = std::fs::read_to_string(out).unwrap();
    self_contained(&html);
    html
}

/// Nothing in the page leaves it: every `src`/`href` is a fragment, no scheme, no
/// protocol-relative `//`, no script, stylesheet link, import or `url(`.
fn self_contained(html: &str) {
    let lower = html.to_ascii_lowercase();
    for attr in ["src=", "href=", "xlink:href=", "action=", "srcset="] {
        for (i, _) in lower.match_indices(attr) {
            let rest = &lower[i + attr.len()..];
            let value: String = match rest.chars().next() {
                Some(q @ ('"' | '\'')) => rest[1..].chars().take_while(|c| *c != q).collect(),
                _ => rest
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '>')
                    .collect(),
            };
            assert!(
                value.starts_with('#') && !value.contains("//") && !value.contains(':'),
                "{attr}{value} points outside the page"
            );
        }
    }
    for bad in [
        "http:", "https:", "<script", "<link", "@import", "url(", "<iframe", "<img",
    ] {
        assert!(!lower.contains(bad), "the page contains {bad}");
    }
}

/// The peer sections of a dumped DOM: (address, section text).
fn sections(dom: &str) -> Vec<(String, String)> {
    dom.split("<section class=\"peer\"")
        .skip(1)
        .map(|s| {
            let s = &s[..s.find("</section>").expect("section end")];
            let peer = s
                .split("data-peer=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .expect("data-peer")
                .to_string();
            (peer, s.to_string())
        })
        .collect()
}

/// The timeline rows of one section: (row name, count in its label, marks drawn).
fn rows(section: &str) -> Vec<(String, u64, usize)> {
    assert_eq!(
        section.matches("<svg class=\"timeline\"").count(),
        1,
        "one timeline per peer"
    );
    section
        .split("<g class=\"row\" data-row=\"")
        .skip(1)
        .map(|g| {
            let g = &g[..g.find("</g>").expect("row end")];
            let name = g.split('"').next().unwrap().to_string();
            let label = g
                .split("<text")
                .nth(1)
                .and_then(|t| t.split('>').nth(1))
                .and_then(|t| t.split('<').next())
                .expect("row label");
            let count = label
                .rsplit('(')
                .next()
                .and_then(|n| n.trim_end_matches(')').parse().ok())
                .unwrap_or_else(|| panic!("count in {label:?}"));
            assert!(label.starts_with(&name), "{label} vs {name}");
            (name, count, g.matches("<rect class=\"mark\"").count())
        })
        .collect()
}

/// The offsets listed in middlebox tables.
fn offsets(html: &str) -> Vec<u64> {
    html.split("<td class=\"n offset\">")
        .skip(1)
        .map(|s| s.split('<').next().unwrap().parse().unwrap())
        .collect()
}

/// `nfqwall replay`'s summary lines for peers: address -> (row name -> count).
fn replay_peers(pcap: &str) -> Vec<(String, Vec<(String, u64)>)> {
    let o = Command::new(BIN).args(["replay", pcap]).output().unwrap();
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let block = text
        .split("peers with the most trouble (flow initiators):\n")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap()
        .to_string();
    block
        .lines()
        .filter(|l| l.starts_with("  ") && l.contains(" flagged, "))
        .map(|l| {
            let (addr, rest) = l.trim().split_once(": ").unwrap();
            let (counts, kinds) = rest.split_once("; ").unwrap();
            let n = |word: &str| -> u64 {
                counts
                    .split(", ")
                    .find(|c| c.ends_with(word))
                    .and_then(|c| c.split(' ').next())
                    .and_then(|c| c.parse().ok())
                    .unwrap()
            };
            let mut rows = Vec::new();
            let kinds = kinds.split(" (seen").next().unwrap();
            if kinds != "no retransmission patterns" {
                for k in kinds.split(", ") {
                    let (name, count) = k.rsplit_once(' ').unwrap();
                    rows.push((name.to_string(), count.parse().unwrap()));
                }
            }
            if n("benign doubtful") > 0 {
                rows.push(("doubtful (benign)".to_string(), n("benign doubtful")));
            }
            if n("hostile") > 0 {
                rows.push(("hostile".to_string(), n("hostile")));
            }
            (addr.to_string(), rows)
        })
        .collect()
}

fn skip_without_chromium(test: &str) -> Option<PathBuf> {
    let c = chromium();
    if c.is_none() {
        eprintln!(
            "skipping {test}: chromium is not installed (apt-get install chromium; tests/run-all.sh installs it)"
        );
    }
    c
}

#[test]
fn shared_captures_draw_each_peer_as_replay_counts_it() {
    let Some(browser) = skip_without_chromium("shared_captures_draw_each_peer_as_replay_counts_it")
    else {
        return;
    };
    let dir = tmpdir("shared");
    // Five peers with trouble; --top 3 draws three. Then one peer with many patterns.
    for (name, top, drawn) in [
        ("ndpi__1kxun.pcap", "3", 3usize),
        ("zeek__http__206_example_b.pcap", "10", 1),
    ] {
        let pcap = format!("{PCAPS}/{name}");
        let html = dir.join(format!("{name}.html"));
        report(Path::new(&pcap), &html, &["--top", top]);
        let dom = dump_dom(&browser, &dir, &html);
        self_contained(&dom);
        let expected = replay_peers(&pcap);
        let secs = sections(&dom);
        assert_eq!(secs.len(), drawn, "{name}: peer sections");
        assert_eq!(
            dom.matches("<svg class=\"timeline\"").count(),
            drawn,
            "{name}"
        );
        for (peer, section) in &secs {
            let want = &expected
                .iter()
                .find(|(a, _)| a == peer)
                .unwrap_or_else(|| panic!("{name}: {peer} is not among replay's peers"))
                .1;
            let got = rows(section);
            let mut got_counts: Vec<(String, u64)> =
                got.iter().map(|(n, c, _)| (n.clone(), *c)).collect();
            let mut want = want.clone();
            got_counts.sort();
            want.sort();
            assert_eq!(got_counts, want, "{name}: {peer}'s rows");
            for (row, count, marks) in &got {
                assert!(
                    *marks >= 1 && *marks as u64 <= *count && *marks <= BINS,
                    "{name}: {peer} {row}: {marks} marks for {count} packets"
                );
            }
            assert!(section.contains("<h3>Top reasons</h3>"), "{name}: {peer}");
        }
        assert!(
            dom.contains("None suspected."),
            "{name}: no middlebox expected"
        );
    }
    // The first capture's busiest peer: five rows, as replay says.
    let dom = std::fs::read_to_string(dir.join("ndpi__1kxun.pcap.html")).unwrap();
    let secs = sections(&dom);
    assert_eq!(secs[0].0, "192.168.115.8");
    assert_eq!(rows(&secs[0].1).len(), 5);
    assert_eq!(rows(&secs[1].1).len(), 3);

    // It prints, and a screenshot comes out (`doc/report.png` is made this way).
    let html = dir.join("ndpi__1kxun.pcap.html");
    let pdf = dir.join("report.pdf");
    chrome(
        &browser,
        &dir.join("profile"),
        &[
            &format!("--print-to-pdf={}", pdf.display()),
            "--no-pdf-header-footer",
        ],
        &html,
    );
    let bytes = std::fs::read(&pdf).unwrap();
    assert!(
        bytes.starts_with(b"%PDF") && bytes.len() > 5_000,
        "no PDF printed"
    );
    let png = dir.join("report.png");
    chrome(
        &browser,
        &dir.join("profile"),
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1000,900",
        ],
        &html,
    );
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000);
    // IHDR: width and height, big-endian, at 16..24.
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    assert_eq!(w, 1000);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The download of `tests/replay_middlebox.rs`: the client's SACK blocks are in its
/// own sequence space, `OFFSET` away from the server's.
fn middlebox_capture() -> Vec<u8> {
    middlebox::pcap_raw(&middlebox::download(20, 1400))
}

#[test]
fn middlebox_capture_lists_the_flow_and_its_offset() {
    let Some(browser) = skip_without_chromium("middlebox_capture_lists_the_flow_and_its_offset")
    else {
        return;
    };
    let dir = tmpdir("mbox");
    let file = dir.join("middlebox.pcap");
    std::fs::write(&file, middlebox_capture()).unwrap();
    let html = dir.join("middlebox.html");
    report(&file, &html, &[]);
    let dom = dump_dom(&browser, &dir, &html);
    let secs = sections(&dom);
    assert_eq!(secs.len(), 1, "one peer: the client");
    assert_eq!(secs[0].0, "192.0.2.10");
    // Listed in the overview and in the client's section, with the exact offset.
    assert_eq!(offsets(&dom), vec![u64::from(OFFSET); 2], "{dom}");
    let overview = dom.split("<section class=\"peer\"").next().unwrap();
    assert!(overview.contains(
        "<td class=\"mono\">192.0.2.10:51000</td><td class=\"mono\">198.51.100.80:80</td>"
    ));
    assert!(
        overview.contains(&format!("{OFFSET}..=")),
        "consistent range"
    );
    assert!(overview.contains("sack_displaced"), "top reasons");
    assert!(secs[0].1.contains("<h3>Middlebox flows</h3>"));
    let rows = rows(&secs[0].1);
    let benign = rows
        .iter()
        .find(|r| r.0 == "doubtful (benign)")
        .expect("the displaced SACKs are doubtful, shown benign");
    assert_eq!(benign.1, 14);
    // 14 packets 2 ms apart over a 30 ms timeline: each in a bin of its own.
    assert_eq!(benign.2, 14);

    // Deployed visibility: what the default ruleset queues (the displaced SACKs are
    // INVALID to conntrack); the header says which.
    let html = dir.join("deployed.html");
    let text = report(&file, &html, &["--visibility", "deployed"]);
    assert!(text.contains("visibility <b>deployed</b>"));
    assert!(text.contains("not queued"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An events log as `nfqwall run` writes it (SCHEMA.md): three peers, one with peer
/// summaries, one behind a middlebox, one hostile; a rate-limit line, life cycle lines
/// and one line of noise.
const EVENTS: &str = r#"{"ts":"2024-05-01T12:00:00.000000Z","event":"start","version":"0.1.0","pid":1,"config":"/etc/nfqwall/nfqwall.toml","mode":"log-only","queues":[0]}
{"ts":"2024-05-01T12:00:05.000000Z","event":"packet","queue":0,"verdict":"accept","would_drop":false,"would_accept":true,"disposition":"pass","mode":"log-only","reason":"slightly_beyond_window","detail":"segment slightly beyond the window (lost ACK)","class":"benign","ct_state":"invalid","proto":"tcp","src":"198.51.100.7","sport":40312,"dst":"192.0.2.2","dport":443,"len":1500,"in_iface":"eth0","service":"web","rule":null,"log_rule":null,"mark":null,"peer":"198.51.100.7","patterns":["retransmission"]}
{"ts":"2024-05-01T12:00:20.000000Z","event":"packet","queue":0,"verdict":"accept","would_drop":false,"would_accept":false,"disposition":"pass","mode":"log-only","reason":"sack_displaced","detail":"SACK blocks displaced","class":"benign","ct_state":"invalid","proto":"tcp","src":"192.0.2.10","sport":51000,"dst":"192.0.2.2","dport":80,"len":64,"in_iface":"eth0","service":"web","rule":null,"log_rule":null,"mark":null,"peer":"192.0.2.10","patterns":["duplicate_ack"],"offset":1024000000}
{"ts":"2024-05-01T12:00:21.000000Z","event":"packet","queue":0,"verdict":"accept","would_drop":false,"would_accept":false,"disposition":"pass","mode":"log-only","reason":"sack_displaced","detail":"SACK blocks displaced","class":"benign","ct_state":"invalid","proto":"tcp","src":"192.0.2.10","sport":51000,"dst":"192.0.2.2","dport":80,"len":64,"in_iface":"eth0","service":"web","rule":null,"log_rule":null,"mark":null,"peer":"192.0.2.10","patterns":["duplicate_ack"],"offset":1024000000}
{"ts":"2024-05-01T12:00:22.000000Z","event":"packet","queue":0,"verdict":"accept","would_drop":false,"would_accept":false,"disposition":"pass","mode":"log-only","reason":"sack_displaced","detail":"SACK blocks displaced","class":"benign","ct_state":"invalid","proto":"tcp","src":"192.0.2.10","sport":51000,"dst":"192.0.2.2","dport":80,"len":64,"in_iface":"eth0","service":"web","rule":null,"log_rule":null,"mark":null,"peer":"192.0.2.10","patterns":["duplicate_ack"],"offset":1024000000}
{"ts":"2024-05-01T12:00:23.000000Z","event":"packet","queue":0,"verdict":"accept","would_drop":false,"would_accept":false,"disposition":"pass","mode":"log-only","reason":"sack_displaced","detail":"SACK blocks displaced","class":"benign","ct_state":"invalid","proto":"tcp","src":"192.0.2.10","sport":51000,"dst":"192.0.2.2","dport":80,"len":64,"in_iface":"eth0","service":"web","rule":null,"log_rule":null,"mark":null,"peer":"192.0.2.10","patterns":["duplicate_ack"],"offset":1024000000}
{"ts":"2024-05-01T12:00:30.000000Z","event":"packet","queue":0,"verdict":"accept","would_drop":true,"would_accept":false,"disposition":"pass","mode":"log-only","reason":"rst_out_of_window","detail":"RST outside the window (blind reset attack)","class":"hostile","ct_state":"invalid","proto":"tcp","src":"203.0.113.9","sport":9999,"dst":"192.0.2.2","dport":443,"len":40,"in_iface":"eth0","service":"web","rule":null,"log_rule":null,"mark":null,"peer":"203.0.113.9","patterns":[]}
{"ts":"2024-05-01T12:00:40.000000Z","event":"packet","queue":0,"verdict":"accept","would_drop":true,"would_accept":false,"disposition":"pass","mode":"log-only","reason":"rst_out_of_window","detail":"RST outside the window (blind reset attack)","class":"hostile","ct_state":"invalid","proto":"tcp","src":"203.0.113.9","sport":9998,"dst":"192.0.2.2","dport":443,"len":40,"in_iface":"eth0","service":"web","rule":null,"log_rule":null,"mark":null,"peer":"203.0.113.9","patterns":[]}
{"ts":"2024-05-01T12:00:50.000000Z","event":"packet","queue":0,"verdict":"accept","would_drop":true,"would_accept":false,"disposition":"pass","mode":"log-only","reason":"rst_out_of_window","detail":"RST outside the window (blind reset attack)","class":"hostile","ct_state":"invalid","proto":"tcp","src":"203.0.113.9","sport":9997,"dst":"192.0.2.2","dport":443,"len":40,"in_iface":"eth0","service":"web","rule":null,"log_rule":null,"mark":null,"peer":"203.0.113.9","patterns":[]}
-- Journal begins here --
{"ts":"2024-05-01T12:01:00.000000Z","event":"suppressed","reason":"slightly_beyond_window","count":4}
{"ts":"2024-05-01T12:01:00.000000Z","event":"peer_summary","interval_s":60,"peer":"198.51.100.7","patterns":{"retransmission":12,"duplicate_ack":30,"window_update":2},"benign":5,"hostile":0,"sack_displaced":0,"total":{"patterns":{"retransmission":12,"duplicate_ack":30},"benign":5,"hostile":0,"sack_displaced":0}}
{"ts":"2024-05-01T12:02:00.000000Z","event":"peer_summary","interval_s":60,"peer":"198.51.100.7","patterns":{"retransmission":3},"benign":0,"hostile":0,"sack_displaced":0,"total":{"patterns":{"retransmission":15,"duplicate_ack":30},"benign":5,"hostile":0,"sack_displaced":0}}
{"ts":"2024-05-01T12:02:05.000000Z","event":"stop","error":null,"packets":120,"accepted":120,"dropped":0,"would_drop":3,"shed":0,"events_suppressed":4}
"#;

#[test]
fn events_log_draws_summaries_middlebox_and_hostile_peers() {
    let Some(browser) =
        skip_without_chromium("events_log_draws_summaries_middlebox_and_hostile_peers")
    else {
        return;
    };
    let dir = tmpdir("events");
    let log = dir.join("nfqwall.log");
    std::fs::write(&log, EVENTS).unwrap();
    let html = dir.join("events.html");
    let text = report(&log, &html, &[]);
    assert!(
        text.contains(": events log; 13 event lines"),
        "detected by content"
    );
    assert!(text.contains("1 line was not a JSON object"));
    let dom = dump_dom(&browser, &dir, &html);
    self_contained(&dom);
    let secs = sections(&dom);
    let peers: Vec<&str> = secs.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(peers, ["198.51.100.7", "192.0.2.10", "203.0.113.9"]);
    // From the two summaries (window_update is not a contract pattern): each drawn
    // in the middle of its interval, the ends of this peer's timeline.
    assert_eq!(
        rows(&secs[0].1),
        [
            ("retransmission".to_string(), 15, 2),
            ("duplicate_ack".to_string(), 30, 1),
            ("doubtful (benign)".to_string(), 5, 1),
        ]
    );
    // From packet lines, one second apart: a mark each.
    assert_eq!(
        rows(&secs[1].1),
        [
            ("duplicate_ack".to_string(), 4, 4),
            ("doubtful (benign)".to_string(), 4, 4),
        ]
    );
    assert_eq!(rows(&secs[2].1), [("hostile".to_string(), 3, 3)]);
    assert!(secs[2].1.contains("rst_out_of_window"));
    assert!(secs[2].1.contains("class=\"hostile\""));
    assert_eq!(offsets(&dom), vec![1_024_000_000; 2]);
    assert!(dom.contains("192.0.2.10:51000"));
    // The suppressed lines count in the overall reasons: 1 written + 4 suppressed.
    let overview = dom.split("<section class=\"peer\"").next().unwrap();
    assert!(
        overview.contains(
            "<td class=\"mono\">slightly_beyond_window</td><td>benign</td><td class=\"n\">5</td>"
        ),
        "{overview}"
    );

    // --top 1 draws one.
    let html = dir.join("top1.html");
    report(&log, &html, &["--top", "1"]);
    let dom = dump_dom(&browser, &dir, &html);
    assert_eq!(sections(&dom).len(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn neither_capture_nor_events_log_is_refused() {
    let dir = tmpdir("bad");
    let f = dir.join("notes.txt");
    std::fs::write(&f, "hello\n").unwrap();
    let o = Command::new(BIN)
        .arg("report")
        .arg(&f)
        .arg("-o")
        .arg(dir.join("x.html"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("neither an events log (JSON lines) nor a capture"),
        "{err}"
    );
    assert!(!dir.join("x.html").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
