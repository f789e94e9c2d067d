//! `skyvine-qmp`: the lab's QMP client. It drives the QEMU guest of `netns-lab/lab.sh`: waits
//! for a QEMU's monitor, live-migrates a guest from one QEMU to another and reports the guest's
//! off time from the QMP events (source `STOP` to destination `RESUME`), and quits a QEMU.
//!
//! QMP is a handful of JSON lines here, so the client is this file plus `skyvine_labtools::qmp`
//! rather than a generated binding of every QEMU command (the `qapi` crate), which would cost
//! the lab's build far more than the five commands it needs.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};
use skyvine_labtools::qmp::{self, Event, Message, MigrationState};

/// QMP client for the lab's QEMU guest.
#[derive(Debug, Parser)]
#[command(version)]
enum Command {
    /// Wait until a QEMU answers on its QMP socket; print its run state (`status=running`).
    Status {
        /// The QEMU's QMP socket (`-qmp unix:PATH,server=on,wait=off`).
        #[arg(long)]
        socket: PathBuf,
        /// Give up after this many seconds without an answer.
        #[arg(long, default_value_t = 30.0)]
        wait_s: f64,
    },
    /// Live-migrate the guest of SOURCE into DESTINATION (a QEMU started with `-incoming URI`)
    /// and print one line: the outcome, the guest's off time from the QMP events and QEMU's
    /// own figures.
    Migrate {
        /// The running source QEMU's QMP socket.
        #[arg(long)]
        source: PathBuf,
        /// The waiting destination QEMU's QMP socket.
        #[arg(long)]
        destination: PathBuf,
        /// The migration URI the destination listens on (its `-incoming`), e.g. unix:/path.
        #[arg(long)]
        uri: String,
        /// The destination was started paused (`-S`): resume it with `cont` once the
        /// migration completed, as libvirt does.
        #[arg(long)]
        paused_destination: bool,
        /// Migration bandwidth limit in MiB/s; 0 leaves QEMU's default. The default is
        /// unlimited in practice, as libvirt sets it.
        #[arg(long, default_value_t = 8_388_608)]
        max_bandwidth_mib: u64,
        /// The longest stop-and-copy phase QEMU aims for, in ms (its `downtime-limit`); by
        /// default QEMU's own (300 ms).
        #[arg(long)]
        downtime_limit_ms: Option<u64>,
        /// Quit the source QEMU once the destination runs.
        #[arg(long)]
        quit_source: bool,
        /// Give up (and cancel the migration) after this many seconds.
        #[arg(long, default_value_t = 300.0)]
        timeout_s: f64,
    },
    /// Resume a QEMU whose guest is stopped (e.g. a migration source after a failed move);
    /// a running one is left as it is. Prints the run state before.
    Cont {
        /// The QEMU's QMP socket.
        #[arg(long)]
        socket: PathBuf,
    },
    /// Ask a QEMU to quit.
    Quit {
        /// The QEMU's QMP socket.
        #[arg(long)]
        socket: PathBuf,
    },
}

fn main() -> Result<()> {
    match Command::parse() {
        Command::Status { socket, wait_s } => {
            let mut qemu = Qmp::connect(&socket, seconds(wait_s)?)?;
            let status = qemu.execute("query-status", Value::Null)?;
            println!(
                "status={}",
                status
                    .get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
            );
            Ok(())
        }
        Command::Migrate {
            source,
            destination,
            uri,
            paused_destination,
            max_bandwidth_mib,
            downtime_limit_ms,
            quit_source,
            timeout_s,
        } => {
            let run = Migration {
                source,
                destination,
                uri,
                paused_destination,
                max_bandwidth: max_bandwidth_mib.saturating_mul(1 << 20),
                downtime_limit_ms,
                quit_source,
                timeout: seconds(timeout_s)?,
            };
            println!("{}", run.execute()?);
            Ok(())
        }
        Command::Cont { socket } => {
            let mut qemu = Qmp::connect(&socket, Duration::from_secs(5))?;
            let status = run_state(&mut qemu)?;
            if status != "running" {
                qemu.execute("cont", Value::Null)?;
            }
            println!("status={status}");
            Ok(())
        }
        Command::Quit { socket } => Qmp::connect(&socket, Duration::from_secs(5))?.quit(),
    }
}

fn seconds(value: f64) -> Result<Duration> {
    if !(value.is_finite() && value > 0.0 && value <= 86_400.0) {
        bail!("a timeout must be > 0 and at most 86400 seconds, got {value}");
    }
    Ok(Duration::from_secs_f64(value))
}

/// How long one command may take to be answered.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Between two `query-migrate` polls.
const POLL: Duration = Duration::from_millis(10);

/// One QMP connection, capabilities negotiated; events are kept as they arrive.
struct Qmp {
    what: String,
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    partial: Vec<u8>,
    events: Vec<Event>,
    next_id: u64,
}

impl Qmp {
    /// Connects (retrying until the socket accepts, at most `wait`), reads the greeting and
    /// negotiates capabilities.
    fn connect(socket: &Path, wait: Duration) -> Result<Qmp> {
        let what = format!("QMP {}", socket.display());
        let deadline = Instant::now() + wait;
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(stream) => break stream,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("connecting to {what} (waited {:.0} s)", wait.as_secs_f64())
                    })
                }
            }
        };
        let reader = BufReader::new(stream.try_clone().context("duplicating the socket")?);
        let mut qmp = Qmp {
            what,
            writer: stream,
            reader,
            partial: Vec::new(),
            events: Vec::new(),
            next_id: 1,
        };
        match qmp.next_message(Instant::now() + REPLY_TIMEOUT)? {
            Some(Message::Greeting { .. }) => {}
            other => bail!("{}: expected the QMP greeting, got {other:?}", qmp.what),
        }
        qmp.execute("qmp_capabilities", Value::Null)?;
        Ok(qmp)
    }

    /// Runs one command; returns its result (events that arrive meanwhile are kept).
    fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        self.writer
            .write_all(qmp::command(command, arguments, id).as_bytes())
            .with_context(|| format!("{}: sending {command}", self.what))?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            match self.next_message(deadline)? {
                Some(Message::Return {
                    id: Some(got),
                    value,
                }) if got == id => return Ok(value),
                Some(Message::Error {
                    id: Some(got),
                    class,
                    desc,
                }) if got == id => bail!("{}: {command} failed: {class}: {desc}", self.what),
                Some(Message::Event(event)) => self.events.push(event),
                Some(other) => bail!("{}: unexpected reply to {command}: {other:?}", self.what),
                None => bail!(
                    "{}: no reply to {command} within {} s",
                    self.what,
                    REPLY_TIMEOUT.as_secs()
                ),
            }
        }
    }

    /// Reads events for up to `wait`.
    fn pump(&mut self, wait: Duration) -> Result<()> {
        let deadline = Instant::now() + wait;
        while let Some(message) = self.next_message(deadline)? {
            match message {
                Message::Event(event) => self.events.push(event),
                other => bail!("{}: unexpected message {other:?}", self.what),
            }
        }
        Ok(())
    }

    /// The first kept event called `name`, reading more for up to `wait`.
    fn wait_event(&mut self, name: &str, wait: Duration) -> Result<Event> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(event) = self.events.iter().find(|e| e.name == name) {
                return Ok(event.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "{}: no {name} event within {:.1} s (events seen: {})",
                    self.what,
                    wait.as_secs_f64(),
                    self.event_names()
                );
            }
            self.pump(left.min(POLL))?;
        }
    }

    fn event_names(&self) -> String {
        let names: Vec<&str> = self.events.iter().map(|e| e.name.as_str()).collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(" ")
        }
    }

    /// Sends `quit`; QEMU may close the socket before or after it answers.
    fn quit(mut self) -> Result<()> {
        match self.execute("quit", Value::Null) {
            Ok(_) => Ok(()),
            Err(e) if format!("{e:#}").contains("closed the QMP connection") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The next complete message, or None once `deadline` passed without one.
    fn next_message(&mut self, deadline: Instant) -> Result<Option<Message>> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.reader
                .get_ref()
                .set_read_timeout(Some(left))
                .context("setting a read timeout")?;
            // read_until keeps what it read before a timeout in `partial`: nothing is lost.
            match self.reader.read_until(b'\n', &mut self.partial) {
                Ok(0) => bail!("{}: QEMU closed the QMP connection", self.what),
                Ok(_) if self.partial.ends_with(b"\n") => {
                    let line = String::from_utf8_lossy(&self.partial).into_owned();
                    self.partial.clear();
                    if line.trim().is_empty() {
                        continue;
                    }
                    return qmp::parse(&line)
                        .map(Some)
                        .with_context(|| format!("{}: bad line from QEMU", self.what));
                }
                Ok(_) => bail!("{}: QEMU closed the QMP connection mid-line", self.what),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).with_context(|| format!("{}: reading", self.what)),
            }
        }
    }
}

struct Migration {
    source: PathBuf,
    destination: PathBuf,
    uri: String,
    paused_destination: bool,
    max_bandwidth: u64,
    downtime_limit_ms: Option<u64>,
    quit_source: bool,
    timeout: Duration,
}

impl Migration {
    fn execute(&self) -> Result<String> {
        let deadline = Instant::now() + self.timeout;
        let mut dst = Qmp::connect(&self.destination, Duration::from_secs(30))?;
        let status = run_state(&mut dst)?;
        if status != "inmigrate" {
            bail!("the destination QEMU is {status}, not waiting for an incoming migration");
        }
        let mut src = Qmp::connect(&self.source, Duration::from_secs(30))?;
        let status = run_state(&mut src)?;
        if status != "running" {
            bail!("the source QEMU is {status}, not running");
        }
        let mut parameters = serde_json::Map::new();
        if self.max_bandwidth > 0 {
            parameters.insert("max-bandwidth".into(), self.max_bandwidth.into());
        }
        if let Some(limit) = self.downtime_limit_ms {
            parameters.insert("downtime-limit".into(), limit.into());
        }
        if !parameters.is_empty() {
            src.execute("migrate-set-parameters", Value::Object(parameters))?;
        }
        let started = Instant::now();
        src.execute("migrate", json!({ "uri": self.uri }))?;
        let info = loop {
            let info = src.execute("query-migrate", Value::Null)?;
            match qmp::migration_state(&info) {
                MigrationState::Completed => break info,
                MigrationState::Failed(why) => bail!("the migration failed: {why}"),
                MigrationState::Running(_) if Instant::now() >= deadline => {
                    let _ = src.execute("migrate_cancel", Value::Null);
                    bail!(
                        "the migration did not complete within {:.0} s: cancelled",
                        self.timeout.as_secs_f64()
                    );
                }
                MigrationState::Running(_) => dst.pump(POLL)?,
            }
        };
        let completed = started.elapsed();
        let stop = src.wait_event("STOP", Duration::from_secs(10))?;
        if self.paused_destination {
            wait_incoming_done(&mut dst, deadline)?;
            dst.execute("cont", Value::Null)?;
        }
        let resume = dst.wait_event("RESUME", Duration::from_secs(30))?;
        if self.quit_source {
            // The guest runs at the destination now: a source that does not quit is the
            // caller's to stop, not a failed migration.
            if let Err(e) = src.quit() {
                eprintln!("skyvine-qmp: the source did not quit: {e:#}");
            }
        }
        let figure = |key| qmp::migration_ms(&info, key).map_or("NA".into(), |v| v.to_string());
        Ok(format!(
            "qmp-migrate status=completed off_ms={:.3} stop_us={} resume_us={} \
             migrate_ms={:.1} qemu_total_ms={} qemu_downtime_ms={} qemu_setup_ms={} \
             paused_destination={}",
            qmp::off_time_ms(&stop, &resume),
            stop.at_us,
            resume.at_us,
            completed.as_secs_f64() * 1000.0,
            figure("total-time"),
            figure("downtime"),
            figure("setup-time"),
            if self.paused_destination { "yes" } else { "no" },
        ))
    }
}

fn run_state(qemu: &mut Qmp) -> Result<String> {
    let status = qemu.execute("query-status", Value::Null)?;
    Ok(status
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_owned())
}

/// A paused destination leaves `inmigrate` for `paused` once the incoming state is loaded.
fn wait_incoming_done(dst: &mut Qmp, deadline: Instant) -> Result<()> {
    loop {
        match run_state(dst)?.as_str() {
            "inmigrate" if Instant::now() < deadline => dst.pump(POLL)?,
            "inmigrate" => bail!("the destination still loads the incoming state: timed out"),
            "paused" | "prelaunch" => return Ok(()),
            other => bail!("the paused destination is {other}, not paused, after the migration"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixListener;

    /// A scripted QEMU: greets, then for each command read answers with the next reply;
    /// writes go out in small pieces so lines arrive split.
    fn fake_qemu(path: &Path, replies: Vec<&'static str>) -> std::thread::JoinHandle<Vec<String>> {
        let listener = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut send = |text: &str| {
                for piece in text.as_bytes().chunks(7) {
                    stream.write_all(piece).unwrap();
                    std::thread::sleep(Duration::from_millis(1));
                }
            };
            send("{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n");
            let mut commands = Vec::new();
            for reply in replies {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                commands.push(line.trim().to_owned());
                send(reply);
            }
            let mut rest = String::new();
            let _ = reader.read_to_string(&mut rest);
            commands
        })
    }

    #[test]
    fn replies_are_matched_by_id_and_events_in_between_are_kept() {
        let dir = std::env::temp_dir().join(format!("skyvine-qmp-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("qmp.sock");
        let _ = std::fs::remove_file(&socket);
        let server = fake_qemu(
            &socket,
            vec![
                "{\"return\": {}, \"id\": 1}\n",
                "{\"timestamp\": {\"seconds\": 10, \"microseconds\": 5}, \"event\": \"STOP\"}\n\
                 {\"return\": {\"status\": \"paused\", \"running\": false}, \"id\": 2}\n",
                "{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}, \"id\": 3}\n",
            ],
        );
        let mut qmp = Qmp::connect(&socket, Duration::from_secs(5)).unwrap();
        assert_eq!(run_state(&mut qmp).unwrap(), "paused");
        let stop = qmp.wait_event("STOP", Duration::from_secs(1)).unwrap();
        assert_eq!(stop.at_us, 10_000_005);
        let err = qmp.execute("cont", Value::Null).unwrap_err();
        assert!(format!("{err:#}").contains("GenericError: nope"), "{err:#}");
        assert!(qmp.wait_event("RESUME", Duration::from_millis(50)).is_err());
        drop(qmp);
        let commands = server.join().unwrap();
        assert_eq!(
            commands,
            [
                r#"{"execute":"qmp_capabilities","id":1}"#,
                r#"{"execute":"query-status","id":2}"#,
                r#"{"execute":"cont","id":3}"#,
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
