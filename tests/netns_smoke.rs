//! The namespace harness itself: two namespaces reach each other over IPv4 and IPv6.

mod support;

#[test]
fn pair_pings_over_v4_and_v6() {
    if !support::require_root("pair_pings_over_v4_and_v6") {
        return;
    }
    let pair = support::Pair::new("smoke");
    pair.client.sh("ping -c1 -W2 192.0.2.2");
    pair.client.sh("ping -6 -c1 -W2 2001:db8::2");
}
