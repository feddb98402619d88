"""A FAKE of AWS STS (AssumeRole and AssumeRoleWithWebIdentity), for tests/s3/test_s3_creds.c.

No real STS can be reached from a test machine, so this stands in for it and checks each request
the way STS would reject a bad one:

- POST with Content-Type application/x-www-form-urlencoded; Action, Version=2011-06-15, RoleArn
  and a valid RoleSessionName (2-64 of [A-Za-z0-9+=,.@_-]) in the form; 400 otherwise.
- AssumeRoleWithWebIdentity: a non-empty WebIdentityToken and no Authorization header (the call
  is unsigned); DurationSeconds, if any, is checked for every action (900-43200).
- AssumeRole: a SigV4 Authorization header for service "sts", recomputed here with the secret of
  its access key and compared (403 SignatureDoesNotMatch otherwise). The keys it knows are the
  --key ID=SECRET arguments plus every credential it has issued, so a role assumed with another
  role's credentials verifies too; for those, x-amz-security-token must be the issued token and
  be signed.
- A RoleArn that contains "denied" is answered 403 AccessDenied, as STS answers a role that does
  not trust the caller.

Credentials change with every answer (AccessKeyId ASIASTSFAKE00001, ...02, ...). The first
expires --first-ttl seconds from now (inside the client's five-minute renewal margin), the later
ones an hour from now, so a test can see one renewal and then none. GET /_fake/stats returns
the counters and the parameters and headers of the last accepted request.

Standard library only (and fake_server.py beside it). Listens on a free port of 127.0.0.1, prints {"port": N} on the first line
of stdout, and exits when its stdin closes (when the test process ends).
"""

import argparse
import datetime
import hashlib
import hmac
import json
import re
import threading
import urllib.parse

import fake_server

SESSION_NAME = re.compile(r"^[\w+=,.@-]{2,64}$")
AUTH = re.compile(r"^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                  r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$")


class State:
    def __init__(self, first_ttl, keys):
        self.lock = threading.Lock()
        self.first_ttl = first_ttl
        self.keys = dict(keys)       # access key -> (secret, session token or None)
        self.stats = {"assume_role": 0, "web_identity": 0, "rejected": 0, "last": {}}


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def make_handler(state):
    class Handler(fake_server.Handler):
        def error(self, status, code, message):
            with state.lock:
                state.stats["rejected"] += 1
            self.reply(status, "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error>"
                       "<Type>Sender</Type><Code>%s</Code><Message>%s</Message></Error>"
                       "<RequestId>fake-request-id</RequestId></ErrorResponse>" % (code, message), "text/xml")

        def check_signature(self, body):
            """None when the SigV4 signature is right, else the reason."""
            m = AUTH.match(self.headers.get("Authorization", ""))
            if not m:
                return "no SigV4 Authorization header"
            key, date, region, service, signed, signature = m.groups()
            if service != "sts":
                return "signed for service %s" % service
            with state.lock:
                known = state.keys.get(key)
            if not known:
                return "unknown access key %s" % key
            secret, token = known
            names = signed.split(";")
            if "host" not in names or "x-amz-date" not in names:
                return "host and x-amz-date must be signed"
            if token is not None and (self.headers.get("x-amz-security-token") != token
                                      or "x-amz-security-token" not in names):
                return "temporary credentials without their signed session token"
            amz_date = self.headers.get("x-amz-date", "")
            if not amz_date.startswith(date):
                return "x-amz-date does not match the credential scope"
            canonical = "".join("%s:%s\n" % (n, " ".join((self.headers.get(n) or "").split())) for n in names)
            path = urllib.parse.urlsplit(self.path).path or "/"
            creq = "\n".join(["POST", path, "", canonical, signed, sha256(body)])
            scope = "%s/%s/%s/aws4_request" % (date, region, service)
            to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, sha256(creq.encode())])
            k = ("AWS4" + secret).encode()
            for part in (date, region, service, "aws4_request"):
                k = hmac.new(k, part.encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest(), signature):
                return "signature mismatch"
            return None

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not (self.headers.get("Content-Type") or "").startswith("application/x-www-form-urlencoded"):
                return self.error(400, "InvalidRequest", "Content-Type is not a form")
            form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(), keep_blank_values=True).items()}
            action = form.get("Action")
            if action not in ("AssumeRole", "AssumeRoleWithWebIdentity") or form.get("Version") != "2011-06-15":
                return self.error(400, "InvalidAction", "bad Action or Version")
            if not form.get("RoleArn", "").startswith("arn:"):
                return self.error(400, "ValidationError", "RoleArn is missing")
            if not SESSION_NAME.match(form.get("RoleSessionName", "")):
                return self.error(400, "ValidationError", "RoleSessionName is missing or invalid")
            if "DurationSeconds" in form and not 900 <= int(form["DurationSeconds"]) <= 43200:
                return self.error(400, "ValidationError", "DurationSeconds out of range")
            if action == "AssumeRoleWithWebIdentity":
                if "Authorization" in self.headers:
                    return self.error(400, "InvalidRequest", "AssumeRoleWithWebIdentity is not signed")
                if not form.get("WebIdentityToken"):
                    return self.error(400, "ValidationError", "WebIdentityToken is missing")
            else:
                why = self.check_signature(body)
                if why:
                    return self.error(403, "SignatureDoesNotMatch", why)
            if "denied" in form["RoleArn"]:
                return self.error(403, "AccessDenied", "Not authorized to perform sts:%s" % action)
            with state.lock:
                state.stats["assume_role" if action == "AssumeRole" else "web_identity"] += 1
                n = state.stats["assume_role"] + state.stats["web_identity"]
                ttl = state.first_ttl if n == 1 else 3600
                key = "ASIASTSFAKE%05d" % n
                secret = "sts/fake+secret%d" % n
                token = "sts-fake-token-%d-" % n + "S" * 1500
                state.keys[key] = (secret, token)
                last = dict(form)
                last["authorization"] = self.headers.get("Authorization", "")
                last["signed_by"] = AUTH.match(last["authorization"]).group(1) if last["authorization"] else ""
                last["security_token"] = "yes" if self.headers.get("x-amz-security-token") else "no"
                last["path"] = self.path
                state.stats["last"] = last
            expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=ttl)
            result = action + "Result"
            self.reply(200, "<%sResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><%s>"
                       "<Credentials><AccessKeyId>%s</AccessKeyId><SecretAccessKey>%s</SecretAccessKey>"
                       "<SessionToken>%s</SessionToken><Expiration>%s</Expiration></Credentials>"
                       "<AssumedRoleUser><Arn>%s/%s</Arn></AssumedRoleUser></%s>"
                       "<ResponseMetadata><RequestId>fake</RequestId></ResponseMetadata></%sResponse>"
                       % (action, result, key, secret, token, expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                          form["RoleArn"], form["RoleSessionName"], result, action), "text/xml")

        def do_GET(self):
            if self.path == "/_fake/stats":
                with state.lock:
                    return self.reply(200, json.dumps(state.stats), "application/json")
            self.reply(404, "", "text/xml")

    return Handler


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--first-ttl", type=int, default=60)
    ap.add_argument("--key", action="append", default=[], help="ACCESS_KEY=SECRET that may sign AssumeRole")
    args = ap.parse_args()
    keys = {k: (s, None) for k, s in (kv.split("=", 1) for kv in args.key)}
    fake_server.serve(make_handler(State(args.first_ttl, keys)))


if __name__ == "__main__":
    main()
