#!/usr/bin/python3
"""A fault-injecting HTTP proxy for the S3 client's tests (standard library only).

It is a FAKE on purpose: it stands in front of the real local S3 server and, when a test's plan
says so, answers what no healthy server would (503 SlowDown, 403, 412, a 200 carrying <Error>),
drops or resets the connection, truncates a body, or stalls. Everything else is forwarded to the
real server byte for byte, Host header included, so SigV4 signatures still verify there.

    /usr/bin/python3 faultproxy.py --upstream PORT [--tls CERT KEY]

prints {"port": N} once it listens and serves until its stdin closes (the test died or ended).
With --tls it speaks HTTPS with that certificate (the tests of certificate verification).

Control (paths under /_fault, which no bucket name can start with):
    POST /_fault/rule?action=A&count=N[&method=M][&match=S][&status=C&code=X]
        appends a rule: the next N requests whose method is M (any when absent) and whose path
        and query contain S (any when absent) get action A:
          status    answer `status` with an S3 <Error> document of code `code` (and a RequestId)
          status200 answer 200 with an <Error> document of code `code` (S3 does this for
                    CompleteMultipartUpload and copies that fail late)
          drop      read the request, close the connection without answering
          reset     read the request, close with a TCP reset
          truncate  forward, then send the headers and half the body, then close
          shortlen  forward, then send half the body with a Content-Length that matches it
                    (consistent framing, wrong size for the Content-Range)
          delay     forward after sleeping `ms` milliseconds
          stall     forward, then send the headers and the first `bytes` bytes of the body (half
                    when absent), then keep the connection open and silent for `ms` milliseconds
                    (60000 when absent) before closing it: a connection that stops mid-answer
          late      forward, so the server acts on the request (commits an upload), then hold its
                    answer `ms` milliseconds before sending it (longer than the client waits);
                    requests arriving while the server works on it wait until it has answered,
                    so the client's retries and checks see what it did
          lost      forward, so the server acts on the request, then close the connection
                    without answering (the answer is lost on the way back)
          addmeta   forward, then add `n` headers X-Amz-Meta-Extra<i>: <`len` bytes> to the answer
                    (an object with more user metadata than the client keeps)
        Rules are tried in order; a rule with count 0 left is skipped.
    POST /_fault/reset          forgets rules and counters
    GET  /_fault/stats          {"total":N,"GET":..,"PUT":..,"POST":..,"DELETE":..,"HEAD":..,"faults":N,
                                 "last_host":"..","last_target":".."} (the last proxied request)
"""
import argparse
import http.client
import json
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Condition()
RULES = []
STATS = {}
LATE_IN_SERVER = [0]  # `late` requests the server is still working on; others wait for them


def reset_state():
    RULES.clear()
    STATS.clear()
    STATS.update({"total": 0, "faults": 0})


def take_rule(method, target, host):
    with LOCK:
        while LATE_IN_SERVER[0]:
            LOCK.wait()
        STATS["total"] += 1
        STATS["last_host"] = host
        STATS["last_target"] = target
        STATS[method] = STATS.get(method, 0) + 1
        for r in RULES:
            if r["count"] <= 0:
                continue
            if r.get("method") and r["method"] != method:
                continue
            if r.get("match") and r["match"] not in target:
                continue
            r["count"] -= 1
            STATS["faults"] += 1
            if r["action"] == "late":
                LATE_IN_SERVER[0] += 1
            return r
    return None


def late_answered():
    with LOCK:
        LATE_IN_SERVER[0] -= 1
        LOCK.notify_all()


def error_doc(code, n):
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code>'
        "<Message>injected by faultproxy</Message><RequestId>FAULT-%d</RequestId></Error>" % (code, n)
    ).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream_port = 0

    def log_message(self, fmt, *args):
        pass

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _control(self):
        u = urllib.parse.urlparse(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        out = b"{}"
        with LOCK:
            if u.path == "/_fault/rule":
                q["count"] = int(q.get("count", "1"))
                RULES.append(q)
            elif u.path == "/_fault/reset":
                reset_state()
            elif u.path == "/_fault/stats":
                out = json.dumps(STATS).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def _forward(self, body):
        # A kept-alive connection to the server may have been closed by it meanwhile (its idle
        # timeout): then the request is sent once more on a fresh one, as HTTP clients do. A fresh
        # connection that fails is the server's answer and is passed on as a dropped connection.
        for attempt in (0, 1):
            conn = getattr(self.server.local, "conn", None)
            reused = conn is not None
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
                self.server.local.conn = conn
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in self.headers.items():
                    conn.putheader(k, v)
                conn.endheaders(body if body else None)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                self.server.local.conn = None
                if not (reused and isinstance(e, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError))):
                    raise
        headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in ("transfer-encoding", "connection")]
        return resp.status, resp.reason, headers, data

    def _send(self, status, reason, headers, data, body_bytes=None):
        """Answers with data (or body_bytes, sent under data's length: a truncation)."""
        self.send_response_only(status, reason)
        head = self.command == "HEAD"  # keeps the upstream Content-Length: a HEAD has no body
        for k, v in headers:
            if k.lower() == "content-length" and not head:
                continue
            self.send_header(k, v)
        if not head:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data if body_bytes is None else body_bytes)
        self.wfile.flush()

    def _handle(self):
        if self.path.startswith("/_fault/"):
            self._body()
            return self._control()
        body = self._body()
        rule = take_rule(self.command, self.path, self.headers.get("Host", ""))
        action = rule["action"] if rule else "forward"
        if action in ("status", "status200"):
            with LOCK:
                n = STATS["total"]
            doc = error_doc(rule.get("code", "InternalError"), n)
            status = 200 if action == "status200" else int(rule.get("status", "500"))
            return self._send(status, "Injected", [("Content-Type", "application/xml"),
                                                   ("x-amz-request-id", "FAULT-%d" % n)], doc)
        if action == "drop":
            self.close_connection = True
            return
        if action == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        if action == "delay":
            time.sleep(int(rule.get("ms", "1000")) / 1000.0)
        if action == "late":
            try:
                status, reason, headers, data = self._forward(body)
            finally:
                late_answered()
            time.sleep(int(rule.get("ms", "1000")) / 1000.0)
            try:
                self._send(status, reason, headers, data)
            except OSError:  # the client gave up waiting and closed: the expected case
                self.close_connection = True
            return
        status, reason, headers, data = self._forward(body)
        if action == "lost":
            self.close_connection = True
            return
        if action == "addmeta":
            value = "v" * int(rule.get("len", "1"))
            headers += [("X-Amz-Meta-Extra%d" % i, value) for i in range(int(rule.get("n", "1")))]
        if action == "stall":
            cut = int(rule["bytes"]) if "bytes" in rule else len(data) // 2
            self.send_response_only(status, reason)
            for k, v in headers:
                if k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data[:cut] if self.command != "HEAD" else b"")
                self.wfile.flush()
            except OSError:
                pass
            time.sleep(int(rule.get("ms", "60000")) / 1000.0)
            self.close_connection = True
            return
        if action == "truncate":
            self._send(status, reason, headers, data, body_bytes=data[: len(data) // 2])
            self.close_connection = True
            return
        if action == "shortlen":
            half = data[: len(data) // 2]
            return self._send(status, reason, headers, half)
        return self._send(status, reason, headers, data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", type=int, required=True)
    ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = ap.parse_args()
    reset_state()
    Handler.upstream_port = args.upstream
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if args.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls[0], args.tls[1])
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.daemon_threads = True
    srv.local = threading.local()
    sys.stdout.write(json.dumps({"port": srv.server_address[1]}) + "\n")
    sys.stdout.flush()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    sys.stdin.read()  # returns when the test closes our stdin or exits


if __name__ == "__main__":
    main()
