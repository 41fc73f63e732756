//! External commands with a bounded wait.
//!
//! Every command nfqwall runs (`iptables-save`, `iptables-restore`, `nft`) goes through
//! [`run`]: the child gets its own process group, its output is read on helper threads,
//! and if it has not exited after [`timeout`] (default [`DEFAULT_TIMEOUT`]) the whole
//! group is killed with SIGKILL and reaped, and the error names the command and the
//! limit. A hung iptables (a held xtables lock, a stuck netlink socket, a wedged
//! wrapper script) therefore never holds up the caller for longer than that.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Once};
use std::time::{Duration, Instant};

use super::apply::RulesError;

/// How long a command may run unless [`set_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The environment variable that overrides [`DEFAULT_TIMEOUT`], in seconds (fractions
/// allowed); read once, at the first command (or [`set_timeout`]) of the process.
pub const TIMEOUT_ENV: &str = "NFQWALL_COMMAND_TIMEOUT";

static TIMEOUT_MS: AtomicU64 = AtomicU64::new(DEFAULT_TIMEOUT.as_millis() as u64);
static FROM_ENV: Once = Once::new();

fn init_from_env() {
    FROM_ENV.call_once(|| {
        if let Ok(v) = std::env::var(TIMEOUT_ENV) {
            match parse_seconds(&v) {
                Some(d) => store(d),
                None => eprintln!(
                    "nfqwall: {TIMEOUT_ENV}={v:?} is not a number of seconds; using {} s",
                    DEFAULT_TIMEOUT.as_secs()
                ),
            }
        }
    });
}

fn store(limit: Duration) {
    TIMEOUT_MS.store((limit.as_millis() as u64).max(1), Ordering::Relaxed);
}

/// Sets the limit for every later command of this process (at least 1 ms); it wins
/// over [`TIMEOUT_ENV`].
pub fn set_timeout(limit: Duration) {
    init_from_env();
    store(limit);
}

/// The limit in force.
pub fn timeout() -> Duration {
    init_from_env();
    Duration::from_millis(TIMEOUT_MS.load(Ordering::Relaxed))
}

/// Parses a limit in seconds ("10", "2.5"); `None` unless positive and finite.
pub fn parse_seconds(text: &str) -> Option<Duration> {
    let s: f64 = text.trim().parse().ok()?;
    (s.is_finite() && s > 0.0 && s < 86_400.0).then(|| Duration::from_secs_f64(s))
}

/// The value for `iptables-restore --wait N`: how long to wait for the xtables lock,
/// whole seconds, half the command limit (at least 1), so that a held lock ends in
/// iptables' own clear error before the kill.
pub fn lock_wait_seconds() -> u64 {
    (timeout().as_secs() / 2).max(1)
}

/// The command line as one string, for errors.
pub fn display(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads `pipe` to its end on a helper thread; the result arrives on the receiver.
fn drain(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Runs `cmd` (feeding `stdin` if given) for at most [`timeout`]; its stdout, or an
/// error naming the command and its stderr (or the limit it overran).
pub fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<String, RulesError> {
    run_for(cmd, stdin, timeout())
}

/// [`run`] with an explicit limit.
pub fn run_for(
    cmd: &mut Command,
    stdin: Option<&str>,
    limit: Duration,
) -> Result<String, RulesError> {
    let command = display(cmd);
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
        // Its own group, so a timeout kills whatever it started too (a wrapper script's
        // children would otherwise keep the pipes open).
        .process_group(0)
        .spawn()
        .map_err(spawn_err)?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let text = text.to_string();
        // A write error means the child exited early; its status and stderr say why.
        std::thread::spawn(move || {
            let _ = pipe.write_all(text.as_bytes());
        });
    }
    let out = drain(child.stdout.take().expect("piped"));
    let err = drain(child.stderr.take().expect("piped"));
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let pid = child.id() as libc::pid_t;
                // SAFETY: kill(2) on the child's own process group (we made it with
                // process_group(0), so its id is the child's pid); no memory involved.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                let _ = child.kill();
                let _ = child.wait();
                return Err(RulesError::Timeout {
                    command,
                    limit,
                    stderr: String::from_utf8_lossy(
                        &err.recv_timeout(Duration::from_secs(1)).unwrap_or_default(),
                    )
                    .trim()
                    .to_string(),
                });
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) => return Err(spawn_err(e)),
        }
    };
    // The pipes close when the child (and its group) exits; a grandchild that left the
    // group and keeps them open must not hold us up either.
    let grace = Duration::from_secs(1);
    let stdout = out.recv_timeout(grace).unwrap_or_default();
    let stderr = err.recv_timeout(grace).unwrap_or_default();
    if status.success() {
        Ok(String::from_utf8_lossy(&stdout).into_owned())
    } else {
        Err(RulesError::Failed {
            command,
            status: status.to_string(),
            stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
            line: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_status_and_stdin() {
        let out = run_for(
            Command::new("sh").args(["-c", "cat; echo done"]),
            Some("in\n"),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(out, "in\ndone\n");
        let e = run_for(
            Command::new("sh").args(["-c", "echo oops >&2; exit 3"]),
            None,
            Duration::from_secs(5),
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("`sh -c echo oops >&2; exit 3` failed (exit status: 3): oops"),
            "{text}"
        );
    }

    #[test]
    fn a_hung_command_is_killed_with_its_children_and_named() {
        let started = Instant::now();
        // The shell's child `sleep` holds stdout open: only a group kill ends it.
        let e = run_for(
            Command::new("sh").args(["-c", "sleep 30; echo never"]),
            None,
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let text = e.to_string();
        assert!(
            text.contains("`sh -c sleep 30; echo never`") && text.contains("0.3 s"),
            "{text}"
        );
    }

    #[test]
    fn seconds_parse() {
        assert_eq!(parse_seconds("10"), Some(Duration::from_secs(10)));
        assert_eq!(parse_seconds("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_seconds("0"), None);
        assert_eq!(parse_seconds("-1"), None);
        assert_eq!(parse_seconds("x"), None);
        assert_eq!(parse_seconds("inf"), None);
    }
}
