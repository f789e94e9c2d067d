//! The admin CLI against routers in the network-namespace lab (root only): tables reflect a
//! migration, `route` picks the /32 over its /24, `--json` parses, the admin socket refuses a
//! non-root user and survives garbage, and the metrics endpoint serves a parseable scrape.

// Test helpers fail loudly on purpose: a failed command or bad output is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use skyvine_tests::openmetrics;

const METRICS_ADDR: &str = "127.0.0.1:9477";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn skyvine_bin() -> PathBuf {
    std::env::var_os("SKYVINE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/release/skyvine"))
}

/// A lab with its own prefix, taken down on drop (also when the test fails).
struct Lab {
    prefix: String,
}

impl Lab {
    fn up() -> Lab {
        let prefix = format!("svadm{}", std::process::id() % 100_000);
        let lab = Lab { prefix };
        lab.lab_ok(&["up", "--sites", "3"]);
        lab
    }

    fn lab(&self, args: &[&str]) -> Output {
        Command::new(workspace().join("netns-lab/lab.sh"))
            .args(args)
            .args(["--prefix", &self.prefix])
            .env("SKYVINE_BIN", skyvine_bin())
            .output()
            .expect("running netns-lab/lab.sh")
    }

    /// Runs `lab.sh ARGS…` and fails the test, with its stderr, unless it succeeds.
    fn lab_ok(&self, args: &[&str]) {
        let out = self.lab(args);
        assert!(
            out.status.success(),
            "lab.sh {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn state(&self) -> PathBuf {
        PathBuf::from(format!("/tmp/skyvine-lab-{}", self.prefix))
    }

    fn socket(&self, site: &str) -> PathBuf {
        self.state().join(site).join("skyvine.sock")
    }

    /// `skyvine ARGS --socket <site's socket>` inside the site's router namespace.
    fn skyvine(&self, site: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &format!("{}-r-{site}", self.prefix)])
            .arg(skyvine_bin())
            .args(args)
            .arg("--socket")
            .arg(self.socket(site))
            .output()
            .expect("running skyvine")
    }

    fn json(&self, site: &str, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.skyvine(site, &args);
        assert!(
            out.status.success(),
            "skyvine {args:?} at {site}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "skyvine {args:?} printed invalid JSON ({e}):\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = self.lab(&["down"]);
        if !out.status.success() {
            eprintln!("lab down failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// Polls `check` until it returns `Some`, failing with `what` after `limit`.
fn poll<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn gndt_site(tables: &Value, prefix: &str) -> Option<String> {
    tables["gndt"]
        .as_array()?
        .iter()
        .find(|row| row["prefix"] == prefix && row["withdrawn"] == false)
        .and_then(|row| row["site"].as_str().map(str::to_owned))
}

#[test]
fn admin_cli_against_lab_routers() {
    // Skips for a developer without root; fails in CI (SKYVINE_REQUIRE_ROOT_TESTS=1).
    if skyvine_tests::skip_unless_root() {
        return;
    }
    assert!(
        skyvine_bin().exists(),
        "{} missing: cargo build --release --workspace --bins",
        skyvine_bin().display()
    );
    let lab = Lab::up();

    // Metrics on router c: the lab has no option for it, so add the key and restart c.
    let config = lab.state().join("c/router.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("\n[admin]\n"), "{text}");
    let text = text.replacen(
        "\n[admin]\n",
        &format!("\n[admin]\nmetrics = \"{METRICS_ADDR}\"\n"),
        1,
    );
    std::fs::write(&config, text).unwrap();
    lab.lab_ok(&["restart-router", "c"]);
    poll(
        "router c back with both peers",
        Duration::from_secs(20),
        || {
            let out = lab.skyvine("c", &["status", "--json"]);
            let status: Value = serde_json::from_slice(&out.stdout).ok()?;
            (status["counts"]["peers_up"] == 2).then_some(())
        },
    );

    // Every router lists the other sites' prefixes.
    let tables = lab.json("a", &["tables"]);
    assert_eq!(tables["site"], "a");
    assert_eq!(gndt_site(&tables, "10.77.2.0/24").as_deref(), Some("b"));
    assert_eq!(gndt_site(&tables, "10.77.3.0/24").as_deref(), Some("c"));
    assert!(tables["lndt"]["hosts"].is_array() && tables["hwdt"].is_array());
    let gndt_only = lab.json("a", &["tables", "gndt"]);
    assert!(gndt_only.get("lndt").is_none() && gndt_only.get("hwdt").is_none());

    // Migrate a1 (10.77.1.1) to b with a QEMU-style RARP announcement.
    lab.lab_ok(&["migrate", "a1", "b", "--announce", "rarp"]);
    poll(
        "10.77.1.1/32 -> b at router c",
        Duration::from_secs(10),
        || {
            let tables = lab.json("c", &["tables", "gndt"]);
            (gndt_site(&tables, "10.77.1.1/32").as_deref() == Some("b")).then_some(())
        },
    );
    let text = String::from_utf8(lab.skyvine("c", &["tables", "gndt"]).stdout).unwrap();
    let host_line = text
        .lines()
        .find(|l| l.contains("10.77.1.1/32"))
        .expect(&text);
    assert!(
        host_line.starts_with("* ") && host_line.contains(" host ") && host_line.contains(" b "),
        "{text}"
    );

    let route = lab.json("c", &["route", "10.77.1.1"]);
    assert_eq!(route["matched"]["prefix"], "10.77.1.1/32", "{route}");
    assert_eq!(route["matched"]["site"], "b");
    let beaten: Vec<&str> = route["beaten"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["prefix"].as_str())
        .collect();
    assert!(beaten.contains(&"10.77.1.0/24"), "{route}");
    let text = String::from_utf8(lab.skyvine("c", &["route", "10.77.1.1"]).stdout).unwrap();
    assert!(text.starts_with("10.77.1.1 -> site b"), "{text}");
    // An address without a host entry falls back to its site's prefix.
    let other = lab.json("c", &["route", "10.77.1.50"]);
    assert_eq!(other["matched"]["prefix"], "10.77.1.0/24", "{other}");
    assert_eq!(other["matched"]["site"], "a", "{other}");

    let migration = poll(
        "the migration applied at b",
        Duration::from_secs(10),
        || {
            let view = lab.json("b", &["migrations"]);
            view["migrations"]
                .as_array()?
                .iter()
                .find(|m| m["ip"] == "10.77.1.1" && m["outcome"] == "applied")
                .cloned()
        },
    );
    assert_eq!(migration["detection"], "rarp", "{migration}");
    assert_eq!(migration["role"], "destination");
    assert_eq!(migration["from"], "a");
    assert_eq!(migration["to"], "b");
    assert!(migration["applied_ms"].as_f64().is_some(), "{migration}");
    let peers = lab.json("b", &["peers"]);
    let up: BTreeSet<&str> = peers["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["connected"] == true)
        .filter_map(|p| p["site"].as_str())
        .collect();
    assert_eq!(up, BTreeSet::from(["a", "c"]), "{peers}");

    check_socket_refuses_non_root(&lab);
    check_socket_survives_garbage(&lab.socket("b"));
    check_metrics(&lab);

    // No router: one line, exit 1.
    let missing = lab.state().join("nowhere.sock");
    let out = Command::new(skyvine_bin())
        .args(["status", "--socket"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "skyvine: no router is running at {} (is the daemon up?)\n",
            missing.display()
        )
    );
}

fn as_nobody(lab: &Lab, socket: &Path) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(skyvine_bin())
        .args(["status", "--socket"])
        .arg(socket)
        .env("HOME", lab.state())
        .output()
        .expect("running setpriv (util-linux)")
}

fn check_socket_refuses_non_root(lab: &Lab) {
    let socket = lab.socket("b");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let out = as_nobody(lab, &socket);
    assert!(!out.status.success(), "a non-root user was answered");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("permission denied"), "{stderr}");
    // Second line of defence: even with the mode loosened, SO_PEERCRED refuses. (The lab's
    // state directories are 0755, so nobody reaches the socket.)
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody(lab, &socket);
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(
        !out.status.success(),
        "a non-root user was answered through a 0666 socket"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("permission denied"), "{stderr}");
}

fn check_socket_survives_garbage(socket: &Path) {
    let stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = &stream;
    writer
        .write_all(b"\x00\xffjunk{{{\n{\"request\":\"launch\"}\n{\"request\":\"status\"}\n")
        .unwrap();
    let mut reader = BufReader::new(&stream);
    let mut answers = Vec::new();
    for _ in 0..3 {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        answers
            .push(serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("{e}: {line}")));
    }
    assert!(
        answers[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("bad request"),
        "{}",
        answers[0]
    );
    assert!(
        answers[1]["error"].as_str().unwrap().contains("launch"),
        "{}",
        answers[1]
    );
    assert_eq!(answers[2]["ok"]["status"]["site"], "b", "{}", answers[2]);
    // An over-long line gets an error and the connection closes.
    let stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The router may close while we still write: the error then is expected.
    let _ = (&stream).write_all(&vec![b'x'; 70 * 1024]);
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).unwrap();
    assert!(line.contains("longer than"), "{line}");
}

/// One scrape of router c's metrics over raw TCP inside its namespace.
fn scrape(lab: &Lab, path: &str) -> String {
    let (host, port) = METRICS_ADDR.split_once(':').unwrap();
    let script = format!(
        "exec 3<>/dev/tcp/{host}/{port} && printf 'GET {path} HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n' >&3 && cat <&3"
    );
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("{}-r-c", lab.prefix),
            "bash",
            "-c",
            &script,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn check_metrics(lab: &Lab) {
    let not_found = scrape(lab, "/");
    assert!(not_found.starts_with("HTTP/1.1 404"), "{not_found}");
    let samples = poll(
        "the migration counted in c's metrics",
        Duration::from_secs(10),
        || {
            let response = scrape(lab, "/metrics");
            let (head, body) = response.split_once("\r\n\r\n")?;
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert!(
                head.to_ascii_lowercase().contains(
                    "\r\ncontent-type: application/openmetrics-text; version=1.0.0; charset=utf-8"
                ),
                "{head}"
            );
            let samples = openmetrics::parse(body)
                .unwrap_or_else(|why| panic!("{why}\n{body}"))
                .samples();
            samples
                .keys()
                .any(|k| k.starts_with("skyvine_migrations_total"))
                .then_some(samples)
        },
    );
    assert_eq!(samples["skyvine_peer_up{peer=\"a\"}"], 1.0);
    assert_eq!(samples["skyvine_peer_up{peer=\"b\"}"], 1.0);
    assert_eq!(
        samples["skyvine_migrations_total{network=\"default\",detection=\"peer\",role=\"third\",outcome=\"applied\"}"],
        1.0
    );
    assert_eq!(
        samples["skyvine_migration_step_seconds_count{network=\"default\",step=\"applied\",role=\"third\"}"],
        1.0
    );
    assert!(samples["skyvine_gndt_entries{network=\"default\",kind=\"host\"}"] >= 1.0);
    assert!(samples
        .contains_key("skyvine_dropped_packets_total{network=\"default\",reason=\"no_route\"}"));
    assert!(samples.contains_key(
        "skyvine_peer_packets_total{network=\"default\",peer=\"a\",direction=\"tx\"}"
    ));
    assert!(samples.contains_key("skyvine_dropped_datagrams_total{reason=\"unknown_network\"}"));
}
