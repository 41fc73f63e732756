"""The client side of tests/handback_netns.rs: one TCP connection driven by scapy.

Runs in the client namespace. The kernel's own RSTs are dropped there (OUTPUT), so
scapy owns the connection; scapy sends through a packet socket, past OUTPUT. After
each probe it reads the server's `ct state invalid` counter (nft, in the server
namespace) and reports whether conntrack called the probe INVALID.

Phase 1 (strict conntrack): in-window data, data just beyond the receiver's window,
RSTs at +2^31 and +2^30 from the next sequence number. Then it writes the tuple to
`{dir}/tuple` and waits for `{dir}/go` (the test sets the liberal flag meanwhile).
Phase 2 (per-flow liberal flag): the same probes again, then in-window data that the
server must still acknowledge (the connection survived).

Argument: one JSON object {dir, family, src, dst, dport, server_ns}.
Output: one JSON object on stdout.
"""

import json
import os
import random
import re
import subprocess
import sys
import time

from scapy.all import IP, IPv6, TCP, Raw, conf, send, sr1  # noqa: E402

conf.verb = 0
args = json.loads(sys.argv[1])
L3 = IP if args["family"] == "v4" else IPv6
SRC, DST, DPORT = args["src"], args["dst"], args["dport"]
SPORT = random.randint(20000, 60000)


def invalid_count():
    out = subprocess.run(
        ["ip", "netns", "exec", args["server_ns"], "nft", "list", "counter", "inet", "hb", "inv"],
        capture_output=True, text=True, check=True,
    ).stdout
    return int(re.search(r"packets (\d+)", out).group(1))


def pkt(flags, seq, ack, data=b""):
    p = L3(src=SRC, dst=DST) / TCP(sport=SPORT, dport=DPORT, flags=flags, seq=seq, ack=ack,
                                   window=65535)
    return p / Raw(data) if data else p


def probe(name, p):
    before = invalid_count()
    send(p)
    time.sleep(0.3)
    return {"probe": name, "invalid": invalid_count() - before}


def data_acked(seq, ack, data):
    """In-window data; returns the server's ACK number for it (None: no answer)."""
    r = sr1(pkt("PA", seq, ack, data), timeout=2)
    if r is None or TCP not in r:
        return None, None
    return r[TCP].ack, r[TCP].window


result = {"sport": SPORT, "phase1": [], "phase2": []}
isn = random.randint(1, 2**31)
synack = sr1(pkt("S", isn, 0), timeout=3)
if synack is None or TCP not in synack or synack[TCP].flags & 0x12 != 0x12:
    print(json.dumps({"error": "no SYN-ACK", "got": repr(synack)}))
    sys.exit(0)
nxt, rcv = isn + 1, synack[TCP].seq + 1
send(pkt("A", nxt, rcv))
time.sleep(0.2)

acked, win = data_acked(nxt, rcv, b"hello")
if acked != nxt + 5:
    print(json.dumps({"error": "in-window data not acknowledged", "ack": acked}))
    sys.exit(0)
nxt += 5
result["window"] = win


def probes(phase):
    out = result[phase]
    # Data starting 1,000 bytes past the right edge of the receiver's window. Linux
    # 6.x does not call this INVALID ("N bytes more than expected": ignored, passed).
    out.append(probe("data just beyond window", pkt("PA", nxt + win + 1000, rcv, b"x" * 10)))
    # Data 64 windows ahead: "SEQ is over the upper bound".
    out.append(probe("data far beyond window", pkt("PA", nxt + 64 * win, rcv, b"x" * 10)))
    # An ACK for data the server never sent (what a displaced SACK edge looks like):
    # "ACK is over the upper bound".
    out.append(probe("ack beyond sent data", pkt("A", nxt, (rcv + 100000) % 2**32)))
    out.append(probe("rst +2^31", pkt("R", (nxt + 2**31) % 2**32, 0)))
    out.append(probe("rst +2^30", pkt("R", (nxt + 2**30) % 2**32, 0)))


probes("phase1")
with open(os.path.join(args["dir"], "tuple"), "w") as f:
    json.dump({"src": SRC, "sport": SPORT, "dst": DST, "dport": DPORT}, f)
deadline = time.time() + 20
while not os.path.exists(os.path.join(args["dir"], "go")) and time.time() < deadline:
    time.sleep(0.05)
probes("phase2")
acked, _ = data_acked(nxt, rcv, b"world")
result["alive_after"] = acked == nxt + 5
print(json.dumps(result))
