use std::fs;

use super::*;
use crate::pki;
use crate::pki::tests::{pki, prefix_of, site, TempDir};

const DAY: Duration = Duration::from_secs(86_400);

/// A file in a test directory.
fn path(dir: &TempDir, file: &str) -> PathBuf {
    dir.0.join(file)
}

/// A fresh, existing, empty test directory.
fn empty_dir(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    fs::create_dir_all(&dir.0).unwrap();
    dir
}

/// A config for site `me` with the given certificate files and host settings.
fn config(me: &str, ca: &Path, cert: &Path, key: &Path) -> Config {
    config_with(me, ca, cert, key, "lan0", "127.0.0.1:0", "skyvine0")
}

fn config_with(
    me: &str,
    ca: &Path,
    cert: &Path,
    key: &Path,
    lan: &str,
    listen: &str,
    tun: &str,
) -> Config {
    let text = format!(
        r#"
site = "{me}"
[lan]
interface = "{lan}"
prefixes = ["10.77.1.0/24"]
[wan]
listen = "{listen}"
[tls]
ca = "{}"
cert = "{}"
key = "{}"
[tun]
name = "{tun}"
"#,
        ca.display(),
        cert.display(),
        key.display()
    );
    Config::parse(&text, Path::new("/etc/skyvine/skyvine.toml")).unwrap()
}

/// Site `id`'s files in `dir`.
fn files(dir: &TempDir, id: &str) -> (PathBuf, PathBuf, PathBuf) {
    (
        path(dir, "ca.pem"),
        path(dir, &format!("{id}.pem")),
        path(dir, &format!("{id}.key")),
    )
}

fn problems(config: &Config, now: SystemTime) -> Vec<Problem> {
    match check_certificates(config, now) {
        Ok(summary) => panic!("expected problems, got {summary:?}"),
        Err(problems) => problems,
    }
}

/// Exactly one problem, about `subject`, whose message contains `text`.
fn assert_one(problems: &[Problem], subject: &str, text: &str) {
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].subject, subject, "{}", problems[0]);
    assert!(problems[0].message.contains(text), "{}", problems[0]);
}

#[test]
fn good_certificates_pass_and_say_when_they_expire() {
    let dir = pki("good", &["a"]);
    let (ca, cert, key) = files(&dir, "a");
    let summary = check_certificates(&config("a", &ca, &cert, &key), SystemTime::now()).unwrap();
    // `skyvine cert issue` makes 5-year certificates, backdated by a day.
    assert!(
        (1_820..=1_826).contains(&summary.cert_days_left),
        "{summary:?}"
    );
    assert!(!summary.cert_expires.is_empty());
    assert!(summary.warnings.is_empty(), "{summary:?}");
}

#[test]
fn missing_files_are_each_named_with_how_to_make_them() {
    let dir = empty_dir("missing");
    let (ca, cert, key) = files(&dir, "a");
    let found = problems(&config("a", &ca, &cert, &key), SystemTime::now());
    let subjects: Vec<&str> = found.iter().map(|p| p.subject.as_str()).collect();
    assert_eq!(subjects, ["tls.ca", "tls.cert", "tls.key"], "{found:#?}");
    for problem in &found {
        assert!(problem.message.contains("does not exist"), "{problem}");
    }
    assert!(found[1]
        .message
        .contains("skyvine cert issue --dir pki --site a"));
    assert!(found[1].message.contains(&cert.display().to_string()));
}

#[test]
fn certificate_of_another_ca_is_refused() {
    let ours = pki("our-ca", &[]);
    let theirs = pki("their-ca", &["a"]);
    let (_, cert, key) = files(&theirs, "a");
    let found = problems(
        &config("a", &path(&ours, "ca.pem"), &cert, &key),
        SystemTime::now(),
    );
    assert_one(&found, "tls.cert", "is not a valid certificate of the CA");
}

#[test]
fn key_of_another_certificate_is_refused() {
    let dir = pki("other-key", &["a", "b"]);
    let (ca, cert, _) = files(&dir, "a");
    let found = problems(
        &config("a", &ca, &cert, &path(&dir, "b.key")),
        SystemTime::now(),
    );
    assert_one(&found, "tls.key", "does not hold the private key");
}

#[test]
fn certificate_of_another_site_is_refused() {
    let dir = pki("other-site", &["b"]);
    let (ca, cert, key) = files(&dir, "b");
    let found = problems(&config("a", &ca, &cert, &key), SystemTime::now());
    assert_one(&found, "tls.cert", r#"for site "b""#);
    assert!(found[0].message.contains("--site a"), "{}", found[0]);
}

#[test]
fn expired_certificate_is_reported_once_as_expired() {
    let dir = pki("expired", &[]);
    let now = SystemTime::now();
    pki::issue_valid(
        &dir.0,
        &site("a"),
        &[prefix_of("a").into()],
        now - 30 * DAY,
        now - 2 * DAY,
    )
    .unwrap();
    let (ca, cert, key) = files(&dir, "a");
    let found = problems(&config("a", &ca, &cert, &key), now);
    assert_one(&found, "tls.cert", "expired on");
    assert!(found[0].message.contains("2 day(s) ago"), "{}", found[0]);
    assert!(
        found[0].message.contains("skyvine cert issue"),
        "{}",
        found[0]
    );
}

#[test]
fn certificates_past_their_time_expire_with_the_clock() {
    // The same good files, checked 6 years on: the 5-year router certificate has expired,
    // the 10-year CA has not.
    let dir = pki("later", &["a"]);
    let (ca, cert, key) = files(&dir, "a");
    let later = SystemTime::now() + 6 * 365 * DAY;
    let found = problems(&config("a", &ca, &cert, &key), later);
    assert_one(&found, "tls.cert", "expired on");
}

#[test]
fn certificate_not_yet_valid_points_at_the_clock() {
    let dir = pki("future", &[]);
    let now = SystemTime::now();
    pki::issue_valid(
        &dir.0,
        &site("a"),
        &[prefix_of("a").into()],
        now + 3 * DAY,
        now + 300 * DAY,
    )
    .unwrap();
    let (ca, cert, key) = files(&dir, "a");
    let found = problems(&config("a", &ca, &cert, &key), now);
    assert_one(&found, "tls.cert", "is not valid before");
    assert!(found[0].message.contains("clock"), "{}", found[0]);
}

#[test]
fn certificate_expiring_soon_passes_with_a_warning() {
    let dir = pki("soon", &[]);
    let now = SystemTime::now();
    pki::issue_valid(
        &dir.0,
        &site("a"),
        &[prefix_of("a").into()],
        now - DAY,
        now + 10 * DAY,
    )
    .unwrap();
    let (ca, cert, key) = files(&dir, "a");
    let summary = check_certificates(&config("a", &ca, &cert, &key), now).unwrap();
    assert!((9..=10).contains(&summary.cert_days_left), "{summary:?}");
    assert_eq!(summary.warnings.len(), 1, "{summary:?}");
    assert!(summary.warnings[0].contains("tls.cert"), "{summary:?}");
}

#[test]
fn world_readable_key_is_a_problem() {
    let dir = pki("mode", &["a"]);
    let (ca, cert, key) = files(&dir, "a");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let found = problems(&config("a", &ca, &cert, &key), SystemTime::now());
    assert_one(&found, "tls.key", "readable by every user");
}

#[test]
fn garbage_instead_of_a_certificate_is_named() {
    let dir = pki("garbage", &["a"]);
    let (ca, cert, key) = files(&dir, "a");
    fs::write(&ca, "not a certificate\n").unwrap();
    let found = problems(&config("a", &ca, &cert, &key), SystemTime::now());
    assert_one(&found, "tls.ca", "no usable PEM certificate");
}

/// A fake `/proc/sys/net` and `/sys/class/net` for a healthy gateway with LAN `lan0`.
struct FakeHost {
    dir: TempDir,
    paths: HostPaths,
}

impl FakeHost {
    fn healthy(name: &str) -> FakeHost {
        let dir = empty_dir(name);
        let paths = HostPaths {
            proc_sys_net: path(&dir, "proc/sys/net"),
            sys_class_net: path(&dir, "sys/class/net"),
        };
        let host = FakeHost { dir, paths };
        host.set("ipv4/ip_forward", "1");
        host.set("ipv4/conf/all/rp_filter", "0");
        host.set("ipv4/conf/lan0/rp_filter", "2");
        host.interface("lo", None);
        host.interface("lan0", None);
        host
    }

    fn set(&self, sysctl: &str, value: &str) {
        let file = self.paths.proc_sys_net.join(sysctl);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(file, format!("{value}\n")).unwrap();
    }

    fn interface(&self, name: &str, tun_flags: Option<&str>) {
        let dev = self.paths.sys_class_net.join(name);
        fs::create_dir_all(&dev).unwrap();
        if let Some(flags) = tun_flags {
            fs::write(dev.join("tun_flags"), format!("{flags}\n")).unwrap();
        }
    }

    fn remove_interface(&self, name: &str) {
        fs::remove_dir_all(self.paths.sys_class_net.join(name)).unwrap();
    }

    fn check(&self, config: &Config) -> Vec<Problem> {
        assert!(self.dir.0.exists());
        check_host(config, &self.paths)
    }
}

/// A config whose certificates are irrelevant to the host checks.
fn host_config(lan: &str, listen: &str, tun: &str) -> Config {
    let p = Path::new("/nonexistent");
    config_with("a", p, p, p, lan, listen, tun)
}

#[test]
fn healthy_host_has_no_problems() {
    let host = FakeHost::healthy("host-ok");
    let found = host.check(&host_config("lan0", "127.0.0.1:0", "skyvine0"));
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn forwarding_off_is_a_problem() {
    let host = FakeHost::healthy("host-fwd");
    host.set("ipv4/ip_forward", "0");
    let found = host.check(&host_config("lan0", "127.0.0.1:0", "skyvine0"));
    assert_one(&found, "net.ipv4.ip_forward", "is 0");
}

#[test]
fn strict_rp_filter_on_all_or_the_lan_is_a_problem() {
    for scope in ["all", "lan0"] {
        let host = FakeHost::healthy("host-rp");
        host.set(&format!("ipv4/conf/{scope}/rp_filter"), "1");
        let found = host.check(&host_config("lan0", "127.0.0.1:0", "skyvine0"));
        assert_one(&found, &format!("net.ipv4.conf.{scope}.rp_filter"), "is 1");
    }
}

#[test]
fn missing_lan_interface_lists_the_interfaces() {
    let host = FakeHost::healthy("host-lan");
    let found = host.check(&host_config("eth9", "127.0.0.1:0", "skyvine0"));
    assert_one(&found, "lan.interface", "no interface eth9");
    assert!(found[0].message.contains("lan0, lo"), "{}", found[0]);
    host.remove_interface("lan0");
    let found = host.check(&host_config("lan0", "127.0.0.1:0", "skyvine0"));
    assert_one(&found, "lan.interface", "no interface lan0");
}

#[test]
fn wan_port_in_use_or_not_ours_is_a_problem() {
    let host = FakeHost::healthy("host-port");
    let holder = UdpSocket::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().to_string();
    let found = host.check(&host_config("lan0", &taken, "skyvine0"));
    assert_one(&found, "wan.listen", "another program holds UDP");
    // 192.0.2.1 (TEST-NET-1) is on no interface of a test machine; binding sends nothing.
    let found = host.check(&host_config("lan0", "192.0.2.1:7400", "skyvine0"));
    assert_one(&found, "wan.listen", "not an address of this machine");
}

#[test]
fn tun_name_must_be_free_or_a_tun_device() {
    let host = FakeHost::healthy("host-tun");
    host.interface("skyvine0", Some("0x1001"));
    assert!(host
        .check(&host_config("lan0", "127.0.0.1:0", "skyvine0"))
        .is_empty());
    host.interface("tap0", Some("0x1002"));
    let found = host.check(&host_config("lan0", "127.0.0.1:0", "tap0"));
    assert_one(&found, "tun.name", "TAP device");
    let found = host.check(&host_config("lan0", "127.0.0.1:0", "lo"));
    assert_one(&found, "tun.name", "is not a TUN device");
}

/// Site a's config with networks blue (id 1) and red (id 2), both 10.77.1.0/24.
fn networks_config(ca: &Path, cert: &Path, key: &Path) -> Config {
    let text = format!(
        r#"
site = "a"
[wan]
listen = "127.0.0.1:0"
[tls]
ca = "{}"
cert = "{}"
key = "{}"
[[networks]]
name = "blue"
id = 1
[networks.lan]
interface = "lan0"
prefixes = ["10.77.1.0/24"]
[[networks]]
name = "red"
id = 2
[networks.lan]
interface = "lan1"
prefixes = ["10.77.1.0/24"]
"#,
        ca.display(),
        cert.display(),
        key.display()
    );
    Config::parse(&text, Path::new("/etc/skyvine/skyvine.toml")).unwrap()
}

#[test]
fn a_prefix_not_certified_in_its_network_is_a_warning_naming_the_network() {
    // Certified in network 0 (the old form) only: neither blue nor red.
    let dir = pki("networks-old", &["a"]);
    let (ca, cert, key) = files(&dir, "a");
    let summary =
        check_certificates(&networks_config(&ca, &cert, &key), SystemTime::now()).unwrap();
    let uncertified: Vec<&String> = summary
        .warnings
        .iter()
        .filter(|w| w.contains("is not certified"))
        .collect();
    assert_eq!(uncertified.len(), 2, "{:#?}", summary.warnings);
    assert!(
        uncertified[0].contains("network blue (id 1): 10.77.1.0/24"),
        "{}",
        uncertified[0]
    );
    assert!(
        uncertified[1].contains("--prefix 2:10.77.1.0/24"),
        "{}",
        uncertified[1]
    );
    // The same certificate suits the single-network form (network 0).
    let summary = check_certificates(&config("a", &ca, &cert, &key), SystemTime::now()).unwrap();
    assert!(
        summary
            .warnings
            .iter()
            .all(|w| !w.contains("is not certified")),
        "{:#?}",
        summary.warnings
    );

    // Certified in both networks: no warning.
    let dir = pki("networks-new", &[]);
    let both: Vec<pki::CertifiedPrefix> = ["1:10.77.1.0/24", "2:10.77.1.0/24"]
        .iter()
        .map(|p| p.parse().unwrap())
        .collect();
    pki::issue(&dir.0, &site("a"), &both).unwrap();
    let (ca, cert, key) = files(&dir, "a");
    let summary =
        check_certificates(&networks_config(&ca, &cert, &key), SystemTime::now()).unwrap();
    assert!(
        summary
            .warnings
            .iter()
            .all(|w| !w.contains("is not certified")),
        "{:#?}",
        summary.warnings
    );
}
