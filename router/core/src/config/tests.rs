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
    let network = &config.networks()[0];
    assert_eq!(network.lndt_ranges(), network.lan.prefixes);
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
    let network = &config.networks()[0];
    let node = config.node_config(network, Some(lan));
    assert_eq!(node.me, config.site);
    assert_eq!(node.prefixes, network.lan.prefixes);
    assert_eq!(node.lndt_ranges, network.lan.prefixes);
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
    let good = parse(GOOD).unwrap();
    let defaults = good.node_config(&good.networks()[0], None);
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
    assert_eq!(config.networks()[0].lan.address, None);
    let wan = |extra: &str| GOOD.replace("[tls]", &format!("{extra}\n[tls]"));
    let lan = |extra: &str| GOOD.replace("[wan]", &format!("{extra}\n[wan]"));
    let tuned = parse(&wan("keep_alive_ms = 250\nidle_timeout_ms = 1500")).unwrap();
    assert_eq!(tuned.wan.keep_alive(), Duration::from_millis(250));
    assert_eq!(tuned.wan.idle_timeout(), Duration::from_millis(1500));
    let gateway = parse(&lan("address = \"10.77.1.254\"")).unwrap();
    assert_eq!(
        gateway.networks()[0].lan.address,
        Some("10.77.1.254".parse().unwrap())
    );
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

/// GOOD's site with two networks that reuse each other's addresses.
const NETWORKS: &str = r#"
site = "a"
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
[[networks]]
name = "blue"
id = 1
[networks.lan]
interface = "lan0"
prefixes = ["10.77.1.0/24"]
[[networks]]
name = "red"
id = 2
tun = "red0"
vrf_table = 2002
peers = ["b"]
[networks.lan]
interface = "lan1"
prefixes = ["10.77.1.0/24"]
virtual_network = "10.77.0.0/16"
"#;

#[test]
fn the_single_lan_form_is_one_default_network_without_a_vrf() {
    let config = parse(GOOD).unwrap();
    let networks = config.networks();
    assert_eq!(networks.len(), 1);
    let network = &networks[0];
    assert_eq!((network.id, network.name.as_str()), (0, "default"));
    assert_eq!(network.tun, "skyvine0");
    assert_eq!(network.vrf, None);
    assert_eq!(network.lan.interface, "lan0");
    assert_eq!(network.peers, None);
    assert_eq!(config.network("default"), Some(network));
}

#[test]
fn several_networks_get_their_devices_vrfs_and_peers() {
    let config = parse(NETWORKS).unwrap();
    let [blue, red] = config.networks() else {
        panic!("two networks expected");
    };
    assert_eq!((blue.id, blue.tun.as_str()), (1, "skyvine1"));
    assert_eq!(
        blue.vrf,
        Some(Vrf {
            name: "svrf1".into(),
            table: 1001
        })
    );
    assert_eq!((red.id, red.tun.as_str()), (2, "red0"));
    assert_eq!(red.vrf.as_ref().map(|v| v.table), Some(2002));
    // The same prefix in both: networks are isolated, so that is allowed.
    assert_eq!(blue.lan.prefixes, red.lan.prefixes);
    let blue_node = config.node_config(blue, None);
    let red_node = config.node_config(red, None);
    let peers = |n: &NodeConfig| {
        n.peers
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(peers(&blue_node), ["b", "c"]);
    assert_eq!(peers(&red_node), ["b"]);
    assert_eq!(
        red_node.virtual_network,
        Some("10.77.0.0/16".parse().unwrap())
    );
    assert_eq!(blue_node.virtual_network, None);
}

#[test]
fn bad_network_declarations_name_their_key_and_reason() {
    let lan_and_networks = NETWORKS.replace(
        "[[peers]]\nsite = \"b\"",
        "[lan]\ninterface = \"lan9\"\nprefixes = [\"10.9.0.0/24\"]\n[[peers]]\nsite = \"b\"",
    );
    let two_blue = NETWORKS.replace("name = \"red\"", "name = \"blue\"");
    let cases = [
        (lan_and_networks, "`networks`: a config has either `[lan]`"),
        (two_blue, "`networks.name`: blue is declared twice"),
        (
            NETWORKS.replace("id = 2", "id = 1"),
            "`networks.id`: networks blue and red both have id 1",
        ),
        (
            NETWORKS.replace("interface = \"lan1\"", "interface = \"lan0\""),
            "`networks.lan.interface`: lan0 is in networks blue and red: a LAN interface belongs to one network",
        ),
        (
            NETWORKS.replace("tun = \"red0\"", "tun = \"lan0\""),
            "`networks.tun`: networks blue and red",
        ),
        (
            NETWORKS.replace("tun = \"red0\"", "tun = \"skyvine1\""),
            "`networks.tun`: networks blue and red",
        ),
        (
            NETWORKS.replace("vrf_table = 2002", "vrf_table = 1001"),
            "`networks.vrf_table`: networks blue and red would share a routing table",
        ),
        (
            NETWORKS.replace("vrf_table = 2002", "vrf_table = 254"),
            "`networks.vrf_table`: must not be 0 or one of the kernel's own tables",
        ),
        (
            NETWORKS.replace("id = 2", "id = 65535"),
            "`networks.id`: 65535 is reserved",
        ),
        (
            NETWORKS.replace("name = \"red\"", "name = \"red network\""),
            "`networks.name`: \"red network\"",
        ),
        (
            NETWORKS.replace("peers = [\"b\"]", "peers = [\"d\"]"),
            "`networks.peers`: network red: d is not one of [[peers]]",
        ),
        (
            NETWORKS.replace("virtual_network = \"10.77.0.0/16\"", "virtual_network = \"10.78.0.0/16\""),
            "`networks.lan.virtual_network`: network red: 10.78.0.0/16 must contain every site prefix",
        ),
        (
            NETWORKS.replace("[wan]", "[tun]\nname = \"sv\"\n[wan]"),
            "`tun.name`: applies to the single `[lan]` network",
        ),
        (
            GOOD.replace("[lan]", "[tmp]").replace("[tmp]\ninterface = \"lan0\"\nprefixes = [\"10.77.1.0/24\"]\n", ""),
            "`lan`: missing",
        ),
    ];
    for (text, expected) in cases {
        let error = parse(&text).unwrap_err().to_string();
        assert!(error.contains(expected), "{error}\n  expected: {expected}");
    }
}
