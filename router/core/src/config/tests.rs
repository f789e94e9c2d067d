use super::*;

const GOOD: &str = r#"
site = "a"
[lan]
interface = "lan0"
prefixes = ["10.77.1.0/24"]
[wan]
listen = "0.0.0.0:7400"
[tls]
ca = "ca.pem"
cert = "a.pem"
key = "a.key"
[[peers]]
site = "b"
address = "100.64.0.2:7400"
[[peers]]
site = "c"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/skyvine/a.toml"))
}

#[test]
fn good_config_gets_defaults_and_absolute_paths() {
    let config = parse(GOOD).unwrap();
    assert_eq!(config.tun.name, "skyvine0");
    assert_eq!(config.tun.mtu, 1380);
    assert_eq!(config.tls.ca, PathBuf::from("/etc/skyvine/ca.pem"));
    assert_eq!(config.lndt_ranges(), config.lan.prefixes);
    assert_eq!(config.peers.len(), 2);
    assert!(config.peers[1].address.is_none());
}

#[test]
fn the_core_gets_the_sites_prefixes_hosts_peers_and_migration_settings() {
    let text = GOOD.replace(
        "[[peers]]\nsite = \"b\"",
        "[migration]\ntakeover = \"confirmed\"\nconfirm_timeout_ms = 120\n\
             still_here_timeout_ms = 80\nprepare_window_s = 30\nmax_moves = 3\nfreeze_s = 60\n\
             pinned = [\"10.77.1.9\"]\n[[peers]]\nsite = \"b\"",
    );
    let config = parse(&text).unwrap();
    let lan = LanIdentity {
        mac: "52:54:00:00:00:01".parse().unwrap(),
        ip: "10.77.1.254".parse().unwrap(),
    };
    let node = config.node_config(Some(lan));
    assert_eq!(node.me, config.site);
    assert_eq!(node.prefixes, config.lan.prefixes);
    assert_eq!(node.lndt_ranges, config.lan.prefixes);
    let peers: Vec<&str> = node.peers.iter().map(SiteId::as_str).collect();
    assert_eq!(peers, ["b", "c"]);
    assert_eq!(node.lan, Some(lan));
    assert_eq!(node.virtual_network, None);
    assert_eq!(node.takeover, Takeover::Confirmed);
    assert_eq!(node.confirm_timeout, Duration::from_millis(120));
    assert_eq!(node.still_here_timeout, Duration::from_millis(80));
    assert_eq!(node.prepare_window, Duration::from_secs(30));
    assert_eq!(node.damping.max_moves, 3);
    assert_eq!(node.damping.window, Duration::from_secs(180));
    assert_eq!(node.damping.freeze, Duration::from_secs(60));
    assert_eq!(node.pinned, ["10.77.1.9".parse::<Ipv4Addr>().unwrap()]);
}

#[test]
fn the_old_probe_timeout_is_refused_with_what_replaced_it() {
    let text = GOOD.replace(
        "[[peers]]\nsite = \"b\"",
        "[migration]\nprobe_timeout_ms = 300\n[[peers]]\nsite = \"b\"",
    );
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("migration.probe_timeout_ms"), "{err}");
    assert!(
        err.contains("confirm_timeout_ms") && err.contains("still_here_timeout_ms"),
        "{err}"
    );
    let defaults = parse(GOOD).unwrap().node_config(None);
    assert_eq!(defaults.takeover, Takeover::Optimistic);
    assert_eq!(defaults.confirm_timeout, Duration::from_secs(3));
    assert_eq!(defaults.still_here_timeout, Duration::from_secs(1));
    assert_eq!(defaults.prepare_window, Duration::from_secs(60));
}

#[test]
fn relay_and_via_reach_the_relay_policy() {
    let text = GOOD
        .replace("site = \"a\"\n", "site = \"a\"\nrelay = true\n")
        .replace("site = \"c\"", "site = \"c\"\nvia = \"b\"");
    let config = parse(&text).unwrap();
    assert!(config.relay);
    let policy = config.relay_policy();
    assert!(policy.relays());
    let (b, c) = (SiteId::new("b").unwrap(), SiteId::new("c").unwrap());
    assert_eq!(policy.via(&c), Some(&b));
    assert_eq!(policy.via(&b), None);
    assert!(!parse(GOOD).unwrap().relay_policy().relays());
}

#[test]
fn nonsense_relaying_is_refused_with_the_reason() {
    let via = |peer_c: &str| GOOD.replace("site = \"c\"", peer_c);
    let cases = [
        (via("site = \"c\"\nvia = \"a\""), "via this router itself"),
        (
            via("site = \"c\"\nvia = \"c\""),
            "cannot be relayed via itself",
        ),
        (
            via("site = \"c\"\nvia = \"x\""),
            "x, which is not a listed peer",
        ),
        (
            via("site = \"c\"\nvia = \"b\"\naddress = \"100.64.0.3:7400\""),
            "both address and via",
        ),
        (
            GOOD.replace("site = \"c\"", "site = \"c\"\nvia = \"b\"")
                .replace(
                    "address = \"100.64.0.2:7400\"",
                    "via = \"d\"\n[[peers]]\nsite = \"d\"",
                ),
            "itself relayed via d",
        ),
        (
            via("site = \"c\"\nvia = \"b\"").replace(
                "[[peers]]\nsite = \"b\"",
                "[tun]\nmtu = 1100\n[[peers]]\nsite = \"b\"",
            ),
            "1100 is too small for peer c relayed via b",
        ),
    ];
    for (text, reason) in cases {
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains(reason), "expected {reason:?} in: {err}");
    }
}

#[test]
fn wan_timers_and_the_gateway_address_are_checked() {
    let config = parse(GOOD).unwrap();
    assert_eq!(config.wan.keep_alive(), Duration::from_secs(1));
    assert_eq!(config.wan.idle_timeout(), Duration::from_secs(3));
    assert_eq!(config.lan.address, None);
    let wan = |extra: &str| GOOD.replace("[tls]", &format!("{extra}\n[tls]"));
    let lan = |extra: &str| GOOD.replace("[wan]", &format!("{extra}\n[wan]"));
    let tuned = parse(&wan("keep_alive_ms = 250\nidle_timeout_ms = 1500")).unwrap();
    assert_eq!(tuned.wan.keep_alive(), Duration::from_millis(250));
    assert_eq!(tuned.wan.idle_timeout(), Duration::from_millis(1500));
    let gateway = parse(&lan("address = \"10.77.1.254\"")).unwrap();
    assert_eq!(gateway.lan.address, Some("10.77.1.254".parse().unwrap()));
    let cases = [
        (
            wan("keep_alive_ms = 50"),
            "`wan.keep_alive_ms`: 50 is outside",
        ),
        (
            wan("idle_timeout_ms = 500"),
            "`wan.idle_timeout_ms`: 500 is outside",
        ),
        (
            wan("keep_alive_ms = 2000\nidle_timeout_ms = 3000"),
            "no room for two keep-alives",
        ),
        (
            lan("address = \"10.77.2.1\""),
            "`lan.address`: 10.77.2.1 is not inside",
        ),
    ];
    for (text, reason) in cases {
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains(reason), "expected {reason:?} in: {err}");
    }
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let text = GOOD.replace("[wan]", "colour = \"blue\"\n[wan]");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("colour"), "{err}");
    assert!(err.contains("line"), "{err}");
}

#[test]
fn invalid_values_name_their_key() {
    let cases = [
        (GOOD.replace("10.77.1.0/24", "10.77.1.5/24"), "lan.prefixes"),
        (GOOD.replace("site = \"b\"", "site = \"a\""), "peers"),
        (GOOD.replace("site = \"a\"", "site = \"a b\""), "site"),
        (
            GOOD.replace("[wan]", "hosts = [\"10.9.0.1/32\"]\n[wan]"),
            "lan.hosts",
        ),
        (
            GOOD.replace(
                "[[peers]]\nsite = \"b\"",
                "[tun]\nmtu = 9000\n[[peers]]\nsite = \"b\"",
            ),
            "tun.mtu",
        ),
        (GOOD.replace("0.0.0.0:7400", "nowhere"), "listen"),
        (
            GOOD.replace("\"lan0\"", "\"a-very-long-name0\""),
            "lan.interface",
        ),
        (
            GOOD.replace(
                "[\"10.77.1.0/24\"]",
                "[\"10.77.1.0/24\", \"10.77.1.128/25\"]",
            ),
            "lan.prefixes",
        ),
        (
            GOOD.replace("[wan]", "virtual_network = \"10.78.0.0/16\"\n[wan]"),
            "lan.virtual_network",
        ),
        (
            GOOD.replace(
                "[[peers]]\nsite = \"b\"",
                "[tun]\nname = \"lan0\"\n[[peers]]\nsite = \"b\"",
            ),
            "tun.name",
        ),
        (GOOD.replace("site = \"c\"", "site = \"b\""), "peers"),
        (
            GOOD.replace(
                "[[peers]]\nsite = \"b\"",
                "[migration]\nmax_moves = 0\n[[peers]]\nsite = \"b\"",
            ),
            "migration.max_moves",
        ),
        (
            GOOD.replace(
                "[[peers]]\nsite = \"b\"",
                "[migration]\nconfirm_timeout_ms = 0\n[[peers]]\nsite = \"b\"",
            ),
            "migration.confirm_timeout_ms",
        ),
        (
            GOOD.replace(
                "[[peers]]\nsite = \"b\"",
                "[migration]\nstill_here_timeout_ms = 20000\n[[peers]]\nsite = \"b\"",
            ),
            "migration.still_here_timeout_ms",
        ),
        (
            GOOD.replace(
                "[[peers]]\nsite = \"b\"",
                "[migration]\nprepare_window_s = 0\n[[peers]]\nsite = \"b\"",
            ),
            "migration.prepare_window_s",
        ),
        (
            GOOD.replace(
                "[[peers]]\nsite = \"b\"",
                "[migration]\ntakeover = \"eventually\"\n[[peers]]\nsite = \"b\"",
            ),
            "takeover",
        ),
    ];
    for (text, key) in cases {
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains(key), "expected {key} in: {err}");
    }
}
