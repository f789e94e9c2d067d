//! Background processes started by a test (transfer servers and clients, pingers, a router
//! run by hand): killed by PID when dropped, so a failing test leaves nothing running.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A process started by the test, with its stdout and stderr captured.
#[derive(Debug)]
pub struct Background {
    what: String,
    child: Option<Child>,
}

/// How a background process ended.
#[derive(Debug, Clone)]
pub struct Finished {
    /// What the process was (for messages).
    pub what: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// Fails unless the process exited 0; the error quotes its output.
    pub fn success(self) -> Result<Finished> {
        if !self.status.success() {
            bail!("{self}");
        }
        Ok(self)
    }
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} exited with {}\n--- stdout\n{}--- stderr\n{}",
            self.what, self.status, self.stdout, self.stderr
        )
    }
}

impl Background {
    /// Starts `cmd` with piped stdout and stderr (the tools used here print a few lines, far
    /// less than a pipe holds, so nobody needs to read while they run).
    pub fn spawn(what: impl Into<String>, mut cmd: Command) -> Result<Background> {
        let what = what.into();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Background {
            what,
            child: Some(child),
        })
    }

    /// Starts `cmd` with stdout and stderr appended to `log` (for chatty processes such as a
    /// router run by hand).
    pub fn spawn_logged(
        what: impl Into<String>,
        mut cmd: Command,
        log: &std::path::Path,
    ) -> Result<Background> {
        let what = what.into();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = file.try_clone().context("duplicating a file handle")?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Background {
            what,
            child: Some(child),
        })
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits until the process exits, at most `timeout` (then kills it and fails).
    pub fn wait(mut self, timeout: Duration) -> Result<Finished> {
        let Some(mut child) = self.child.take() else {
            bail!("{} was already reaped", self.what);
        };
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().context("waiting for a child")? {
                break status;
            }
            if start.elapsed() >= timeout {
                let _ = child.kill();
                let _ = child.wait();
                let out = collect(&mut child);
                bail!(
                    "{} still ran after {:.0} s; killed\n--- stdout\n{}--- stderr\n{}",
                    self.what,
                    timeout.as_secs_f64(),
                    out.0,
                    out.1
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let (stdout, stderr) = collect(&mut child);
        Ok(Finished {
            what: self.what.clone(),
            status,
            stdout,
            stderr,
        })
    }

    /// Sends SIGTERM (by PID, with the `kill` command) and waits for the exit.
    pub fn terminate(self, timeout: Duration) -> Result<Finished> {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .context("running kill")?;
            if !status.success() {
                bail!("kill -TERM {pid} ({}) failed", self.what);
            }
        }
        self.wait(timeout)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn collect(child: &mut Child) -> (String, String) {
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(pipe) = child.stdout.as_mut() {
        let _ = pipe.read_to_string(&mut stdout);
    }
    if let Some(pipe) = child.stderr.as_mut() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    (stdout, stderr)
}
