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

#[test]
fn check_config_accepts_a_good_file_and_names_the_bad_key() {
    let dir = std::env::temp_dir().join(format!("skyvine-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = "site = \"a\"\n[lan]\ninterface = \"lan0\"\nprefixes = [\"10.77.1.0/24\"]\n\
                [wan]\nlisten = \"0.0.0.0:7400\"\n[tls]\nca = \"ca.pem\"\ncert = \"a.pem\"\nkey = \"a.key\"\n";
    std::fs::write(dir.join("good.toml"), good).unwrap();
    std::fs::write(
        dir.join("bad.toml"),
        good.replace("[wan]", "colour = 1\n[wan]"),
    )
    .unwrap();
    let out = skyvine(&["check-config", dir.join("good.toml").to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("valid (site a"), "{}", stdout(&out));
    let out = skyvine(&["check-config", dir.join("bad.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("colour"));
    // The sample deployment config is valid too.
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/skyvine.toml");
    let out = skyvine(&["check-config", sample]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
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
