"""One TCP connection held open for tests/live_shadow.rs, driven through files.

Usage: holder.py DST PORT SPORT DIR. Connects DST:PORT from local port SPORT, writes
DIR/connected, then runs the command written to DIR/cmd and answers in DIR/done
(JSON), until killed:

send N   sends N bytes ("x"), waits until they are acknowledged, {"sent": N}
seq      {"snd_nxt", "rcv_nxt"}: the connection's next sequence numbers, read with
         TCP_REPAIR (root); leaves repair mode without a window probe, so nothing is
         sent: an idle connection stays idle
"""

import json
import os
import socket
import struct
import sys
import time

TCP_REPAIR, TCP_REPAIR_QUEUE, TCP_QUEUE_SEQ = 19, 20, 21
TCP_RECV_QUEUE, TCP_SEND_QUEUE = 1, 2
TCP_REPAIR_OFF_NO_WP = -1
SIOCOUTQ = 0x5411


def queue_seq(s, queue):
    s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, queue)
    return struct.unpack("I", s.getsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ, 4))[0]


def unacked(s):
    import fcntl

    return struct.unpack("i", fcntl.ioctl(s.fileno(), SIOCOUTQ, b"\0" * 4))[0]


def main():
    dst, port, sport, d = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", sport))
    s.connect((dst, port))
    open(os.path.join(d, "connected"), "w").close()
    cmd_path, done = os.path.join(d, "cmd"), os.path.join(d, "done")
    while True:
        if not os.path.exists(cmd_path):
            time.sleep(0.02)
            continue
        words = open(cmd_path).read().split()
        os.remove(cmd_path)
        if words[0] == "send":
            s.sendall(b"x" * int(words[1]))
            for _ in range(500):
                if unacked(s) == 0:
                    break
                time.sleep(0.01)
            answer = {"sent": int(words[1]), "unacked": unacked(s)}
        elif words[0] == "seq":
            s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
            snd, rcv = queue_seq(s, TCP_SEND_QUEUE), queue_seq(s, TCP_RECV_QUEUE)
            s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP)
            answer = {"snd_nxt": snd, "rcv_nxt": rcv}
        else:
            answer = {"error": "unknown command"}
        with open(done + ".tmp", "w") as f:
            f.write(json.dumps(answer))
        os.rename(done + ".tmp", done)


main()
