"""A FAKE of the container credentials endpoint (the ECS agent at 169.254.170.2, the EKS Pod
Identity agent), for tests/s3/test_s3_creds.c.

No such agent runs on a test machine, so this stands in for it. It answers GET --path (any other
path is 404) only when the Authorization header holds the expected token: the current contents
of --token-file (read at every request, so a test can rotate it) or --token; with neither, any
request is accepted but must carry no Authorization. Otherwise it answers 401, as the agents do.
Accept must be application/json when given. The credentials change with every answer
(AccessKeyId ASIACONTAINER0001, ...02, ...); the first expires --first-ttl seconds from now
(inside the client's five-minute renewal margin), later ones an hour from now. The secret of
answer N is container/secret+N, so a test can let another fake verify signatures made with them.
GET /_fake/stats (no token) returns the counters and the last Authorization header received.

Standard library only (and fake_server.py beside it). Listens on a free port of 127.0.0.1, prints {"port": N} on the first line
of stdout, and exits when its stdin closes (when the test process ends).
"""

import argparse
import datetime
import json
import threading

import fake_server


def make_handler(args, state, lock):
    class Handler(fake_server.Handler):
        def reply(self, status, body, ctype="application/json"):
            super().reply(status, body, ctype)

        def expected_token(self):
            if args.token_file:
                with open(args.token_file) as f:
                    return f.read().strip()
            return args.token

        def do_GET(self):
            if self.path == "/_fake/stats":
                with lock:
                    return self.reply(200, json.dumps(state))
            got = self.headers.get("Authorization")
            with lock:
                state["last_authorization"] = got or ""
            if self.path != args.path:
                return self.reply(404, '{"message": "not found"}')
            if got != self.expected_token() or self.headers.get("Accept", "application/json") != "application/json":
                with lock:
                    state["rejected"] += 1
                return self.reply(401, '{"code": "Unauthorized", "message": "bad or missing authorization token"}')
            with lock:
                state["gets"] += 1
                n = state["gets"]
            ttl = args.first_ttl if n == 1 else 3600
            expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=ttl)
            self.reply(200, json.dumps({
                "AccessKeyId": "ASIACONTAINER%04d" % n,
                "SecretAccessKey": "container/secret+%d" % n,
                "Token": "container-token-%d-" % n + "C" * 1100,
                "AccountId": "123456789012",
                "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }))

    return Handler


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--path", default="/v2/credentials/fake-task")
    ap.add_argument("--token")
    ap.add_argument("--token-file")
    ap.add_argument("--first-ttl", type=int, default=60)
    args = ap.parse_args()
    state = {"gets": 0, "rejected": 0, "last_authorization": ""}
    fake_server.serve(make_handler(args, state, threading.Lock()))


if __name__ == "__main__":
    main()
