#!/usr/bin/python3
"""The /metrics exposition, the Grafana dashboard and the Prometheus alert rules, checked strictly.

Two uses:

* as CTest script cases (tests/deploy/CMakeLists.txt): the checker itself rejects each kind of
  malformed exposition it is meant to catch, and the dashboard and rules parse and have the shape
  Grafana and Prometheus load;
* as a command, from the live-daemon test (tests/node/test_daemon.c,
  test_daemon_metrics_parse_strictly_and_histograms_move_with_traffic):

      test_metrics_format.py live BEFORE AFTER [--mount]

  BEFORE and AFTER are two scrapes of one daemon's /metrics around real S3, peer (and, with
  --mount, FUSE) traffic. Both must pass the strict checks, the histograms must have moved with
  the traffic, and every metric name the dashboard and the rules use must be one AFTER exports.

The strict checker follows the text exposition format 0.0.4 and Prometheus's naming conventions:
every family has one HELP and one TYPE before its samples, its samples are together, counters end
in _total, units come last (_seconds, _bytes), histograms have cumulative buckets in ascending
`le` ending at +Inf with _count equal to the +Inf bucket, label values use only the \\\\, \\" and
\\n escapes, and no series appears twice. prometheus_client's own parser (Debian's
python3-prometheus-client) must also accept the text.
"""
import json
import math
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "shoal-dashboard.json")
RULES = os.path.join(ROOT, "deploy", "prometheus", "shoal-alerts.yml")

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


class Bad(Exception):
    pass


def parse_labels(text, where):
    """Parses `a="x",b="y"` strictly; returns a list of (name, value)."""
    out, i = [], 0
    while i < len(text):
        m = re.match(LABEL + "=\"", text[i:])
        if not m:
            raise Bad(f"{where}: bad label at {text[i:]!r}")
        name = m.group(0)[:-2]
        i += m.end()
        value = []
        while True:
            if i >= len(text):
                raise Bad(f"{where}: unterminated value of label {name}")
            c = text[i]
            if c == "\\":
                nxt = text[i + 1:i + 2]
                if nxt not in ("\\", '"', "n"):
                    raise Bad(f"{where}: label {name} has the escape \\{nxt}, not one of \\\\ \\\" \\n")
                value.append({"\\": "\\", '"': '"', "n": "\n"}[nxt])
                i += 2
            elif c == '"':
                i += 1
                break
            elif c == "\n":
                raise Bad(f"{where}: raw newline in label {name}")
            else:
                value.append(c)
                i += 1
        if name.startswith("__"):
            raise Bad(f"{where}: reserved label name {name}")
        if any(n == name for n, _ in out):
            raise Bad(f"{where}: label {name} twice")
        out.append((name, "".join(value)))
        if i < len(text):
            if text[i] != ",":
                raise Bad(f"{where}: expected ',' after label {name}, got {text[i:]!r}")
            i += 1
    return out


def parse_value(text, where):
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text):
        raise Bad(f"{where}: value {text!r} is not a number")
    return float(text)


def check_exposition(text):
    """Checks text strictly; returns {family: {"type", "help", "samples": [(name, labels, value)]}}."""
    if not text.endswith("\n"):
        raise Bad("the exposition does not end with a newline")
    families, current, seen_series, closed = {}, None, set(), set()
    for n, line in enumerate(text[:-1].split("\n"), 1):
        where = f"line {n}"
        if line == "":
            continue
        m = re.fullmatch(r"# (HELP|TYPE) (" + NAME + r") (.*)", line)
        if m:
            kind, name, rest = m.groups()
            fam = families.setdefault(name, {"type": None, "help": None, "samples": []})
            if fam["samples"]:
                raise Bad(f"{where}: {kind} of {name} after its samples")
            if name in closed:
                raise Bad(f"{where}: family {name} declared again after another family")
            if current and current != name:
                closed.add(current)
            current = name
            if kind == "HELP":
                if fam["help"] is not None:
                    raise Bad(f"{where}: second HELP for {name}")
                if re.search(r"\\[^\\n]", rest):
                    raise Bad(f"{where}: HELP of {name} has an escape other than \\\\ and \\n")
                if not rest.strip():
                    raise Bad(f"{where}: empty HELP for {name}")
                fam["help"] = rest
            else:
                if fam["type"] is not None:
                    raise Bad(f"{where}: second TYPE for {name}")
                if rest not in TYPES:
                    raise Bad(f"{where}: unknown TYPE {rest!r} for {name}")
                fam["type"] = rest
            continue
        if line.startswith("#"):
            continue
        m = re.fullmatch(r"(" + NAME + r")(?:\{(.*)\})? (\S+)(?: (-?\d+))?", line)
        if not m:
            raise Bad(f"{where}: not a sample line: {line!r}")
        name, labels, value, _ts = m.groups()
        labels = parse_labels(labels or "", where)
        value = parse_value(value, where)
        fam = families.get(current)
        if fam is None:
            raise Bad(f"{where}: sample {name} before any HELP/TYPE")
        if fam["type"] is None or fam["help"] is None:
            raise Bad(f"{where}: sample {name} of family {current}, which lacks HELP or TYPE before it")
        allowed = {current}
        if fam["type"] == "histogram":
            allowed = {current + "_bucket", current + "_sum", current + "_count"}
        if name not in allowed:
            raise Bad(f"{where}: sample {name} inside family {current} ({fam['type']})")
        key = (name, tuple(sorted(labels)))
        if key in seen_series:
            raise Bad(f"{where}: series {name}{dict(labels)} twice")
        seen_series.add(key)
        fam["samples"].append((name, dict(labels), value))
    for name, fam in families.items():
        if fam["type"] is None or fam["help"] is None:
            raise Bad(f"family {name} lacks {'TYPE' if fam['type'] is None else 'HELP'}")
        check_family_name(name, fam["type"])
        if fam["type"] == "counter":
            for s in fam["samples"]:
                if s[2] < 0 or math.isnan(s[2]):
                    raise Bad(f"counter {name}{s[1]} is {s[2]}")
        if fam["type"] == "histogram":
            check_histogram(name, fam["samples"])
    return families


def check_family_name(name, typ):
    if not (name.startswith("shoal_") or name.startswith("process_")):
        raise Bad(f"{name}: not in the shoal_ or process_ namespace")
    if typ == "counter" and not name.endswith("_total"):
        raise Bad(f"counter {name} does not end in _total")
    if typ != "counter" and name.endswith("_total"):
        raise Bad(f"{typ} {name} ends in _total, which is for counters")
    if typ != "histogram" and re.search(r"_(bucket|sum|count)$", name):
        raise Bad(f"{typ} {name} ends like a histogram's series")
    base = name[:-len("_total")] if name.endswith("_total") else name
    for unit in ("seconds", "bytes"):
        if re.search(r"(^|_)" + unit + r"_", base):
            raise Bad(f"{name}: the unit {unit} is not at the end")
    if re.search(r"_(milliseconds|microseconds|ms|us|kb|mb|kib|mib)(_|$)", base):
        raise Bad(f"{name}: not in a base unit (seconds, bytes)")
    if typ == "histogram" and not base.endswith("_seconds"):
        raise Bad(f"histogram {name} is not in seconds")


def check_histogram(name, samples):
    groups = {}
    for sname, labels, value in samples:
        rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        g = groups.setdefault(rest, {"buckets": [], "sum": None, "count": None})
        if sname.endswith("_bucket"):
            if "le" not in labels:
                raise Bad(f"{sname}{dict(rest)}: a bucket without le")
            g["buckets"].append((parse_value(labels["le"], sname), value, labels["le"]))
        elif sname.endswith("_sum"):
            g["sum"] = value
        else:
            g["count"] = value
    if not groups:
        raise Bad(f"histogram {name} has no series")
    for rest, g in groups.items():
        what = f"{name}{dict(rest)}"
        if not g["buckets"] or g["sum"] is None or g["count"] is None:
            raise Bad(f"{what}: needs buckets, _sum and _count")
        les = [b[0] for b in g["buckets"]]
        if les != sorted(les) or len(set(les)) != len(les):
            raise Bad(f"{what}: bucket bounds not strictly ascending: {[b[2] for b in g['buckets']]}")
        if g["buckets"][-1][2] != "+Inf":
            raise Bad(f"{what}: the last bucket is le={g['buckets'][-1][2]!r}, not +Inf")
        counts = [b[1] for b in g["buckets"]]
        if any(b < a for a, b in zip(counts, counts[1:])):
            raise Bad(f"{what}: bucket counts not cumulative: {counts}")
        if counts[-1] != g["count"]:
            raise Bad(f"{what}: _count {g['count']} != +Inf bucket {counts[-1]}")
        if g["sum"] < 0:
            raise Bad(f"{what}: negative _sum")


def cross_check_with_prometheus_client(text):
    from prometheus_client.parser import text_string_to_metric_families
    return sum(1 for _ in text_string_to_metric_families(text))


# ---- the dashboard and the rules -------------------------------------------------------------

PROMQL_WORDS = {
    "sum", "rate", "irate", "increase", "by", "without", "histogram_quantile", "max", "min", "avg",
    "count", "clamp_min", "clamp_max", "le", "on", "ignoring", "group_left", "group_right", "and",
    "or", "unless", "bool", "offset", "absent", "time", "vector", "scalar", "topk", "delta",
    "deriv", "predict_linear", "max_over_time", "min_over_time", "avg_over_time", "label_replace",
    "count_values", "changes", "resets", "abs", "round", "sort", "sort_desc",
}
# Series Prometheus itself records for every target it scrapes.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def exprs_of_dashboard(path):
    d = json.load(open(path))
    if not isinstance(d.get("panels"), list) or not d["panels"]:
        raise Bad(f"{path}: no panels")
    if not d.get("title") or not d.get("uid"):
        raise Bad(f"{path}: a dashboard needs a title and a uid")
    out = []

    def walk(panels):
        for p in panels:
            if not p.get("title") or "type" not in p:
                raise Bad(f"{path}: a panel without a title or type: {p.get('id')}")
            for t in p.get("targets", []):
                if not t.get("expr"):
                    raise Bad(f"{path}: panel {p['title']!r} has a target without expr")
                out.append((f"panel {p['title']!r}", t["expr"]))
            walk(p.get("panels", []))

    walk(d["panels"])
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            q = q["query"] if isinstance(q, dict) else q
            # Grafana's label_values(METRIC, LABEL): the metric is what the variable reads.
            q = re.sub(r"label_values\((.*),\s*" + LABEL + r"\s*\)$", r"\1", q)
            out.append((f"variable {v.get('name')}", q))
    return out


def exprs_of_rules(path):
    import yaml
    doc = yaml.safe_load(open(path))
    out = []
    if not isinstance(doc.get("groups"), list) or not doc["groups"]:
        raise Bad(f"{path}: no rule groups")
    for g in doc["groups"]:
        for r in g.get("rules", []):
            name = r.get("alert") or r.get("record")
            if not name or not r.get("expr"):
                raise Bad(f"{path}: a rule without alert/record or expr: {r}")
            if r.get("alert"):
                ann = r.get("annotations", {})
                if not ann.get("summary") or not ann.get("description"):
                    raise Bad(f"{path}: alert {name} lacks a summary or description")
                if r.get("labels", {}).get("severity") not in ("warning", "critical"):
                    raise Bad(f"{path}: alert {name} has no severity warning|critical")
            out.append((f"rule {name}", r["expr"]))
    return out


def metric_names(expr):
    """The metric names an expression reads: identifiers that are not PromQL words, not label
    names inside {...} or by (...), not strings, not durations."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)           # strings
    e = re.sub(r"\{[^}]*\}", "{}", e)                        # label matchers
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\[[^\]]*\]", "[]", e)                       # ranges
    e = re.sub(r"\$\{?\w+\}?", " ", e)                       # Grafana variables
    names = set()
    for tok in re.findall(NAME, e):
        if tok in PROMQL_WORDS or re.fullmatch(r"\d.*", tok):
            continue
        names.add(tok)
    return names


def exported_names(families):
    names = set()
    for fam, f in families.items():
        names.add(fam)
        if f["type"] == "histogram":
            names |= {fam + "_bucket", fam + "_sum", fam + "_count"}
    return names


def check_references(families):
    exported = exported_names(families) | PROMETHEUS_SERIES
    refs = exprs_of_dashboard(DASHBOARD) + exprs_of_rules(RULES)
    unknown = []
    for where, expr in refs:
        for n in metric_names(expr):
            if n not in exported:
                unknown.append(f"{where}: {n}")
    if unknown:
        raise Bad("names not on /metrics: " + "; ".join(sorted(unknown)))
    return len(refs)


# ---- the live comparison -----------------------------------------------------------------------

def value(families, fam, sample=None, **labels):
    f = families.get(fam)
    if f is None:
        raise Bad(f"no family {fam}")
    sample = sample or fam
    for s in f["samples"]:
        if s[0] == sample and all(s[1].get(k) == v for k, v in labels.items()):
            return s[2]
    raise Bad(f"no sample {sample}{labels}")


def live(before_path, after_path, mount):
    before = check_exposition(open(before_path).read())
    text = open(after_path).read()
    after = check_exposition(text)
    cross_check_with_prometheus_client(text)

    def delta(fam, sample=None, **labels):
        return value(after, fam, sample, **labels) - value(before, fam, sample, **labels)

    problems = []

    def want(cond, msg):
        if not cond:
            problems.append(msg)

    ttfb = "shoal_read_time_to_first_byte_seconds"
    for src in ("local", "peer", "s3"):
        reads = value(after, "shoal_block_reads_total", source=src)
        seen = value(after, ttfb, ttfb + "_count", source=src)
        want(reads == seen, f"{src}: {reads:.0f} block reads but {seen:.0f} in the time-to-first-byte histogram")
    want(delta("shoal_block_reads_total", source="s3") > 0, "the traffic read no block from S3")
    peer_reads = delta("shoal_block_reads_total", source="peer")
    want(peer_reads > 0, "the traffic read no block from a peer")
    dur = "shoal_s3_request_duration_seconds"
    got = delta(dur, dur + "_count", op="get")
    want(got > 0, "S3 GETs were made but the GET latency histogram did not move")
    want(got <= delta("shoal_s3_requests_total", op="get"), f"{got:.0f} GETs timed, more than were sent")
    pf = "shoal_peer_fetch_duration_seconds"
    fetched = delta(pf, pf + "_count")
    want(fetched >= peer_reads, f"{peer_reads:.0f} blocks came from peers but {fetched:.0f} peer fetches were timed")
    want(value(after, "process_resident_memory_bytes") > 0, "no resident memory")
    want(value(after, "process_open_fds") > 0, "no open fds")
    want(value(after, "process_start_time_seconds") > 1.7e9, "a start time before 2023")
    if mount:
        fo = "shoal_fuse_operation_duration_seconds"
        for op in ("lookup", "open", "read", "write", "release"):
            want(delta(fo, fo + "_count", op=op) > 0, f"FUSE {op} requests were made but not timed")
        want(delta("shoal_mount_opens_total") >= 2, "two files were opened through the mount")
        want(delta("shoal_mount_written_bytes_total") == int(os.environ.get("WRITTEN", "0")),
             f"mount written bytes moved by {delta('shoal_mount_written_bytes_total'):.0f}, "
             f"not {os.environ.get('WRITTEN')}")
        want(delta("shoal_mount_read_bytes_total") >= int(os.environ.get("READ", "0")),
             f"mount read bytes moved by {delta('shoal_mount_read_bytes_total'):.0f}, less than {os.environ.get('READ')}")
    refs = check_references(after)
    if problems:
        raise Bad("; ".join(problems))
    print(f"ok: {len(after)} families, {refs} expressions of the dashboard and rules checked")


# ---- cases of the checker itself -----------------------------------------------------------------

GOOD = (
    "# HELP shoal_x_total Things.\n# TYPE shoal_x_total counter\nshoal_x_total{op=\"a\\\\b\\\"c\\nd\"} 3\n"
    "# HELP shoal_t_seconds Time.\n# TYPE shoal_t_seconds histogram\n"
    "shoal_t_seconds_bucket{le=\"0.1\"} 1\nshoal_t_seconds_bucket{le=\"+Inf\"} 2\n"
    "shoal_t_seconds_sum 0.3\nshoal_t_seconds_count 2\n"
)


def rejects(text, why):
    try:
        check_exposition(text)
    except Bad as e:
        if why not in str(e):
            raise AssertionError(f"rejected for another reason: {e} (wanted {why!r})")
        return
    raise AssertionError(f"accepted an exposition that has {why!r}:\n{text}")


def test_metrics_checker_accepts_a_well_formed_exposition():
    fams = check_exposition(GOOD)
    assert fams["shoal_x_total"]["samples"][0][1]["op"] == 'a\\b"c\nd', fams
    cross_check_with_prometheus_client(GOOD)


def test_metrics_checker_rejects_families_without_help_or_type():
    rejects("# TYPE shoal_x_total counter\nshoal_x_total 1\n", "lacks HELP")
    rejects("# HELP shoal_x_total X.\nshoal_x_total 1\n", "lacks HELP or TYPE")
    rejects("shoal_x_total 1\n", "before any HELP/TYPE")
    rejects("# HELP shoal_a_total A.\n# TYPE shoal_a_total counter\n# HELP shoal_b_total B.\n"
            "# TYPE shoal_b_total counter\n# HELP shoal_a_total A again.\n", "declared again")
    rejects(GOOD + "# HELP shoal_x_total Again.\n", "after its samples")


def test_metrics_checker_rejects_names_against_the_conventions():
    rejects("# HELP shoal_x X.\n# TYPE shoal_x counter\nshoal_x 1\n", "does not end in _total")
    rejects("# HELP shoal_x_total X.\n# TYPE shoal_x_total gauge\nshoal_x_total 1\n", "which is for counters")
    rejects("# HELP shoal_bytes_in_total X.\n# TYPE shoal_bytes_in_total counter\nshoal_bytes_in_total 1\n",
            "not at the end")
    rejects("# HELP shoal_t_ms X.\n# TYPE shoal_t_ms gauge\nshoal_t_ms 1\n", "base unit")
    rejects("# HELP other_x X.\n# TYPE other_x gauge\nother_x 1\n", "namespace")


def test_metrics_checker_rejects_broken_histograms():
    h = "# HELP shoal_t_seconds T.\n# TYPE shoal_t_seconds histogram\n"
    rejects(h + 'shoal_t_seconds_bucket{le="0.1"} 2\nshoal_t_seconds_bucket{le="+Inf"} 1\n'
            "shoal_t_seconds_sum 1\nshoal_t_seconds_count 1\n", "not cumulative")
    rejects(h + 'shoal_t_seconds_bucket{le="0.1"} 1\nshoal_t_seconds_bucket{le="1"} 1\n'
            "shoal_t_seconds_sum 1\nshoal_t_seconds_count 1\n", "not +Inf")
    rejects(h + 'shoal_t_seconds_bucket{le="1"} 1\nshoal_t_seconds_bucket{le="0.1"} 1\n'
            'shoal_t_seconds_bucket{le="+Inf"} 1\nshoal_t_seconds_sum 1\nshoal_t_seconds_count 1\n', "ascending")
    rejects(h + 'shoal_t_seconds_bucket{le="+Inf"} 2\nshoal_t_seconds_sum 1\nshoal_t_seconds_count 3\n',
            "_count 3.0 != +Inf bucket 2.0")
    rejects(h + 'shoal_t_seconds_bucket{le="+Inf"} 2\nshoal_t_seconds_count 2\n', "needs buckets, _sum and _count")


def test_metrics_checker_rejects_bad_label_syntax_and_duplicates():
    c = "# HELP shoal_x_total X.\n# TYPE shoal_x_total counter\n"
    rejects(c + 'shoal_x_total{op="a\\tb"} 1\n', "escape")
    rejects(c + 'shoal_x_total{op="a} 1\n', "unterminated")
    rejects(c + 'shoal_x_total{op="a",op="b"} 1\n', "twice")
    rejects(c + 'shoal_x_total{op="a"} 1\nshoal_x_total{op="a"} 2\n', "twice")
    rejects(c + "shoal_x_total one\n", "not a number")
    rejects(c + "shoal_x_total 1", "newline")


def test_metrics_checker_finds_names_a_dashboard_uses():
    assert metric_names('sum by (op) (rate(shoal_s3_requests_total{op="get"}[5m])) / on() '
                        'histogram_quantile(0.99, sum by (le) (rate(shoal_t_seconds_bucket{job="$job"}[$__rate_interval])))') \
        == {"shoal_s3_requests_total", "shoal_t_seconds_bucket"}
    assert metric_names('up{job="shoal"} == 0') == {"up"}


def test_deploy_dashboard_and_alert_rules_parse():
    try:
        import yaml  # noqa: F401
    except ImportError:
        print("python3-yaml is missing (scripts/deps installs it)")
        sys.exit(77)
    dash = exprs_of_dashboard(DASHBOARD)
    rules = exprs_of_rules(RULES)
    assert len(dash) >= 10 and len(rules) >= 5, (len(dash), len(rules))
    for where, expr in dash + rules:
        assert metric_names(expr), f"{where} reads no metric: {expr}"
        assert expr.count("(") == expr.count(")"), f"{where}: unbalanced parentheses: {expr}"


if __name__ == "__main__":
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        print("python3-prometheus-client is missing (scripts/deps installs it)")
        sys.exit(77)
    try:
        if sys.argv[1] == "live":
            live(sys.argv[2], sys.argv[3], "--mount" in sys.argv[4:])
        else:
            globals()[sys.argv[1]]()
    except (Bad, AssertionError) as e:
        print(f"FAIL: {e}")
        sys.exit(1)
