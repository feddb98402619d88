"""What the FAKE services of tests/s3 share (imds_fake.py, sts_fake.py, container_creds_fake.py):
start an HTTP server on a free port of 127.0.0.1, tell the test which port, serve until the test
closes our stdin, and answer with a body and its length. Standard library only."""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    """A quiet handler with reply()."""

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body, ctype="text/plain"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve(handler_class):
    """Serves handler_class on 127.0.0.1, prints {"port": N} as the first line of stdout, and
    returns when stdin closes (when the test process ends)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    sys.stdin.read()
    server.shutdown()
