//! What a front end knows about a packet besides its bytes.

use core::fmt;

/// The conntrack state the kernel attached to a packet (or that replay assumes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CtState {
    /// The packet opens a new flow.
    New,
    /// Conntrack could not place the packet in a valid flow state.
    Invalid,
    /// The packet belongs to a flow exempted from tracking (`CT --notrack`).
    Untracked,
    /// The packet belongs to an established flow.
    Established,
    /// The packet is related to a tracked flow (ICMP errors, expectations).
    Related,
}

impl CtState {
    /// The lower-case name used in configs and JSON output.
    pub fn name(self) -> &'static str {
        match self {
            CtState::New => "new",
            CtState::Invalid => "invalid",
            CtState::Untracked => "untracked",
            CtState::Established => "established",
            CtState::Related => "related",
        }
    }

    /// Parses a lower-case state name as written in configs.
    pub fn from_name(name: &str) -> Option<CtState> {
        Some(match name {
            "new" => CtState::New,
            "invalid" => CtState::Invalid,
            "untracked" => CtState::Untracked,
            "established" => CtState::Established,
            "related" => CtState::Related,
            _ => return None,
        })
    }
}

impl fmt::Display for CtState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which conntrack state the engine should assume for a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtHint {
    /// Derive the state from the engine's own tracking, as strict conntrack would:
    /// the engine sees the whole flow (replay with `--visibility full`).
    Auto,
    /// Use this state as given: what the kernel attached or the queuing rule wrote
    /// into the mark (live), or what the rendered ruleset would have queued the
    /// packet with (replay with `--visibility deployed`).
    Given(CtState),
}

/// The link-layer framing of the bytes handed to the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// Starts at the IP header (NFQUEUE payloads, pcap LINKTYPE_RAW/IPV4/IPV6).
    RawIp,
    /// Ethernet II, possibly with 802.1Q/802.1ad tags and PPPoE.
    Ethernet,
    /// Linux cooked capture v1 (LINKTYPE_LINUX_SLL).
    LinuxSll,
    /// Linux cooked capture v2 (LINKTYPE_LINUX_SLL2).
    LinuxSll2,
    /// BSD loopback / null: 4-byte host-order address family.
    Null,
    /// IEEE 802.11 without FCS (LINKTYPE_IEEE802_11): data frames, LLC/SNAP.
    Ieee80211,
    /// IEEE 802.11 behind a radiotap header (LINKTYPE_IEEE802_11_RADIOTAP).
    Ieee80211Radiotap,
    /// Netfilter NFLOG records (LINKTYPE_NFLOG, `tcpdump -i nflog:N`).
    Nflog,
}

/// Metadata that travels with a packet into the engine.
#[derive(Clone, Copy, Debug)]
pub struct PacketMeta<'a> {
    /// Framing of the bytes.
    pub link: LinkType,
    /// Conntrack state (given by the kernel, or derived).
    pub ct: CtHint,
    /// Input interface name, when known.
    pub in_iface: Option<&'a str>,
    /// Output interface name, when known.
    pub out_iface: Option<&'a str>,
    /// Packet mark (skb->mark).
    pub mark: u32,
    /// The frame's length on the wire, when a capture holds fewer bytes (snap
    /// length); 0 means the bytes are the whole packet.
    pub wire_len: u32,
}

impl<'a> PacketMeta<'a> {
    /// Metadata for a raw IP packet with the conntrack state derived by the engine.
    pub fn raw_ip() -> PacketMeta<'static> {
        PacketMeta {
            link: LinkType::RawIp,
            ct: CtHint::Auto,
            in_iface: None,
            out_iface: None,
            mark: 0,
            wire_len: 0,
        }
    }
}
