"""The service on the hardened host: HTTP on port 8080, IPv4 and IPv6.

GET /file          a small file (FILE_SIZE bytes)
GET /slow/N/S      N chunks of S bytes, one every 100 ms (a server-paced download that
                   keeps a victim connection alive and mostly idle)
"""

import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FILE_SIZE = 20000


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def do_GET(self):
        parts = self.path.strip("/").split("/")
        if parts == ["file"]:
            body = b"f" * FILE_SIZE
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif len(parts) == 3 and parts[0] == "slow":
            n, size = int(parts[1]), int(parts[2])
            self.send_response(200)
            self.send_header("Content-Length", str(n * size))
            self.end_headers()
            self.wfile.flush()
            for _ in range(n):
                self.wfile.write(b"s" * size)
                self.wfile.flush()
                time.sleep(0.1)
        else:
            self.send_error(404)


class DualStack(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    request_queue_size = 128

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


DualStack(("::", int(sys.argv[1])), Handler).serve_forever()
