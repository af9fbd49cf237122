//! A supervised child process: output kept in a ring buffer, stop by SIGTERM then SIGKILL,
//! and an exit that is reported with the child's last log lines instead of being hidden.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use super::StackError;

const LOG_LINES: usize = 200;

/// How a supervised child ended.
#[derive(Debug, Clone)]
pub struct ChildExit {
    /// Service name.
    pub name: String,
    /// Exit status in words.
    pub status: String,
    /// The last lines it printed.
    pub log: String,
}

impl std::fmt::Display for ChildExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} exited ({}); last log lines:\n{}",
            self.name, self.status, self.log
        )
    }
}

/// A running child process that is killed when dropped.
#[derive(Debug)]
pub struct ManagedChild {
    name: String,
    child: Child,
    log: Arc<Mutex<VecDeque<String>>>,
    /// Write end of the child's stdin; when our process dies, however it dies, the pipe closes
    /// and the tether script stops the service, so no orphan anvil or Kubo outlives us.
    _tether: Option<tokio::process::ChildStdin>,
}

/// Runs the program in the background, forwards SIGTERM/SIGINT to it, kills it when stdin
/// reaches end-of-file (our process is gone), and exits with its status.
/// (Background jobs of a non-interactive sh read /dev/null, hence stdin is kept as fd 3.)
/// The first `wait` is unconditional: a program that exits at once must still report its own
/// status; the loop then waits again when a forwarded signal interrupted `wait`.
const TETHER: &str = r#"exec 3<&0
"$@" </dev/null 3<&- & c=$!
trap 'kill -TERM $c 2>/dev/null' TERM INT
(while read -r _ <&3; do :; done; kill -TERM $c 2>/dev/null) & r=$!
wait $c; s=$?
while kill -0 $c 2>/dev/null; do wait $c; s=$?; done
kill $r 2>/dev/null
exit $s"#;

impl ManagedChild {
    /// Spawns `cmd` with piped output; `echo` also forwards its lines to our tracing log.
    ///
    /// # Errors
    /// [`StackError::Spawn`] when the program cannot be started.
    pub fn spawn(name: &str, cmd: Command, echo: bool) -> Result<Self, StackError> {
        let std_cmd = cmd.as_std();
        let program = std_cmd.get_program().to_owned();
        // Spawn errors must name the real program, and a missing one must fail here, not in sh.
        // A path must exist now; a bare name is looked up on PATH by the shell.
        let is_path = program.to_string_lossy().contains('/');
        if let (true, Err(source)) = (is_path, std::fs::metadata(&program)) {
            return Err(StackError::Spawn {
                name: name.into(),
                path: program.to_string_lossy().into_owned(),
                source,
            });
        }
        let mut tethered = Command::new("sh");
        tethered
            .arg("-c")
            .arg(TETHER)
            .arg("tether")
            .arg(&program)
            .args(std_cmd.get_args());
        for (k, v) in std_cmd.get_envs() {
            match v {
                Some(v) => tethered.env(k, v),
                None => tethered.env_remove(k),
            };
        }
        if let Some(dir) = std_cmd.get_current_dir() {
            tethered.current_dir(dir);
        }
        tethered
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::piped())
            .kill_on_drop(true);
        let mut child = tethered.spawn().map_err(|source| StackError::Spawn {
            name: name.into(),
            path: program.to_string_lossy().into_owned(),
            source,
        })?;
        let tether = child.stdin.take();
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_LINES)));
        if let Some(out) = child.stdout.take() {
            pump(name.to_owned(), out, log.clone(), echo);
        }
        if let Some(err) = child.stderr.take() {
            pump(name.to_owned(), err, log.clone(), echo);
        }
        Ok(Self {
            name: name.into(),
            child,
            log,
            _tether: tether,
        })
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The operating-system process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The last lines the child printed, oldest first.
    pub fn last_log(&self) -> String {
        // A poisoned lock only means a pump task panicked mid-push; the lines are still usable.
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// `Some(exit)` if the child has already exited.
    pub fn exited(&mut self) -> Option<ChildExit> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(self.exit_report(status.to_string())),
            Ok(None) => None,
            Err(e) => Some(self.exit_report(format!("wait failed: {e}"))),
        }
    }

    /// Waits until the child exits by itself.
    pub async fn wait_exit(&mut self) -> ChildExit {
        let status = match self.child.wait().await {
            Ok(s) => s.to_string(),
            Err(e) => format!("wait failed: {e}"),
        };
        // Give the output pumps a moment to drain the last lines.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.exit_report(status)
    }

    /// Polls `healthy` until it returns true, failing early if the child exits.
    ///
    /// # Errors
    /// [`StackError::Crashed`] or [`StackError::Unhealthy`], both with the last log lines.
    pub async fn wait_healthy<F, Fut>(
        &mut self,
        timeout: Duration,
        mut healthy: F,
    ) -> Result<(), StackError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = tokio::time::Instant::now();
        loop {
            if let Some(exit) = self.exited() {
                return Err(StackError::Crashed {
                    name: exit.name,
                    status: exit.status,
                    log: exit.log,
                });
            }
            if healthy().await {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(StackError::Unhealthy {
                    name: self.name.clone(),
                    waited: timeout,
                    log: self.last_log(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the child: SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            if tokio::time::timeout(grace, self.child.wait())
                .await
                .is_err()
            {
                tracing::warn!(service = %self.name, "did not stop on SIGTERM within {grace:?}; killing");
                let _ = self.child.kill().await;
            }
        }
    }

    fn exit_report(&self, status: String) -> ChildExit {
        ChildExit {
            name: self.name.clone(),
            status,
            log: self.last_log(),
        }
    }
}

fn pump<R: AsyncRead + Unpin + Send + 'static>(
    name: String,
    out: R,
    log: Arc<Mutex<VecDeque<String>>>,
    echo: bool,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(out).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if echo {
                tracing::debug!(target: "ehr::child", service = %name, "{line}");
            }
            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
            if log.len() == LOG_LINES {
                log.pop_front();
            }
            log.push_back(line);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_crash_is_reported_with_its_last_lines() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo starting; echo 'fatal: port in use' >&2; exit 3"]);
        let mut child = ManagedChild::spawn("demo", cmd, false).unwrap();
        let err = child
            .wait_healthy(Duration::from_secs(5), || async { false })
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("demo exited during start-up"), "{text}");
        assert!(text.contains("exit status: 3"), "{text}");
    }

    #[tokio::test]
    async fn stop_terminates_a_running_child() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let mut child = ManagedChild::spawn("sleeper", cmd, false).unwrap();
        assert!(child.exited().is_none());
        child.stop(Duration::from_secs(2)).await;
        assert!(child.exited().is_some());
    }

    #[tokio::test]
    async fn a_missing_program_names_the_setup_script() {
        let cmd = Command::new("/nonexistent/anvil");
        let err = ManagedChild::spawn("anvil", cmd, false).unwrap_err();
        assert!(err.to_string().contains("scripts/setup"));
    }
}
