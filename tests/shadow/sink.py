"""A TCP sink with a small receive buffer, for tests/live_shadow.rs: reads and discards
everything on PORT (IPv4 and IPv6). Usage: sink.py PORT. The small buffer keeps the
advertised window (and so conntrack's window) a few KiB wide."""

import socket
import sys
import threading

s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.bind(("::", int(sys.argv[1])))
s.listen(16)


def drain(c):
    while c.recv(65536):
        pass


while True:
    c, _ = s.accept()
    threading.Thread(target=drain, args=(c,), daemon=True).start()
