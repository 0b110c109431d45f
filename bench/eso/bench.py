#!/usr/bin/env python3
"""The external-secrets (ESO) side of toma's benchmark, measured the way tools/bench measures toma.

    bench.py run N --eso BIN --fake URL --out-dir DIR [...]     one N; writes DIR/eso-N.json
    bench.py table --eso DIR/eso-N.json [--toma results-N.json]  prints one table, side by side

`run`, against the control plane of KUBECONFIG (the ESO CRDs installed), in a fresh namespace:
the TURN key's token Secret and a Webhook generator (manifests/key.yaml), then ESO started out of
cluster on that namespace, then

  1. N ExternalSecrets (manifests/externalsecret.yaml, renamed es-00000 ...) created at once,
     `--parallelism` requests in flight, until all are Ready with their Secrets; a settle period;
  2. a restart: SIGTERM, start again on the N synced ExternalSecrets, until reconciles stop;
  3. an idle spell.

Figures: time, ESO's memory (VmHWM/VmRSS) and CPU (/proc/<pid>/stat), mints (the fake
Cloudflare's /_fake/state), API requests (the apiserver's apiserver_request_total, before and
after each phase, the bench's own creates taken out). Only the Python standard library and
kubectl are used.
"""

import argparse
import base64
import http.client
import json
import os
import re
import signal
import socket
import ssl
import string
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
KEY_ID = "0123456789abcdef0123456789abcdef"
TOKEN = "bench-api-token-0123456789"
ES_API = "/apis/external-secrets.io/v1"
READ_VERBS = {"GET", "LIST", "WATCH", "WATCHLIST"}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"bench-eso: {msg}", file=sys.stderr, flush=True)


def limit_for(n):
    """How long a phase may take before the bench gives up (as tools/bench: 120 s + 0.2 s per N)."""
    return 120 + 0.2 * n


# ---------------------------------------------------------------------------------------------
# A small Kubernetes client: the admin token and CA from the kubeconfig, one HTTPS connection
# per thread.


class Kube:
    def __init__(self):
        raw = subprocess.run(
            ["kubectl", "config", "view", "--raw", "--minify", "-o", "json"],
            check=True, capture_output=True, text=True,
        ).stdout
        cfg = json.loads(raw)
        cluster = cfg["clusters"][0]["cluster"]
        user = cfg["users"][0]["user"]
        url = urllib.parse.urlparse(cluster["server"])
        self.host, self.port = url.hostname, url.port or 443
        self.ctx = ssl.create_default_context()
        if "certificate-authority-data" in cluster:
            self.ctx.load_verify_locations(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        elif "certificate-authority" in cluster:
            self.ctx.load_verify_locations(cafile=cluster["certificate-authority"])
        if "token" not in user:
            sys.exit("bench-eso: the kubeconfig's user has no token (hack/cluster.sh writes one)")
        self.headers = {"Authorization": f"Bearer {user['token']}", "Accept": "application/json"}
        self.local = threading.local()

    def connect(self, timeout=30):
        return http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)

    def request(self, method, path, body=None, content_type="application/json"):
        """Returns (status, bytes). Retries once on a dropped keep-alive connection."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in range(3):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = self.connect()
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise
                time.sleep(0.2)

    def json(self, method, path, body=None, ok=(200, 201)):
        status, data = self.request(method, path, body)
        if status not in ok:
            raise RuntimeError(f"{method} {path}: HTTP {status}: {data[:300]!r}")
        return json.loads(data) if data else None

    def list_all(self, path):
        items, cont = [], ""
        while True:
            sep = "&" if "?" in path else "?"
            page = self.json("GET", f"{path}{sep}limit=500" + (f"&continue={urllib.parse.quote(cont)}" if cont else ""))
            items.extend(page["items"])
            cont = page["metadata"].get("continue")
            if not cont:
                return items, page["metadata"]["resourceVersion"]


class Watch(threading.Thread):
    """Keeps `objects` (name -> object) of one collection up to date: a list, then a watch, and a
    new list whenever the watch says its resourceVersion is too old. `on_change` runs after each
    event."""

    def __init__(self, kube, path, on_change):
        super().__init__(daemon=True)
        self.kube, self.path, self.on_change = kube, path, on_change
        self.objects = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.listed = threading.Event()

    def run(self):
        rv = None
        while not self.stopped.is_set():
            try:
                if rv is None:
                    items, rv = self.kube.list_all(self.path)
                    with self.lock:
                        self.objects = {o["metadata"]["name"]: o for o in items}
                    self.listed.set()
                    self.on_change()
                rv = self.watch(rv)
            except Exception as error:  # noqa: BLE001 - a watch must outlive hiccups
                if self.stopped.is_set():
                    return
                log(f"watch {self.path}: {error}; listing again")
                rv = None
                time.sleep(0.5)

    def watch(self, rv):
        conn = self.kube.connect(timeout=90)
        try:
            conn.request("GET", f"{self.path}?watch=true&resourceVersion={rv}&timeoutSeconds=60",
                         headers=self.kube.headers)
            resp = conn.getresponse()
            if resp.status != 200:
                raise RuntimeError(f"watch HTTP {resp.status}")
            while not self.stopped.is_set():
                line = resp.readline()
                if not line:
                    return rv
                event = json.loads(line)
                obj = event["object"]
                if event["type"] == "ERROR":
                    return None  # 410 Gone: list again
                if event["type"] == "BOOKMARK":
                    rv = obj["metadata"]["resourceVersion"]
                    continue
                name = obj["metadata"]["name"]
                with self.lock:
                    if event["type"] == "DELETED":
                        self.objects.pop(name, None)
                    else:
                        self.objects[name] = obj
                rv = obj["metadata"]["resourceVersion"]
                self.on_change()
            return rv
        finally:
            conn.close()

    def snapshot(self):
        with self.lock:
            return dict(self.objects)


def es_ready(es):
    for c in es.get("status", {}).get("conditions", []) or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


class Progress:
    """Watches ExternalSecrets and Secrets of a namespace; `wait` returns the moment all of
    `names` were Ready with their Secret."""

    def __init__(self, kube, namespace, names):
        self.names = set(names)
        self.cond = threading.Condition()
        self.done_at = None
        self.es = Watch(kube, f"{ES_API}/namespaces/{namespace}/externalsecrets", self.check)
        self.secrets = Watch(kube, f"/api/v1/namespaces/{namespace}/secrets", self.check)
        self.es.start()
        self.secrets.start()
        self.es.listed.wait(30)
        self.secrets.listed.wait(30)

    def count(self):
        es, secrets = self.es.snapshot(), self.secrets.snapshot()
        return sum(1 for n in self.names if n in secrets and n in es and es_ready(es[n]))

    def check(self):
        if self.done_at is not None:
            return
        if self.count() == len(self.names):
            with self.cond:
                if self.done_at is None:
                    self.done_at = time.monotonic()
                self.cond.notify_all()

    def wait(self, limit):
        deadline = time.monotonic() + limit
        last_report = time.monotonic()
        with self.cond:
            while self.done_at is None:
                now = time.monotonic()
                if now > deadline:
                    raise TimeoutError(f"only {self.count()} of {len(self.names)} Ready after {limit:.0f} s")
                if now - last_report > 15:
                    log(f"  {self.count()} of {len(self.names)} Ready")
                    last_report = now
                self.cond.wait(1)
        return self.done_at

    def stop(self):
        self.es.stopped.set()
        self.secrets.stopped.set()


# ---------------------------------------------------------------------------------------------
# apiserver_request_total


LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def samples(text, name):
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        labels_end = line.rindex("}")
        labels = dict(LABEL.findall(line[len(name) + 1:labels_end]))
        yield labels, float(line[labels_end + 1:].split()[0])


def scrape_apiserver(kube):
    status, data = kube.request("GET", "/metrics")
    if status != 200:
        raise RuntimeError(f"apiserver /metrics: HTTP {status}")
    counts = {}
    for labels, value in samples(data.decode(), "apiserver_request_total"):
        key = (labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", ""), labels.get("code", ""))
        counts[key] = counts.get(key, 0.0) + value
    return counts


def api_since(after, before, own_creates=0):
    """Requests between two readings, by what they touched. Writes are any verb but
    GET/LIST/WATCH; `other_writes` (leases, namespaces, service accounts ...: the control
    plane's own housekeeping) are shown but not counted as ESO's."""
    c = dict(secret_writes=0, es_writes=0, status_writes=0, event_writes=0, generator_writes=0,
             failed_writes=0, other_writes=0, secret_gets=0, generator_gets=0, es_gets=0, lists=0)
    for key, value in after.items():
        delta = int(round(value - before.get(key, 0.0)))
        if delta <= 0:
            continue
        verb, resource, sub, code = key
        if verb in READ_VERBS:
            if verb == "GET" and resource == "secrets":
                c["secret_gets"] += delta
            elif verb == "GET" and resource == "webhooks":
                c["generator_gets"] += delta
            elif verb == "GET" and resource == "externalsecrets":
                c["es_gets"] += delta
            elif verb == "LIST" and resource in ("secrets", "externalsecrets", "webhooks", "generatorstates"):
                c["lists"] += delta
            continue
        if resource == "secrets" and not sub:
            field = "secret_writes"
        elif resource == "externalsecrets" and sub == "status":
            field = "status_writes"
        elif resource == "externalsecrets" and not sub:
            field = "es_writes"
        elif resource == "events":
            field = "event_writes"
        elif resource in ("generatorstates", "webhooks"):
            field = "generator_writes"
        else:
            c["other_writes"] += delta
            continue
        c[field] += delta
        if not code.startswith("2"):
            c["failed_writes"] += delta
    c["es_writes"] = max(0, c["es_writes"] - own_creates)
    return c


def writes(c):
    return c["secret_writes"] + c["es_writes"] + c["status_writes"] + c["event_writes"] + c["generator_writes"]


COUNTED = ("secret_writes", "es_writes", "status_writes", "event_writes", "generator_writes",
           "failed_writes", "secret_gets", "generator_gets", "es_gets")


def quiesce(kube, limit=60):
    """Waits until nothing writes to or reads what the bench counts for two readings one second
    apart (the namespace controller and the garbage collector finish a little late)."""
    started = time.monotonic()
    before = scrape_apiserver(kube)
    quiet = 0
    while quiet < 2:
        time.sleep(1)
        now = scrape_apiserver(kube)
        c = api_since(now, before)
        busy = any(c[k] for k in COUNTED)
        if time.monotonic() - started > limit:
            log(f"warning: the API server is still busy after {limit} s, going on: {c}")
            return
        quiet = 0 if busy else quiet + 1
        before = now


# ---------------------------------------------------------------------------------------------
# Processes


def cpu_seconds(pid):
    if not pid:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def memory_kib(pid):
    status = Path(f"/proc/{pid}/status").read_text()
    get = lambda k: int(re.search(rf"^{k}:\s+(\d+) kB", status, re.M).group(1))  # noqa: E731
    return get("VmHWM"), get("VmRSS")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Eso:
    """One external-secrets controller process, out of cluster, on one namespace."""

    def __init__(self, binary, namespace, concurrent, extra, log_path, pid_file):
        self.binary, self.namespace, self.concurrent, self.extra = binary, namespace, concurrent, extra
        self.log_path, self.pid_file = Path(log_path), Path(pid_file)
        self.proc = None

    def spawn(self):
        self.port = free_port()
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        args = [self.binary, "--metrics-addr", f"127.0.0.1:{self.port}", "--enable-leader-election=false",
                "--concurrent", str(self.concurrent), "--namespace", self.namespace,
                "--loglevel", "info", *self.extra]
        logf = open(self.log_path, "ab")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        logf.close()
        with open(self.pid_file, "a") as f:
            f.write(f"{self.proc.pid}\n")
        return self.started

    @property
    def pid(self):
        return self.proc.pid

    def wait_ready(self, limit=60):
        """Ready: the ExternalSecret controller's workers started (its caches are synced).
        v0.16 has no readiness endpoint, so this is read from its log."""
        deadline = time.monotonic() + limit
        pattern = re.compile(rb'"msg":"Starting workers".*"controller":"externalsecret"')
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"external-secrets exited with {self.proc.returncode}; see {self.log_path}")
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                if pattern.search(f.read()):
                    return time.monotonic()
            time.sleep(0.05)
        raise TimeoutError(f"external-secrets not ready after {limit} s; see {self.log_path}")

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            text = r.read().decode()
        m = dict(reconciles=0, errors=0, requeues=0, seconds=0.0, count=0, webhook_calls=0)
        for labels, value in samples(text, "controller_runtime_reconcile_total"):
            if labels.get("controller") == "externalsecret":
                m["reconciles"] += int(value)
                if labels.get("result") == "error":
                    m["errors"] += int(value)
                if labels.get("result") == "requeue":
                    m["requeues"] += int(value)
        for labels, value in samples(text, "controller_runtime_reconcile_time_seconds_sum"):
            if labels.get("controller") == "externalsecret":
                m["seconds"] += value
        for labels, value in samples(text, "controller_runtime_reconcile_time_seconds_count"):
            if labels.get("controller") == "externalsecret":
                m["count"] += int(value)
        for labels, value in samples(text, "externalsecret_provider_api_calls_count"):
            if labels.get("provider") == "Webhook":
                m["webhook_calls"] += int(value)
        return m

    def terminate(self, limit=30):
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(limit)
        except subprocess.TimeoutExpired:
            log("external-secrets did not stop on SIGTERM, killing it")
            self.proc.kill()
            self.proc.wait()
        return time.monotonic() - started

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------------------------------------
# The fake Cloudflare


def fake_state(fake):
    with urllib.request.urlopen(f"{fake}/_fake/state", timeout=10) as r:
        return json.load(r)


def fake_reset(fake):
    req = urllib.request.Request(f"{fake}/_fake/reset", method="POST")
    urllib.request.urlopen(req, timeout=10).close()


def fake_add_key(fake):
    body = json.dumps({"keyId": KEY_ID, "token": TOKEN}).encode()
    req = urllib.request.Request(f"{fake}/_fake/keys", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).close()


def mints(fake):
    return len(fake_state(fake)["mints"])


# ---------------------------------------------------------------------------------------------
# Objects


def kubectl_json(manifest_text):
    """YAML -> JSON objects, by kubectl (no YAML parser in the standard library)."""
    out = subprocess.run(["kubectl", "create", "--dry-run=client", "-o", "json", "-f", "-"],
                         input=manifest_text, check=True, capture_output=True, text=True).stdout
    docs, decoder, i = [], json.JSONDecoder(), 0
    while True:
        while i < len(out) and out[i].isspace():
            i += 1
        if i == len(out):
            break
        doc, i = decoder.raw_decode(out, i)
        docs.extend(doc["items"] if doc.get("kind") == "List" else [doc])
    return docs


def setup_namespace(kube, namespace, fake):
    kube.json("POST", "/api/v1/namespaces",
              {"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": namespace, "labels": {"toma.dev/bench": "eso"}}})
    text = string.Template((HERE / "manifests" / "key.yaml").read_text()).safe_substitute(
        FAKE_URL=fake, KEY_ID=KEY_ID, TOKEN=TOKEN)
    for obj in kubectl_json(text):
        obj["metadata"]["namespace"] = namespace
        if obj["kind"] == "Secret":
            path = f"/api/v1/namespaces/{namespace}/secrets"
        else:
            group_version = obj["apiVersion"]
            path = f"/apis/{group_version}/namespaces/{namespace}/{obj['kind'].lower()}s"
        kube.json("POST", path, obj)


def es_template():
    (es,) = kubectl_json((HERE / "manifests" / "externalsecret.yaml").read_text())
    return es


def es_named(template, namespace, i):
    es = json.loads(json.dumps(template))
    name = f"es-{i:05d}"
    es["metadata"] = {"name": name, "namespace": namespace}
    es["spec"]["target"]["name"] = name
    return es


def create_all(kube, namespace, n, parallelism, template):
    path = f"{ES_API}/namespaces/{namespace}/externalsecrets"

    def create(i):
        kube.json("POST", path, es_named(template, namespace, i), ok=(201,))

    with ThreadPoolExecutor(parallelism) as pool:
        list(pool.map(create, range(n)))
    return time.monotonic()


def delete_namespace(kube, namespace, limit):
    kube.request("DELETE", f"/api/v1/namespaces/{namespace}")
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        status, _ = kube.request("GET", f"/api/v1/namespaces/{namespace}")
        if status == 404:
            return
        time.sleep(0.5)
    log(f"warning: namespace {namespace} still there after {limit:.0f} s")


def outcome(kube, namespace, fake, names):
    es, _ = kube.list_all(f"{ES_API}/namespaces/{namespace}/externalsecrets")
    secrets, _ = kube.list_all(f"/api/v1/namespaces/{namespace}/secrets")
    by_name = {s["metadata"]["name"]: s for s in secrets}
    usable, usernames = 0, set()
    for name in names:
        s = by_name.get(name)
        if not s:
            continue
        try:
            ice = json.loads(base64.b64decode(s["data"]["iceServers.json"]))["iceServers"]
            creds = [e for e in ice if e.get("username") and e.get("credential")]
            if creds:
                usable += 1
                usernames.add(creds[0]["username"])
        except (KeyError, ValueError, TypeError):
            pass
    minted = {m["username"] for m in fake_state(fake)["mints"]}
    return dict(
        externalsecrets=len(es), ready=sum(1 for e in es if es_ready(e)),
        secrets=sum(1 for n in names if n in by_name), usable_secrets=usable,
        # Minted, but in no Secret: a credential nobody will use, and nobody revokes (the Webhook
        # generator's Cleanup is a no-op), live at Cloudflare until its ttl ends.
        orphaned_mints=len(minted - usernames),
    )


def mib(kib):
    return kib / 1024.0


# ---------------------------------------------------------------------------------------------
# The run


def run(args):
    kube = Kube()
    n = args.n
    names = [f"es-{i:05d}" for i in range(n)]
    out_dir = Path(args.out_dir)
    (out_dir / "logs").mkdir(parents=True, exist_ok=True)
    namespace = f"bench-eso-{n}-c{args.concurrent}-{os.urandom(2).hex()}"
    eso = Eso(args.eso, namespace, args.concurrent, args.eso_arg or [],
              out_dir / "logs" / f"{namespace}.log", args.pid_file)
    results = dict(n=n, namespace=namespace, concurrency=args.concurrent, parallelism=args.parallelism,
                   settle_seconds=args.settle, eso_args=args.eso_arg or [],
                   load_average=" ".join(Path("/proc/loadavg").read_text().split()[:3]),
                   started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    try:
        fake_add_key(args.fake)
        setup_namespace(kube, namespace, args.fake)
        eso.spawn()
        eso.wait_ready()
        quiesce(kube)
        fake_reset(args.fake)
        progress = Progress(kube, namespace, names)
        template = es_template()

        # Phase 1.
        log(f"N={n}: creating {n} ExternalSecrets in {namespace}")
        api_before = scrape_apiserver(kube)
        cpu_before = cpu_seconds(eso.pid)
        apiserver_before, etcd_before = cpu_seconds(args.apiserver_pid), cpu_seconds(args.etcd_pid)
        started = time.monotonic()
        created = create_all(kube, namespace, n, args.parallelism, template)
        done = progress.wait(limit_for(n))
        cpu_ready = cpu_seconds(eso.pid) - cpu_before
        apiserver_cpu = None if apiserver_before is None else cpu_seconds(args.apiserver_pid) - apiserver_before
        etcd_cpu = None if etcd_before is None else cpu_seconds(args.etcd_pid) - etcd_before
        at_ready = eso.metrics()
        progress.stop()
        log(f"N={n}: all Ready after {done - started:.2f} s; settling {args.settle} s")
        time.sleep(args.settle)
        peak_kib, rss_kib = memory_kib(eso.pid)
        cpu_settle = cpu_seconds(eso.pid) - cpu_before
        api = api_since(scrape_apiserver(kube), api_before, own_creates=n)
        m = eso.metrics()
        minted = mints(args.fake)
        results.update(
            seconds_to_ready=done - started, seconds_creating=created - started,
            mints=minted, mints_per_credential=minted / n,
            api=api, api_writes_per_credential=writes(api) / n,
            api_gets_per_credential=(api["secret_gets"] + api["generator_gets"]) / n,
            mean_reconcile_ms=1000 * m["seconds"] / m["count"] if m["count"] else 0.0,
            peak_rss_mib=mib(peak_kib), steady_rss_mib=mib(rss_kib),
            cpu_seconds=cpu_ready, cpu_seconds_with_settle=cpu_settle,
            apiserver_cpu_seconds=apiserver_cpu, etcd_cpu_seconds=etcd_cpu,
            reconciles_at_ready=at_ready["reconciles"], reconciles=m["reconciles"],
            reconcile_errors=m["errors"], reconcile_requeues=m["requeues"],
            webhook_calls=m["webhook_calls"],
            outcome=outcome(kube, namespace, args.fake, names),
        )

        # Phase 2: restart on N synced ExternalSecrets.
        log(f"N={n}: restarting external-secrets")
        mints_before = mints(args.fake)
        api_before = scrape_apiserver(kube)
        seconds_to_stop = eso.terminate()
        spawned = eso.spawn()
        ready = eso.wait_ready()
        last = eso.metrics()
        last_change = time.monotonic()
        all_reconciled = last_change if last["reconciles"] >= n else None
        deadline = time.monotonic() + limit_for(n)
        while True:
            time.sleep(0.1)
            now = eso.metrics()
            if now["reconciles"] != last["reconciles"]:
                last_change = time.monotonic()
            if all_reconciled is None and now["reconciles"] >= n:
                all_reconciled = time.monotonic()
            last = now
            flat = time.monotonic() - last_change
            if (all_reconciled is not None and flat >= 3) or flat >= 15 or time.monotonic() > deadline:
                break
        peak_kib, _ = memory_kib(eso.pid)
        restart_api = api_since(scrape_apiserver(kube), api_before)
        results["restart"] = dict(
            seconds_to_stop=seconds_to_stop, seconds_to_ready=ready - spawned,
            seconds_to_all_reconciled=None if all_reconciled is None else all_reconciled - spawned,
            seconds_to_steady=max(last_change, ready) - spawned,
            reconciles=last["reconciles"], reconcile_errors=last["errors"],
            mints=mints(args.fake) - mints_before, api=restart_api, api_writes=writes(restart_api),
            peak_rss_mib=mib(peak_kib), cpu_seconds=cpu_seconds(eso.pid),
        )

        # Phase 3: idle.
        log(f"N={n}: idle {args.idle} s")
        mints_before = mints(args.fake)
        api_before = scrape_apiserver(kube)
        m_before = eso.metrics()
        cpu_before = cpu_seconds(eso.pid)
        t0 = time.monotonic()
        time.sleep(args.idle)
        idle_api = api_since(scrape_apiserver(kube), api_before)
        results["idle"] = dict(
            seconds=time.monotonic() - t0, cpu_seconds=cpu_seconds(eso.pid) - cpu_before,
            reconciles=eso.metrics()["reconciles"] - m_before["reconciles"],
            mints=mints(args.fake) - mints_before, api=idle_api, api_writes=writes(idle_api),
            rss_mib=mib(memory_kib(eso.pid)[1]),
        )
        eso.terminate()
    finally:
        eso.kill()
        delete_namespace(kube, namespace, limit_for(n))
    path = Path(args.result) if args.result else out_dir / f"eso-{n}.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    log(f"N={n}: results in {path}")
    return results


# ---------------------------------------------------------------------------------------------
# The table


def f2(x):
    return "-" if x is None else f"{x:.2f}"


# The rows of the table, in order; a column without a row prints "-".
ROWS = [
    "time to all Ready (s)",
    "  creates alone took (s)",
    "mints / credential",
    "API writes / credential",
    "  Secret",
    "  status (TC / ES)",
    "  TC / ES beyond the creates",
    "  Event",
    "  generator objects",
    "  refused (not 2xx)",
    "API GETs / credential (Secret + key)",
    "API LISTs / credential",
    "reconciles at Ready / after settle",
    "reconcile errors",
    "mean reconcile (ms)",
    "Ready / Secrets",
    "minted, in no Secret, not revoked",
    "peak RSS (MiB)",
    "steady RSS (MiB)",
    "CPU until Ready (s)",
    "  with settle (s)",
    "apiserver CPU until Ready (s)",
    "etcd CPU until Ready (s)",
    "restart: SIGTERM to exit (s)",
    "restart: to ready (s)",
    "restart: to N reconciles (s)",
    "restart: to steady (s)",
    "restart: reconciles",
    "restart: mints",
    "restart: API writes",
    "restart: peak RSS (MiB)",
    "restart: CPU (s)",
    "idle: CPU (s)",
    "idle: reconciles",
    "idle: mints",
    "idle: API writes",
    "idle: RSS (MiB)",
]


def operator_rows(r, n):
    """The rows toma-bench's and this bench's results spell the same way."""
    api = r["api"]
    per = lambda k: f"{api[k] / n:.2f}"  # noqa: E731
    rs, idle = r["restart"], r["idle"]
    return {
        "time to all Ready (s)": f2(r["seconds_to_ready"]),
        "  creates alone took (s)": f2(r["seconds_creating"]),
        "mints / credential": f"{r['mints_per_credential']:.3f}",
        "API writes / credential": f2(r["api_writes_per_credential"]),
        "  Secret": per("secret_writes"),
        "  status (TC / ES)": per("status_writes"),
        "  Event": per("event_writes"),
        "  refused (not 2xx)": per("failed_writes"),
        "API LISTs / credential": per("lists"),
        "reconciles at Ready / after settle": f"{r['reconciles_at_ready']} / {r['reconciles']}",
        "reconcile errors": str(r["reconcile_errors"]),
        "mean reconcile (ms)": f"{r['mean_reconcile_ms']:.1f}",
        "Ready / Secrets": f"{r['outcome']['ready']} / {r['outcome']['secrets']}",
        "peak RSS (MiB)": f"{r['peak_rss_mib']:.1f}",
        "steady RSS (MiB)": f"{r['steady_rss_mib']:.1f}",
        "CPU until Ready (s)": f2(r["cpu_seconds"]),
        "  with settle (s)": f2(r["cpu_seconds_with_settle"]),
        "apiserver CPU until Ready (s)": f2(r["apiserver_cpu_seconds"]),
        "etcd CPU until Ready (s)": f2(r["etcd_cpu_seconds"]),
        "restart: SIGTERM to exit (s)": f2(rs["seconds_to_stop"]),
        "restart: to ready (s)": f2(rs["seconds_to_ready"]),
        "restart: to N reconciles (s)": f2(rs["seconds_to_all_reconciled"]),
        "restart: to steady (s)": f2(rs["seconds_to_steady"]),
        "restart: reconciles": str(rs["reconciles"]),
        "restart: mints": str(rs["mints"]),
        "restart: peak RSS (MiB)": f"{rs['peak_rss_mib']:.1f}",
        "restart: CPU (s)": f2(rs["cpu_seconds"]),
        "idle: CPU (s)": f"{idle['cpu_seconds']:.3f}",
        "idle: reconciles": str(idle["reconciles"]),
        "idle: mints": str(idle["mints"]),
        "idle: RSS (MiB)": f"{idle['rss_mib']:.1f}",
    }


def toma_column(t, n):
    """The same rows from toma-bench's results-N.json (its first --concurrency run)."""
    r = t["operator"][0]
    api = r["api"]
    writes = lambda a: sum(a[k] for k in ("secret_writes", "turncredential_writes", "status_writes", "event_writes"))  # noqa: E731
    return {
        **operator_rows(r, n),
        "header": f"toma c={r['concurrency']}",
        "  TC / ES beyond the creates": f"{api['turncredential_writes'] / n:.2f}",
        "API GETs / credential (Secret + key)": f"{(api['secret_gets'] + api['key_gets']) / n:.2f}",
        "restart: API writes": str(writes(r["restart"]["api"])),
        "idle: API writes": str(writes(r["idle"]["api"])),
    }


def eso_column(r):
    n = r["n"]
    api = r["api"]
    return {
        **operator_rows(r, n),
        "header": f"ESO c={r['concurrency']}" + "".join(
            " qps=" + a.split("=", 1)[1] for a in r["eso_args"] if a.startswith("--client-qps=")),
        "  TC / ES beyond the creates": f"{api['es_writes'] / n:.2f}",
        "  generator objects": f"{api['generator_writes'] / n:.2f}",
        "API GETs / credential (Secret + key)": f2(r["api_gets_per_credential"]),
        "minted, in no Secret, not revoked": str(r["outcome"]["orphaned_mints"]),
        "restart: API writes": str(r["restart"]["api_writes"]),
        "idle: API writes": str(r["idle"]["api_writes"]),
    }


def floor_column(t, n):
    """toma-bench's floor: a bare client doing the same work with no operator."""
    f = t["floor"]
    api = f["api"]
    per = lambda k: f"{api.get(k, 0) / n:.2f}"  # noqa: E731
    return {
        "header": "floor",
        "time to all Ready (s)": f2(f["seconds_to_ready"]),
        "mints / credential": f"{f['mints_per_credential']:.3f}",
        "API writes / credential": f2(f["api_writes_per_credential"]),
        "  Secret": per("secret_writes"),
        "  status (TC / ES)": per("status_writes"),
        "  TC / ES beyond the creates": per("turncredential_writes"),
        "  Event": per("event_writes"),
        "  refused (not 2xx)": per("failed_writes"),
        "apiserver CPU until Ready (s)": f2(f.get("apiserver_cpu_seconds")),
        "etcd CPU until Ready (s)": f2(f.get("etcd_cpu_seconds")),
    }


def table(args):
    runs = [json.loads(Path(p).read_text()) for p in args.eso]
    n = runs[0]["n"]
    if any(r["n"] != n for r in runs):
        sys.exit("bench-eso: the --eso files are for different N")
    columns = []
    if args.toma:
        toma = json.loads(Path(args.toma).read_text())
        if toma["n"] != n:
            sys.exit(f"bench-eso: {args.toma} is for N={toma['n']}, not {n}")
        columns.append(toma_column(toma, n))
    eso_columns = [eso_column(r) for r in runs]
    columns.extend(eso_columns)
    if args.toma and args.floor:
        columns.append(floor_column(toma, n))
    labels = ROWS
    idle_s = runs[0]["idle"]["seconds"]
    label_width = max(len(k) for k in labels)
    width = max(9, *(len(v) for c in columns for v in c.values()))
    load = runs[0]["load_average"]
    lines = [f"N = {n}   ({os.cpu_count()} cores; load average when ESO's run started {load})"]
    if args.note:
        lines.append(f"note: {args.note}")
    versions = list(args.versions or [])
    if args.toma:
        versions.insert(0, toma["versions"].get("toma", "toma"))
    if versions:
        lines.append("versions: " + ", ".join(versions))
    for r in runs:
        lines.append(f"ESO c={r['concurrency']}: external-secrets --concurrent {r['concurrency']} "
                     + (" ".join(r["eso_args"]) or "(client QPS 50, burst 100: ESO's defaults)"))
    lines.append(" " * label_width + "".join(f"  {c['header']:>{width}}" for c in columns))
    for k in labels:
        label = k.replace("idle:", f"idle {idle_s:.0f} s:", 1) if k == "idle: CPU (s)" else k
        lines.append(f"{label:<{label_width}}" + "".join(f"  {c.get(k, '-'):>{width}}" for c in columns))
    print("\n".join(lines))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="measure ESO on one N")
    r.add_argument("n", type=int)
    r.add_argument("--eso", required=True, help="the external-secrets binary")
    r.add_argument("--fake", required=True, help="the fake Cloudflare's base URL")
    r.add_argument("--out-dir", required=True)
    r.add_argument("--pid-file", required=True, help="every spawned PID is appended here")
    r.add_argument("--concurrent", type=int, default=16, help="ESO --concurrent (toma's default concurrency is 16)")
    r.add_argument("--parallelism", type=int, default=32, help="creates in flight (as toma-bench)")
    r.add_argument("--settle", type=int, default=10)
    r.add_argument("--idle", type=int, default=30)
    r.add_argument("--apiserver-pid", type=int)
    r.add_argument("--etcd-pid", type=int)
    r.add_argument("--eso-arg", action="append", help="one more ESO flag, e.g. --eso-arg=--client-qps=200")
    r.add_argument("--result", help="where the JSON goes (default OUT_DIR/eso-N.json)")
    t = sub.add_parser("table", help="print ESO's figures, next to toma's when given")
    t.add_argument("--eso", required=True, action="append", help="an eso-N*.json (repeat for several ESO runs)")
    t.add_argument("--toma", help="toma-bench's results-N.json for the same N")
    t.add_argument("--floor", action="store_true", help="add toma-bench's floor column")
    t.add_argument("--note")
    t.add_argument("--versions", action="append")
    args = p.parse_args()
    if args.cmd == "run":
        run(args)
    else:
        table(args)


if __name__ == "__main__":
    main()
