"""A FAKE of the EC2 instance metadata service (IMDSv2), for tests/s3/test_s3_creds.c.

No real metadata service exists on a test machine, so this stands in for it. It behaves as IMDSv2
does where the credentials chain depends on it: a session token must first be obtained with
PUT /latest/api/token (and the X-aws-ec2-metadata-token-ttl-seconds header), and every GET must
carry it in X-aws-ec2-metadata-token, or it answers 401. The role's credentials change on every
fetch (AccessKeyId ASIAFAKE00000001, ...02, ...); the first expire --first-ttl seconds from now
(inside the client's five-minute refresh margin), later ones an hour from now, so a test can see
a refresh happen once and then stop. GET /_fake/stats (no token needed) returns the counters.

Standard library only (and fake_server.py beside it). Listens on a free port of 127.0.0.1, prints {"port": N} on the first line
of stdout, and exits when its stdin closes (when the test process ends).
"""

import argparse
import datetime
import json
import threading

import fake_server

ROLE = "shoal-test-role"
CREDS_PATH = "/latest/meta-data/iam/security-credentials/"


class State:
    def __init__(self, first_ttl):
        self.lock = threading.Lock()
        self.first_ttl = first_ttl
        self.tokens = set()
        self.stats = {"token_puts": 0, "role_gets": 0, "creds_gets": 0, "rejected": 0}


def make_handler(state):
    class Handler(fake_server.Handler):
        def do_PUT(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            if self.path != "/latest/api/token":
                return self.reply(404, "not found")
            ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
            if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                with state.lock:
                    state.stats["rejected"] += 1
                return self.reply(400, "missing or bad X-aws-ec2-metadata-token-ttl-seconds")
            with state.lock:
                state.stats["token_puts"] += 1
                token = "fake-imds-token-%d" % state.stats["token_puts"]
                state.tokens.add(token)
            self.reply(200, token)

        def do_GET(self):
            if self.path == "/_fake/stats":
                with state.lock:
                    return self.reply(200, json.dumps(state.stats), "application/json")
            with state.lock:
                if self.headers.get("X-aws-ec2-metadata-token") not in state.tokens:
                    state.stats["rejected"] += 1
                    return self.reply(401, "")
            if self.path == CREDS_PATH:
                with state.lock:
                    state.stats["role_gets"] += 1
                return self.reply(200, ROLE + "\n")
            if self.path == CREDS_PATH + ROLE:
                with state.lock:
                    state.stats["creds_gets"] += 1
                    n = state.stats["creds_gets"]
                ttl = state.first_ttl if n == 1 else 3600
                now = datetime.datetime.now(datetime.timezone.utc)
                doc = {
                    "Code": "Success",
                    "LastUpdated": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "Type": "AWS-HMAC",
                    "AccessKeyId": "ASIAFAKE%08d" % n,
                    "SecretAccessKey": "fake\\/secret+%d" % n,
                    # Longer than the 200-byte lines of Debian's inih, as real session tokens are.
                    "Token": "fake-session-token-%d-" % n + "T" * 1200,
                    "Expiration": (now + datetime.timedelta(seconds=ttl)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
                return self.reply(200, json.dumps(doc, indent=2).replace("\\\\/", "\\/"), "application/json")
            self.reply(404, "not found")

    return Handler


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--first-ttl", type=int, default=60)
    args = ap.parse_args()
    fake_server.serve(make_handler(State(args.first_ttl)))


if __name__ == "__main__":
    main()
