//! The `skyvine` binary's command line without a running router: help texts, `check-config`,
//! and the one-line answer when no router is running. (Also makes `cargo test --workspace`
//! build the binary the lab tests use.)

// Test helpers fail loudly on purpose: a failed command or bad output is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::{Command, Output};

fn skyvine(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skyvine"))
        .args(args)
        .env_remove("SKYVINE_SOCKET")
        .env_remove("SKYVINE_CONFIG")
        .output()
        .expect("running skyvine")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn help_lists_every_subcommand_and_each_explains_itself() {
    let out = skyvine(&["--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    for command in [
        "router",
        "check-config",
        "cert",
        "tables",
        "route",
        "peers",
        "migrations",
        "status",
    ] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
    }
    for (command, phrase) in [
        ("tables", "GNDT"),
        ("route", "longest"),
        ("peers", "RTT"),
        ("migrations", "rarp"),
        ("status", "warnings"),
    ] {
        let out = skyvine(&[command, "--help"]);
        assert!(out.status.success());
        let help = stdout(&out);
        assert!(
            help.contains(phrase),
            "{command} --help lacks {phrase:?}:\n{help}"
        );
        assert!(
            help.contains("--json") && help.contains("--socket"),
            "{help}"
        );
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A fresh directory for one test, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("skyvine-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const GOOD: &str = "site = \"a\"\n[lan]\ninterface = \"lan0\"\nprefixes = [\"10.77.1.0/24\"]\n\
                    [wan]\nlisten = \"0.0.0.0:7400\"\n[tls]\nca = \"ca.pem\"\ncert = \"a.pem\"\nkey = \"a.key\"\n";

/// `skyvine cert ca` and `cert issue` for `sites` in `dir`, as an operator would.
fn make_certificates(dir: &TempDir, sites: &[&str]) {
    let out = skyvine(&["cert", "ca", "--dir", &dir.file("")]);
    assert!(out.status.success(), "{}", stderr(&out));
    for (n, site) in sites.iter().enumerate() {
        let prefix = format!("10.77.{}.0/24", n + 1);
        let out = skyvine(&[
            "cert",
            "issue",
            "--dir",
            &dir.file(""),
            "--site",
            site,
            "--prefix",
            &prefix,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

#[test]
fn check_config_refuses_missing_certificates_and_names_the_bad_key() {
    let dir = TempDir::new("missing");
    std::fs::write(dir.file("good.toml"), GOOD).unwrap();
    std::fs::write(
        dir.file("bad.toml"),
        GOOD.replace("[wan]", "colour = 1\n[wan]"),
    )
    .unwrap();
    // Valid TOML, but none of the three certificate files exists: one line for each.
    let out = skyvine(&["check-config", &dir.file("good.toml")]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    for key in ["`tls.ca`", "`tls.cert`", "`tls.key`"] {
        let line = err
            .lines()
            .find(|l| l.contains(key))
            .unwrap_or_else(|| panic!("{key} in {err}"));
        assert!(line.contains("does not exist"), "{line}");
    }
    assert!(err.contains("3 problem(s)"), "{err}");
    assert!(!stdout(&out).contains("valid"), "{}", stdout(&out));

    let out = skyvine(&["check-config", &dir.file("bad.toml")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("colour"));
}

#[test]
fn check_config_accepts_certificates_from_skyvine_cert_and_refuses_a_foreign_key() {
    let dir = TempDir::new("certs");
    make_certificates(&dir, &["a", "b"]);
    std::fs::write(dir.file("good.toml"), GOOD).unwrap();
    let out = skyvine(&["check-config", &dir.file("good.toml")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("config valid (site a"), "{text}");
    assert!(
        text.contains("valid until") && text.contains("days"),
        "{text}"
    );

    std::fs::write(dir.file("b-key.toml"), GOOD.replace("a.key", "b.key")).unwrap();
    let out = skyvine(&["check-config", &dir.file("b-key.toml")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("`tls.key`"), "{}", stderr(&out));

    // The sample deployment config is valid with its certificates in place.
    let sample = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/skyvine.toml"
    ))
    .unwrap();
    let sample = sample.replace("/etc/skyvine/", &dir.file(""));
    std::fs::write(dir.file("sample.toml"), sample).unwrap();
    let out = skyvine(&["check-config", &dir.file("sample.toml")]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn check_config_host_reports_a_missing_lan_interface() {
    let dir = TempDir::new("host");
    make_certificates(&dir, &["a"]);
    let config = GOOD
        .replace("lan0", "nosuchlan0")
        .replace("0.0.0.0:7400", "127.0.0.1:0");
    std::fs::write(dir.file("host.toml"), config).unwrap();
    // Without --host the machine is not looked at.
    let out = skyvine(&["check-config", &dir.file("host.toml")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = skyvine(&["check-config", "--host", &dir.file("host.toml")]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.contains("`lan.interface`") && l.contains("no interface nosuchlan0")),
        "{err}"
    );
}

#[test]
fn admin_commands_say_in_one_line_when_no_router_runs() {
    let socket = std::env::temp_dir().join(format!("skyvine-cli-none-{}.sock", std::process::id()));
    for command in ["tables", "peers", "migrations", "status"] {
        let out = skyvine(&[command, "--socket", socket.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!(
                "skyvine: no router is running at {} (is the daemon up?)\n",
                socket.display()
            )
        );
        assert!(out.stdout.is_empty());
    }
}
