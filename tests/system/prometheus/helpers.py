#!/usr/bin/env python3
"""Helpers for tests/system/prometheus.sh (standard library only: runs on a fresh Debian).

Subcommands:
  ports N                          print N free loopback TCP ports
  daemon-config EXAMPLE OUT DATA KEY GRPC HTTP ADMIN SIP
                                   write a suppressd config derived from the example config
  prometheus-config SRC OUT RULES TARGET
                                   the shipped prometheus.yml with a loopback target, 1 s intervals
  query URL PROMQL                 print the value of a PromQL query that returns one sample
                                   (nothing when it returns no sample)
  rules URL                        check every rule Prometheus loaded evaluates without error
  dashboard JSON METRICS URL       every panel query names only metrics of the live scrape
                                   METRICS and parses in Prometheus at URL
  runbook ALERTS RUNBOOK           every alert's runbook_url anchor is a heading of RUNBOOK
"""
import json
import os
import re
import socket
import sys
import urllib.parse
import urllib.request


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def ports(count):
    sockets = []
    for _ in range(int(count)):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in sockets))
    for s in sockets:
        s.close()


def replace_key(text, key, value, required=True):
    """Replaces `key = ...` (a whole line) everywhere; the example config is the template."""
    pattern = re.compile(rf'(?m)^{re.escape(key)}\s*=\s*".*"\s*$')
    if required and not pattern.search(text):
        fail(f"example config has no '{key}' line to rewrite")
    return pattern.sub(f'{key} = "{value}"', text)


def daemon_config(example, out, data_dir, key_file, grpc, http, admin, sip):
    text = open(example, encoding="utf-8").read()
    text = replace_key(text, "grpc_listen", f"127.0.0.1:{grpc}")
    text = replace_key(text, "http_listen", f"127.0.0.1:{http}")
    text = replace_key(text, "admin_listen", f"127.0.0.1:{admin}", required=False)
    text = replace_key(text, "listen_udp", f"127.0.0.1:{sip}", required=False)
    text = replace_key(text, "listen_tcp", f"127.0.0.1:{sip}", required=False)
    text = replace_key(text, "data_dir", data_dir)
    text = replace_key(text, "key_file", key_file, required=False)
    text = re.sub(r"(?m)^generate_samples\s*=.*$", "generate_samples = true", text)
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)


def prometheus_config(src, out, rules, target):
    text = open(src, encoding="utf-8").read()
    for key_name in ("scrape_interval", "evaluation_interval"):
        text, n = re.subn(rf"(?m)^(\s+{key_name}:)\s*\S+", r"\1 1s", text, count=1)
        if n != 1:
            fail(f"{src}: no global {key_name}")
    text, n = re.subn(r"(?m)^(\s+scrape_timeout:)\s*\S+", r"\1 1s", text)
    text, n = re.subn(r'targets: \["127\.0\.0\.1:8080"\]', f'targets: ["{target}"]', text)
    if n != 1:
        fail(f"{src}: the loopback target 127.0.0.1:8080 is not there to rewrite")
    text, n = re.subn(r"(?m)^(\s+- )alerts\.yml$", rf"\g<1>{rules}", text)
    if n != 1:
        fail(f"{src}: rule_files does not list alerts.yml")
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)


def api(url, path, **params):
    full = f"{url}{path}?{urllib.parse.urlencode(params)}" if params else f"{url}{path}"
    with urllib.request.urlopen(full, timeout=5) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise RuntimeError(f"{path}: {body}")
    return body["data"]


def query(url, promql):
    data = api(url, "/api/v1/query", query=promql)
    result = data["result"]
    if data["resultType"] == "scalar":
        print(result[1])
    elif len(result) == 1:
        value = float(result[0]["value"][1])
        print(int(value) if value.is_integer() else value)
    elif len(result) > 1:
        fail(f"{promql}: {len(result)} samples, expected one")


def rules(url):
    groups = api(url, "/api/v1/rules")["groups"]
    count = 0
    for group in groups:
        for rule in group["rules"]:
            count += 1
            if rule.get("health") == "err":
                fail(f"rule {rule['name']} fails on live data: {rule.get('lastError')}")
            if rule.get("health") != "ok":
                fail(f"rule {rule['name']} not evaluated yet (health {rule.get('health')})")
    if count == 0:
        fail("Prometheus loaded no rules")
    print(f"ok: {count} rules evaluate without error on live data")


# PromQL words that are not metric names when not followed by "(".
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
            "unless", "offset", "inf", "nan"}


def metric_names(expr):
    """Metric names in a PromQL expression: identifiers outside strings, label matchers, ranges
    and label lists, that are not function or aggregation calls."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        rest = text[match.end():].lstrip()
        if rest.startswith("("):
            continue  # a function or aggregation
        if word.lower() in KEYWORDS or re.fullmatch(r"\d+[smhdwy]", word):
            continue
        before = text[:match.start()]
        if before.endswith("$") or re.search(r"\d$", before):
            continue  # a Grafana variable or part of a number like 1e3
        names.add(word)
    return names


def scraped_names(path):
    names = set()
    for line in open(path, encoding="utf-8"):
        if line.startswith("#") or not line.strip():
            continue
        names.add(re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group(0))
    return names


def grafana_to_promql(expr):
    for variable, value in (("$__rate_interval", "1m"), ("$__interval", "15s"), ("$__range", "1h"),
                            ("$instance", ".*"), ("${instance}", ".*")):
        expr = expr.replace(variable, value)
    return expr


def walk_panels(panels):
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def dashboard(path, metrics_path, url):
    board = json.load(open(path, encoding="utf-8"))
    live = scraped_names(metrics_path)
    queries = []
    for panel in walk_panels(board.get("panels", [])):
        if panel.get("type") == "row":
            continue
        targets = panel.get("targets", [])
        if not targets:
            fail(f"panel '{panel.get('title')}' has no query")
        for t in targets:
            if not t.get("expr"):
                fail(f"panel '{panel.get('title')}' target {t.get('refId')} has no expr")
            queries.append((f"panel '{panel.get('title')}'", t["expr"]))
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            q = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", q)
            if not inner:
                fail(f"variable {variable['name']}: unsupported query {q}")
            queries.append((f"variable ${variable['name']}", inner.group(1)))
    used = set()
    for where, expr in queries:
        names = metric_names(expr)
        if not names:
            fail(f"{where}: no metric name found in {expr}")
        for name in names:
            if name not in live:
                fail(f"{where}: '{name}' is not in the live scrape (query: {expr})")
        used |= names
    for where, expr in queries:
        try:
            api(url, "/api/v1/query", query=grafana_to_promql(expr))
        except Exception as error:  # noqa: BLE001 - report any failure with the query
            fail(f"{where}: Prometheus rejects the query {expr}: {error}")
    print(f"ok: {len(queries)} dashboard queries parse and name only live metrics ({len(used)} metrics)")
    base = lambda name: re.sub(r"_(bucket|count|sum)$", "", name)  # noqa: E731
    unused = sorted({base(n) for n in live} - {base(n) for n in used})
    if unused:
        print(f"note: exported but on no panel: {', '.join(unused)}")


def runbook(alerts_path, runbook_path):
    headings = set()
    for line in open(runbook_path, encoding="utf-8"):
        m = re.match(r"#+\s+(.*?)\s*$", line)
        if m:
            # GitHub's anchor: lower case, punctuation dropped, spaces to dashes.
            headings.add(re.sub(r"[^a-z0-9 _-]", "", m.group(1).lower()).replace(" ", "-"))
    alerts = re.findall(r"(?m)^\s+- alert:\s*(\S+)", open(alerts_path, encoding="utf-8").read())
    urls = re.findall(r'(?m)^\s+runbook_url:\s*"([^"]+)"', open(alerts_path, encoding="utf-8").read())
    if not alerts or len(alerts) != len(urls):
        fail(f"{len(alerts)} alerts but {len(urls)} runbook_url annotations")
    for alert, url in zip(alerts, urls):
        path, _, anchor = url.partition("#")
        if not path.endswith("deploy/RUNBOOK.md"):
            fail(f"{alert}: runbook_url {url} does not point into deploy/RUNBOOK.md")
        if anchor != alert.lower():
            fail(f"{alert}: runbook_url anchor #{anchor} is not #{alert.lower()}")
        if anchor not in headings:
            fail(f"{alert}: RUNBOOK.md has no heading for #{anchor}")
    print(f"ok: {len(alerts)} alerts link to a RUNBOOK.md section")


def main():
    command, args = sys.argv[1], sys.argv[2:]
    handlers = {
        "ports": ports, "daemon-config": daemon_config,
        "prometheus-config": prometheus_config, "query": query, "rules": rules,
        "dashboard": dashboard, "runbook": runbook,
    }
    if command not in handlers:
        fail(f"unknown subcommand {command}")
    handlers[command](*args)


if __name__ == "__main__":
    main()
