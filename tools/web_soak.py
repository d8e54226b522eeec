"""Does `worldmodel web` hold up under visitors who come and go for a long time? Starts the server with
the given options, then V simulated visitors (threads) each open a session, step it 2-30 times with
random keys, reset one time in five, and close it (or, one time in seven, leave it for the idle sweeper),
again and again for S seconds; the server's resident memory is sampled every 20 s. Checks every reply:
a step's frame_index is the last one plus 1, a reset's is 0; a refused open (503, all slots in use) is
counted and retried, anything else is an error.

    python tools/web_soak.py --out DIR [--seconds 540] [--visitors 6] -- --backend compiled --max-sessions 4

Everything after `--` goes to `worldmodel web` (--port defaults to 7899 here). Writes DIR/soak.json and
DIR/README.md; exits 1 if any reply was wrong or the server died.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from worldmodel.device import cpu_name
from worldmodel.profiling.measure import rss_bytes

KEYS = ["ArrowUp", "ArrowDown", "ArrowLeft", "ArrowRight", " "]


def post(base: str, path: str, data: dict) -> tuple[int, dict]:
    req = urllib.request.Request(
        base + path, data=json.dumps(data).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def rss_mb(pid: int) -> float:
    return rss_bytes(pid) / 2**20


class Soak:
    def __init__(self, base: str, seconds: float):
        self.base, self.end = base, time.time() + seconds
        self.lock = threading.Lock()
        self.counts = {"sessions": 0, "busy": 0, "steps": 0, "resets": 0, "abandoned": 0}
        self.errors: list[str] = []

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] += n

    def error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text[:300])

    def visitor(self, i: int) -> None:
        rnd = random.Random(i)
        while time.time() < self.end:
            code, r = post(self.base, "/api/open", {"seed": rnd.randrange(1000)})
            if code == 503:
                self.add("busy")
                time.sleep(1)
                continue
            if code != 200 or r.get("frame_index") != 0:
                self.error(f"open: {code} {r.get('error', r.get('frame_index'))}")
                time.sleep(1)
                continue
            self.add("sessions")
            sid, last = r["session"], 0
            for _ in range(rnd.randint(2, 30)):
                keys = rnd.sample(KEYS, rnd.randint(0, 2))
                code, s = post(self.base, "/api/step", {"session": sid, "keys": keys})
                if code != 200 or s["frame_index"] != last + 1:
                    self.error(f"step: {code} {s.get('error') or (last, s['frame_index'])}")
                    break
                last = s["frame_index"]
                self.add("steps")
            if rnd.random() < 0.2:
                code, s = post(self.base, "/api/reset", {"session": sid, "seed": rnd.randrange(1000)})
                if code != 200 or s["frame_index"] != 0:
                    self.error(f"reset: {code} {s.get('error', s.get('frame_index'))}")
                self.add("resets")
            if rnd.random() < 1 / 7:
                self.add("abandoned")  # left to the sweeper
                time.sleep(rnd.random() * 3)
            else:
                post(self.base, "/api/close", {"session": sid})


def wait_until_up(base: str, server: subprocess.Popen, limit: float = 900) -> None:
    t0 = time.time()
    while time.time() - t0 < limit:
        if server.poll() is not None:
            raise SystemExit(f"web_soak: the server exited ({server.returncode}) before serving")
        try:
            with urllib.request.urlopen(base + "/", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:  # not serving yet: try again
            pass
        time.sleep(2)
    raise SystemExit(f"web_soak: the server did not serve {base}/ within {limit:g} s")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    web_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--seconds", type=float, default=540.0)
    p.add_argument("--visitors", type=int, default=6)
    args = p.parse_args(own)
    if "--port" not in web_args:
        web_args += ["--port", "7899"]
    port = web_args[web_args.index("--port") + 1]
    base = f"http://127.0.0.1:{port}"
    cmd = ["worldmodel", "web", *web_args]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "server.log", "w") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        t_start = time.time()
        wait_until_up(base, server)
        ready_s = time.time() - t_start
        print(f"web_soak: serving after {ready_s:.0f} s; {args.visitors} visitors for {args.seconds:g} s")
        soak = Soak(base, args.seconds)
        threads = [
            threading.Thread(target=soak.visitor, args=(i,), daemon=True) for i in range(args.visitors)
        ]
        t0 = time.time()
        samples = [(0.0, rss_mb(server.pid), 0, 0)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads) and server.poll() is None:
            time.sleep(20)
            with soak.lock:
                sessions, steps = soak.counts["sessions"], soak.counts["steps"]
            samples.append((time.time() - t0, rss_mb(server.pid), sessions, steps))
            print(f"  {samples[-1][0]:5.0f} s: {samples[-1][1]:.1f} MB, {sessions} sessions, {steps} steps")
        alive = server.poll() is None
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    first = samples[1][1] if len(samples) > 1 else samples[0][1]
    result = {
        "command": "python tools/web_soak.py " + shlex.join(argv),
        "server": shlex.join(cmd),
        "machine": f"{cpu_name()}, {os.cpu_count()} cores",
        "seconds": args.seconds,
        "visitors": args.visitors,
        "ready_s": round(ready_s, 1),
        "counts": soak.counts,
        "errors": soak.errors,
        "server_alive": alive,
        "rss_mb": [[round(t), round(m, 1), n, s] for t, m, n, s in samples],
        "rss_first_sample_mb": round(first, 1),
        "rss_last_mb": round(samples[-1][1], 1),
        "rss_max_mb": round(max(m for _, m, _, _ in samples), 1),
    }
    (out / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    c = soak.counts
    lines = [
        "# `worldmodel web` under visitors who come and go",
        "",
        f"Command: `{result['command']}`, which runs `{result['server']}`; {result['machine']}.",
        "",
        f"{args.visitors} simulated visitors for {args.seconds:g} s: {c['sessions']} sessions opened, "
        f"{c['steps']} steps, {c['resets']} resets, {c['abandoned']} left to the idle sweeper, {c['busy']} "
        f"opens refused as busy (and retried); **{len(soak.errors)} wrong replies**; server "
        f"{'still up' if alive else 'DIED'}. Resident memory: {first:.1f} MB at the first sample, "
        f"{result['rss_last_mb']} MB at the end, {result['rss_max_mb']} MB at most.",
        "",
        "| seconds | resident MB | sessions | steps |",
        "|---|---|---|---|",
        *(f"| {t:.0f} | {m:.1f} | {n} | {s} |" for t, m, n, s in samples[:: max(1, len(samples) // 12)]),
        "",
    ]
    (out / "README.md").write_text("\n".join(lines))
    print(f"web_soak: {c['sessions']} sessions, {c['steps']} steps, {len(soak.errors)} wrong replies; {out}")
    for e in soak.errors[:5]:
        print("  ", e)
    return 0 if alive and not soak.errors else 1


if __name__ == "__main__":
    sys.exit(main())
