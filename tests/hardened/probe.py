"""Packets an attacker could send, from the client namespace (tests/host_rules.rs).

Usage: probe.py COMMAND JSON. Packets are built with scapy and sent through a raw
socket (the kernel routes them; the source address may be spoofed). Every command
prints one JSON object on stdout.

send     {"packets": [PACKET...], "gap_ms": 20}
         PACKET = {"src", "dst", "sport", "dport", "flags", "seq", "ack", "ttl", "data"}
forge    {"iface", "src", "dst", "sport", "dport", "timeout", "packets": [FORGED...]}
         sniffs one segment src:sport -> dst:dport of a live connection, then sends each
         FORGED = {"flags", "seq_off", "ttl", "data"} with seq = sniffed seq + seq_off
         and ack = sniffed ack (mod 2^32); prints the sniffed numbers
flood    {"dst", "dport", "count", "rate", "net"}: `count` SYNs from sources
         NET.1-NET.254 (or NET::1-) with random ports, at most `rate` per second
connect  {"dst", "port", "src", "sport", "timeout"}: a real TCP connection;
         {"ok": true} only if the handshake completed
"""

import json
import random
import socket
import sys
import time

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6

MOD = 1 << 32


def is6(addr):
    return ":" in addr


def build(p):
    if is6(p["dst"]):
        ip = IPv6(src=p["src"], dst=p["dst"], hlim=p.get("ttl", 64))
    else:
        ip = IP(src=p["src"], dst=p["dst"], ttl=p.get("ttl", 64))
    tcp = TCP(
        sport=p["sport"],
        dport=p["dport"],
        flags=p["flags"],
        seq=p.get("seq", 0) % MOD,
        ack=p.get("ack", 0) % MOD,
        window=p.get("window", 65535),
    )
    pkt = ip / tcp
    if p.get("data"):
        pkt = pkt / (b"x" * p["data"])
    return pkt


class Sender:
    def __init__(self):
        self.socks = {}

    def send(self, pkt):
        fam = socket.AF_INET6 if pkt.haslayer(IPv6) else socket.AF_INET
        s = self.socks.get(fam)
        if s is None:
            s = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_RAW)
            self.socks[fam] = s
        dst = pkt[IPv6].dst if fam == socket.AF_INET6 else pkt[IP].dst
        s.sendto(bytes(pkt), (dst, 0))


def cmd_send(a):
    tx = Sender()
    for p in a["packets"]:
        tx.send(build(p))
        time.sleep(a.get("gap_ms", 20) / 1000)
    return {"sent": len(a["packets"])}


def cmd_forge(a):
    from scapy.sendrecv import sniff

    layer = IPv6 if is6(a["dst"]) else IP

    def mine(p):
        return (
            p.haslayer(TCP)
            and p.haslayer(layer)
            and p[layer].src == a["src"]
            and p[layer].dst == a["dst"]
            and p[TCP].sport == a["sport"]
            and p[TCP].dport == a["dport"]
            and "A" in str(p[TCP].flags)
        )

    got = sniff(iface=a["iface"], lfilter=mine, count=1, timeout=a.get("timeout", 5))
    if not got:
        return {"error": "no segment of the connection seen", "sent": 0}
    seq, ack = got[0][TCP].seq, got[0][TCP].ack
    tx = Sender()
    for f in a["packets"]:
        p = dict(src=a["src"], dst=a["dst"], sport=a["sport"], dport=a["dport"])
        p.update(flags=f["flags"], ttl=f["ttl"], data=f.get("data", 0))
        p["seq"] = seq + f["seq_off"]
        p["ack"] = ack if "A" in f["flags"] else 0
        tx.send(build(p))
        time.sleep(f.get("gap_ms", 50) / 1000)
    return {"seq": seq, "ack": ack, "sent": len(a["packets"])}


def cmd_flood(a):
    tx = Sender()
    gap = 1.0 / a["rate"]
    rng = random.Random(a.get("seed", 1))
    start = time.monotonic()
    for i in range(a["count"]):
        host = i % 254 + 1
        src = f"{a['net']}{host:x}" if is6(a["dst"]) else f"{a['net']}{host}"
        p = dict(src=src, dst=a["dst"], sport=rng.randint(32768, 60999))
        p.update(dport=a["dport"], flags="S", seq=rng.randrange(MOD), ttl=64)
        tx.send(build(p))
        # Pace against the clock, so the rate is a bound whatever the scheduling.
        ahead = start + (i + 1) * gap - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    return {"sent": a["count"]}


def cmd_connect(a):
    fam = socket.AF_INET6 if is6(a["dst"]) else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if a.get("src") or a.get("sport"):
        s.bind((a.get("src", ""), a.get("sport", 0)))
    s.settimeout(a.get("timeout", 3))
    try:
        s.connect((a["dst"], a["port"]))
        return {"ok": True}
    except OSError as e:
        return {"ok": False, "error": str(e)}
    finally:
        s.close()


COMMANDS = {"send": cmd_send, "forge": cmd_forge, "flood": cmd_flood, "connect": cmd_connect}

if __name__ == "__main__":
    print(json.dumps(COMMANDS[sys.argv[1]](json.loads(sys.argv[2]))), flush=True)
