use super::*;

/// Root only: a real kernel in a throw-away network namespace.
mod netns;

pub(super) fn net(s: &str) -> Ipv4Network {
    s.parse().unwrap()
}

pub(super) fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

pub(super) fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

pub(super) fn route(dst: &str, dev: Dev) -> Entry {
    Entry::Route {
        dst: net(dst),
        dev,
        mtu: None,
    }
}

pub(super) fn neighbour(addr: &str, lladdr: &str) -> Entry {
    Entry::Neighbour {
        ip: ip(addr),
        mac: mac(lladdr),
        dev: Dev::Lan,
    }
}

#[test]
fn forwarding_flag_is_readable() {
    let expected = std::fs::read_to_string(IP_FORWARD).unwrap().trim() == "1";
    assert_eq!(check_forwarding().unwrap(), expected);
}
