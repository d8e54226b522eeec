"""`worldmodel web`: the session manager and JSON API in-process, then the page in headless Chromium."""

import base64
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from app.cli import build_parser, main
from app.web.server import build_app, launch
from app.web.sessions import MAX_BODY, SessionManager, WebError
from worldmodel import WorldSession

SMALL = dict(dim=96, depth=2, heads=2, window=4)  # ~15 ms a frame on 2 CPU cores
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Two spinning OpenMP threads collapse on a busy 2-core machine (0.3 s -> 10 s for one test here):
    OMP_WAIT_POLICY only counts if set before PyTorch loads, which conftest.py cannot promise."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_model(seed=0):
    return functools.partial(WorldSession.from_preset, "tiny", seed=seed, device="cpu", config_changes=SMALL)


MODELS = {"small (random weights)": small_model(0), "other (random weights)": small_model(1)}


def png(reply) -> np.ndarray:
    buf = np.frombuffer(base64.b64decode(reply["frame"]), np.uint8)
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def refused(fn, *args, status=400, **kwargs) -> str:
    with pytest.raises(WebError) as e:
        fn(*args, **kwargs)
    assert e.value.status == status, (e.value.status, str(e.value))
    return str(e.value)


# -- the session manager, in-process -----------------------------------------------------------


def test_keys_drive_frames():
    m = SessionManager(MODELS)
    o = m.open(seed=0)
    sid = o["session"]
    assert o["frame_index"] == 0 and png(o).shape == (64, 64, 3)
    assert o["actions"] == ["up", "down", "left", "right", "action"] and o["keys"]["w"] == "up"
    frames = {}
    for name, keys in [("none", []), ("left", ["ArrowLeft"]), ("right", ["d"]), ("action", [" "])]:
        m.reset(sid, seed=0)
        r = m.step(sid, keys)
        assert r["frame_index"] == 1 and r["pressed"] == ([] if name == "none" else [name])
        frames[name] = png(r)
    for a in frames:
        for b in frames:
            if a < b:
                assert not np.array_equal(frames[a], frames[b]), f"keys {a} and {b} gave the same frame"
    m.reset(sid, seed=0)
    assert np.array_equal(png(m.step(sid, ["a"])), frames["left"]), "same seed and keys, other frame"
    r = m.step(sid, ["ArrowUp", "ArrowLeft"])
    assert r["frame_index"] == 2 and r["pressed"] == ["up", "left"]


def test_a_foreign_game_gets_its_own_keys():
    """A model with its own action names: the page is told its keys (by name, --keys over them), and a
    step with them presses its actions; nothing held is its no-op."""
    foreign = {"keys": ["none", "turn_left", "forward", "attack"], "axes": [], "exclusive": True}
    make = functools.partial(
        WorldSession.from_preset, "tiny", seed=0, device="cpu", config_changes={**SMALL, "actions": foreign}
    )
    m = SessionManager({"foreign": make}, keys="attack=j")
    o = m.open(seed=0)
    assert o["actions"] == foreign["keys"]
    assert o["keys"]["j"] == "attack" and o["keys"]["w"] == "forward" and o["keys"]["q"] == "turn_left"
    assert m.step(o["session"], ["j"])["pressed"] == ["attack"]
    assert m.step(o["session"], [])["pressed"] == ["none"]
    refused(m.step, o["session"], ["space"])  # its only key went to j: unknown here


def test_sessions_are_independent():
    m = SessionManager(MODELS)
    a, b = m.open(seed=0)["session"], m.open(seed=0)["session"]
    assert a != b and len(m) == 2
    for _ in range(3):
        ra = m.step(a, ["ArrowLeft"])
    rb = m.step(b, ["ArrowLeft"])
    assert ra["frame_index"] == 3 and rb["frame_index"] == 1, "stepping one session advanced the other"
    m.reset(a, seed=0)
    assert np.array_equal(png(m.step(a, ["ArrowLeft"])), png(rb)), "same seed and keys, other frame"
    # another model for one visitor only
    other = m.reset(b, seed=0, model="other (random weights)")
    assert other["model"] == "other (random weights)" and other["frame_index"] == 0
    assert not np.array_equal(png(other), png(m.reset(a, seed=0)))
    assert m.step(a, [])["frame_index"] == 1


def play_at_once(m, sids: dict, keys: dict, steps: int) -> dict:
    """Each visitor i steps `steps` times holding keys[i], all from their own threads started together:
    {i: the frames each step answered}."""
    got = {i: [] for i in keys}
    start = threading.Barrier(len(keys))

    def play(i):
        start.wait()
        for _ in range(steps):
            got[i].append(png(m.step(sids[i], keys[i])))

    threads = [threading.Thread(target=play, args=(i,)) for i in keys]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return got


def test_visitors_playing_at_once_share_batched_steps():
    """Three visitors stepping at the same time from their own threads: their requests are answered
    by shared batched steps, and each one's frames are those of a lone WorldSession with its seed and
    keys (one grey level: batched matmuls round differently); one leaving frees its row."""
    m = SessionManager(MODELS, max_sessions=3)
    keys = {0: ["ArrowLeft"], 1: ["ArrowUp", "d"], 2: [" "]}
    sids = {i: m.open(seed=10 + i)["session"] for i in keys}
    got = play_at_once(m, sids, keys, 8)
    pool = m.models["small (random weights)"].__self__
    assert pool.rows_stepped == 24 and pool.steps < 24, (pool.steps, pool.rows_stepped)
    for i, k in keys.items():
        lone = MODELS["small (random weights)"]()
        lone.reset(seed=10 + i)
        action = lone.action_space.encode(
            k and [{"ArrowLeft": "left", "ArrowUp": "up", "d": "right", " ": "action"}[x] for x in k]
        )
        ref = [lone.step(action) for _ in range(8)]
        assert np.abs(np.int16(got[i]) - np.int16(ref)).max() <= 1, f"visitor {i}'s frames are not their own"
    assert len(pool.batch.active) == 3
    m.close(sids[0])
    m.step(sids[1], [])  # the row is freed between two steps
    assert len(pool.batch.active) == 2
    assert m.open(seed=0)["frame_index"] == 0 and len(pool.batch.active) == 3


@pytest.mark.parametrize("backend", ["onnx", "compiled"])
def test_other_backends_batch_their_visitors_too(backend, tmp_path, monkeypatch, capsys):
    """A model served on onnx or compiled: its visitors are rows of one batch on that backend (the
    page is told so), each with a lone session's frames; a compiled batch steps each of its batch
    sizes before the first visitor comes."""
    if backend == "onnx":
        pytest.importorskip("onnxruntime")
    from app.web.server import _warm
    from worldmodel.runtime.backends import BackendOptions

    monkeypatch.setenv("WORLDMODEL_CACHE", str(tmp_path))
    options = BackendOptions(inductor=False)  # compiled: the static passes without a compile (fast)
    make = functools.partial(small_model(0), backend=backend, options=options)
    m = SessionManager({"m": make}, max_sessions=2)
    try:
        _warm(m, {"m": make()})
        said = capsys.readouterr().out
        assert ("m: compiled in" in said) == (backend == "compiled")
        if backend == "compiled":
            assert m.pools["m"].batch is not None
            assert "|batched" in (tmp_path / "first-frame.json").read_text()
        a, b = (m.open(seed=s) for s in (3, 4))
        assert a["backend"] == f"{backend}, batched"
        frames = [png(m.step(a["session"], ["ArrowLeft"])), png(m.step(b["session"], []))]
        pool = m.pools["m"]
        assert pool.batch.backend == backend and len(pool.batch.active) == 2
        for seed, keys, got in ((3, ["left"], frames[0]), (4, [], frames[1])):
            lone = small_model(0)()
            lone.reset(seed=seed)
            ref = lone.step(lone.action_space.encode(keys))
            assert np.abs(np.int16(got) - np.int16(ref)).max() <= 1
    finally:
        m.shutdown()


@pytest.mark.parametrize("backend", ["onnx", "compiled"])
def test_a_visitor_at_rest_beside_one_holding_a_key_on_a_batched_backend(backend, tmp_path, monkeypatch):
    """A model with levels of its own at rest (the shipped world's: context_noise_idle, and a higher one after
    a long rest), two visitors stepping at once from their threads, one holding a key and one at rest: one
    batched cache pass writes their rows at different levels (onnx and compiled took one level for all rows,
    and every step failed as soon as one visitor rested beside another), and each gets a lone session's
    frames."""
    if backend == "onnx":
        pytest.importorskip("onnxruntime")
    from worldmodel.runtime.backends import BackendOptions

    monkeypatch.setenv("WORLDMODEL_CACHE", str(tmp_path))
    levels = {**SMALL, "context_noise_idle": 0.3, "context_noise_rest": 0.5, "rest_after": 2}
    model = functools.partial(WorldSession.from_preset, "tiny", seed=0, device="cpu", config_changes=levels)
    make = functools.partial(model, backend=backend, options=BackendOptions(inductor=False))
    m = SessionManager({"m": make}, max_sessions=2)
    try:
        keys = {0: ["ArrowLeft"], 1: []}
        sids = {i: m.open(seed=20 + i)["session"] for i in keys}
        got = play_at_once(m, sids, keys, 6)
        pool = m.pools["m"]
        assert pool.batch.backend == backend and pool.rows_stepped == 12 and pool.steps < 12
        for i, k in keys.items():
            lone = model()
            lone.reset(seed=20 + i)
            ref = [lone.step({"left"} if k else set()) for _ in range(6)]
            assert len(got[i]) == 6 and np.abs(np.int16(got[i]) - np.int16(ref)).max() <= 1, i
    finally:
        m.shutdown()


def test_cap_gives_busy_then_frees_on_close():
    m = SessionManager(MODELS, max_sessions=2)
    a, _ = m.open()["session"], m.open()["session"]
    msg = refused(m.open, status=503)
    assert "Busy" in msg and "in use" in msg
    assert m.close(a) == {"closed": True} and m.close(a) == {"closed": False}
    assert m.open()["frame_index"] == 0 and len(m) == 2


def test_idle_sessions_are_freed():
    clock = Clock()
    m = SessionManager(MODELS, max_sessions=2, idle_timeout=10, clock=clock)
    a, b = m.open()["session"], m.open()["session"]
    clock.t += 6
    m.step(a, [])
    clock.t += 6
    assert m.sweep() == [b] and len(m) == 1
    assert "expired" in refused(m.step, b, [], status=404)
    m.open()  # its slot is free again
    refused(m.open, status=503)
    clock.t += 11
    assert m.open()["frame_index"] == 0 and len(m) == 1  # open sweeps first

    # the sweeper thread, on the real clock
    m = SessionManager(MODELS, idle_timeout=0.2)
    m.open()
    m.start_sweeper(interval=0.05)
    try:
        deadline = time.monotonic() + 5
        while len(m) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(m) == 0, "the sweeper did not free an idle session"
    finally:
        m.shutdown()


def test_bad_requests_are_refused_and_play_goes_on():
    m = SessionManager(MODELS)
    sid = m.open(seed=0)["session"]
    msg = refused(m.step, sid, ["x", "ArrowLeft"])
    assert "'x'" in msg and "left" in msg, msg
    refused(m.step, sid, "ArrowLeft")  # a string, not a list
    refused(m.step, sid, [1])
    refused(m.step, sid, ["a"] * 17)
    refused(m.step, sid, ["k" * 100])
    refused(m.step, 123, [])
    assert "expired" in refused(m.step, "no-such-session", [], status=404)
    refused(m.reset, sid, seed=-1)
    refused(m.reset, sid, seed="7")
    refused(m.reset, sid, seed=True)
    assert "available" in refused(m.reset, sid, model="nope")
    refused(m.open, model="nope")
    assert len(m) == 1
    assert m.step(sid, ["ArrowUp"])["frame_index"] == 1


def test_a_model_that_fails_to_load_frees_its_slot():
    def broken():
        raise OSError("disk on fire")

    m = SessionManager({"broken": broken, **MODELS}, max_sessions=1)
    assert "disk on fire" in refused(m.open, status=500)
    assert len(m) == 0
    sid = m.open(model="small (random weights)")["session"]
    assert "disk on fire" in refused(m.reset, sid, model="broken", status=500)
    assert m.step(sid, [])["frame_index"] == 1  # the old session plays on


# -- the HTTP API, in-process ------------------------------------------------------------------


def test_http_api():
    m = SessionManager(MODELS, max_sessions=1)
    client = TestClient(build_app(m, fps=12))
    page = client.get("/").text
    assert "image-rendering: pixelated" in page and '"fps": 12' in page and "small (random weights)" in page
    r = client.post("/api/open", json={"seed": 3})
    assert r.status_code == 200, r.text
    sid = r.json()["session"]
    bad = [
        (dict(content=b"{not json"), 400, "not valid JSON"),
        (dict(content=b"[1, 2]"), 400, "JSON object"),
        (dict(content=b"\xff\xfe"), 400, "not valid JSON"),
        (dict(json={"session": sid, "keys": ["F13"]}), 400, "unknown key"),
        (dict(json={"session": sid, "keys": "w"}), 400, "list of key names"),
        (dict(json={"session": sid, "keys": [], "extra": 1}), 400, "unexpected field"),
        (dict(json={"keys": []}), 400, "missing field"),
        (dict(json={"session": "gone", "keys": []}), 404, "expired"),
        (dict(content=b"{" + b" " * MAX_BODY + b"}"), 413, "too large"),
    ]
    for kwargs, status, text in bad:
        r = client.post("/api/step", **kwargs)
        assert r.status_code == status and text in r.json()["error"], (kwargs, r.status_code, r.text)
    r = client.post("/api/open", json={})
    assert r.status_code == 503 and "Busy" in r.json()["error"]
    # chunked, with no Content-Length: the body is cut off as it streams in
    r = client.post("/api/step", content=iter([b"{", b" " * MAX_BODY, b"}"]))
    assert r.status_code == 413, r.text
    r = client.post("/api/step", json={"session": sid, "keys": ["w", "a"]})
    assert r.status_code == 200 and r.json()["frame_index"] == 1 and r.json()["pressed"] == ["up", "left"]
    r = client.post("/api/reset", json={"session": sid, "seed": 3, "model": "other (random weights)"})
    assert r.status_code == 200 and r.json()["model"] == "other (random weights)"
    assert client.post("/api/close", json={"session": sid}).json() == {"closed": True}
    assert client.post("/api/open", json={}).status_code == 200


def test_cli_web_arguments(tmp_path, capsys):
    args = build_parser().parse_args(["web"])
    assert (args.host, args.port, args.max_sessions, args.idle_timeout, args.checkpoint) == (
        "127.0.0.1",
        7860,
        4,
        120.0,
        [],
    )
    assert main(["web", "--checkpoint", str(tmp_path / "missing.safetensors")]) == 2
    assert "missing.safetensors" in capsys.readouterr().err


def test_cli_web_says_an_old_gradio_before_anything_slow(tmp_path, capsys, monkeypatch):
    """gradio.Server is new in Gradio 6.10: an older one is named at once, before the models are got ready
    (minutes on a first start), so here before the missing checkpoint is even looked at."""
    import types

    monkeypatch.setitem(sys.modules, "gradio", types.SimpleNamespace(__version__="6.9.0"))
    assert main(["web", "--checkpoint", str(tmp_path / "missing.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "Gradio 6.10 or later" in err and "6.9.0" in err
    assert "missing.safetensors" not in err


# -- the page, in headless Chromium ------------------------------------------------------------

needs_browser = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not found (Debian: apt-get install chromium)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    pw = sync_api.sync_playwright().start()
    b = pw.chromium.launch(
        executable_path=CHROMIUM,
        args=[
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    )
    yield b
    b.close()
    pw.stop()


@pytest.fixture
def server():
    """The app on a free port, in this process: (url, manager)."""
    m = SessionManager(MODELS, max_sessions=4, idle_timeout=60)
    app = build_app(m, fps=30)
    port = free_port()
    launch(app, "127.0.0.1", port)
    yield f"http://127.0.0.1:{port}/", m
    app.get_blocks().close()
    m.shutdown()


def test_gradio_routes_are_shut(server):
    """The launched server answers only the page and its four API calls: Gradio's upload, file, queue,
    config and editor routes are refused (an open upload route stored anyone's files), and a body of
    nested brackets is a 400, not a server error."""
    import urllib.request

    url, _ = server

    def call(path, data=None, ctype="application/json"):
        req = urllib.request.Request(url + path.lstrip("/"), data=data, headers={"content-type": ctype})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    upload = b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.txt"\r\n\r\nhi\r\n--x--\r\n'
    assert call("/gradio_api/upload", upload, "multipart/form-data; boundary=x")[0] == 404
    for path in (
        "/gradio_api/file=/etc/passwd",
        "/file=/etc/passwd",
        "/config",
        "/gradio_api/info",
        "/theme.css",
    ):
        assert call(path)[0] == 404, path
    for path in ("/gradio_api/queue/join", "/gradio_api/run/predict", "/gradio_api/vibe-code"):
        assert call(path, b"{}")[0] == 404, path
    status, body = call("/api/step", b"[" * 2000 + b"]" * 2000)  # under the 4 KB cap
    assert status == 400 and b"server error" not in body  # refused plainly (deep or not an object)
    assert call("/")[0] == 200 and call("/api/open", b"{}")[0] == 200


def frame_index(page) -> int:
    return int(page.get_attribute("#frame", "data-frame"))


def wait_index(page, at_least: int, timeout=15000):
    page.wait_for_function(f"+document.getElementById('frame').dataset.frame >= {at_least}", timeout=timeout)


def pause(page):
    if page.text_content("#run") == "Pause":
        page.click("#run")
    page.wait_for_function("document.getElementById('run').textContent === 'Start'")
    # the step in flight lands and the loop ends (a fixed wait was too short on a busy CI machine)
    page.wait_for_function("document.getElementById('run').dataset.loop !== 'on'", timeout=30000)


def step_once(page, expect: int) -> str:
    page.click("#step")
    wait_index(page, expect)
    assert frame_index(page) == expect
    return page.get_attribute("#frame", "src")


def reset(page):
    page.click("#reset")
    page.wait_for_function("document.getElementById('frame').dataset.frame === '0'")


@needs_browser
def test_page_keys_drive_frames(browser, server):
    url, m = server
    page = browser.new_context(viewport={"width": 960, "height": 640}).new_page()
    page.goto(url)
    wait_index(page, 3)  # it opens a session and plays at once
    assert len(m) == 1
    assert page.evaluate("getComputedStyle(document.getElementById('frame')).imageRendering") == "pixelated"
    first = page.get_attribute("#frame", "src")

    # held keys reach the model while it runs
    page.keyboard.down("ArrowUp")
    page.wait_for_function("document.getElementById('keys').textContent === 'up'", timeout=10000)
    now = frame_index(page)
    wait_index(page, now + 3)
    page.keyboard.up("ArrowUp")
    assert page.get_attribute("#frame", "src") != first
    assert page.text_content("#fps") != "-" and page.text_content("#latency").endswith("ms")

    # same seed, one step each: different keys give different frames, the same key the same frame
    pause(page)
    srcs = {}
    for name, key in [("left", "ArrowLeft"), ("right", "d"), ("none", None), ("left again", "a")]:
        reset(page)
        if key:
            page.keyboard.down(key)
        srcs[name] = step_once(page, 1)
        if key:
            page.keyboard.up(key)
    assert srcs["left"] != srcs["right"] != srcs["none"] != srcs["left"]
    assert srcs["left again"] == srcs["left"]

    # an on-screen button, held, presses its key
    reset(page)
    button = page.locator("#pad button[data-action=left]")
    button.dispatch_event("pointerdown", {"pointerId": 1})
    assert step_once(page, 1) == srcs["left"]
    button.dispatch_event("pointerup", {"pointerId": 1})
    assert page.text_content("#keys") == "left"

    # the model control: another model, the same session
    page.select_option("#model", "other (random weights)")
    page.wait_for_function("document.getElementById('frame').dataset.frame === '0'")
    assert step_once(page, 1) != srcs["none"]
    assert len(m) == 1
    page.context.close()


@needs_browser
def test_pages_get_independent_sessions_freed_on_leaving(browser, server):
    url, m = server
    one, two = (browser.new_context().new_page() for _ in range(2))
    one.goto(url)
    two.goto(url)
    wait_index(one, 1)
    wait_index(two, 1)
    assert len(m) == 2
    pause(two)
    before = frame_index(two)
    pause(one)
    start = frame_index(one)
    for i in range(1, 4):
        step_once(one, start + i)
    assert frame_index(two) == before, "stepping one page advanced the other"
    one.goto("about:blank")  # leaving the page frees its session at once (a pagehide beacon)
    deadline = time.monotonic() + 5
    while len(m) != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(m) == 1
    step_once(two, before + 1)
    one.context.close()
    two.context.close()


@needs_browser
def test_pages_playing_at_once_are_batched_and_isolated(browser, server):
    """Three pages playing at once, each holding its own key: the server makes their frames in shared
    batched steps, each page shows its own keys, and a step taken in all three at once gives each the
    frame a lone session draws for its seed and key."""
    url, m = server
    held = {0: "ArrowLeft", 1: "ArrowUp", 2: "d"}
    shown = {0: "left", 1: "up", 2: "right"}
    pages = {i: browser.new_context().new_page() for i in held}
    for page in pages.values():
        page.goto(url)
    for i, page in pages.items():
        wait_index(page, 1)
        page.keyboard.down(held[i])
    for i, page in pages.items():
        page.wait_for_function(f"document.getElementById('keys').textContent === '{shown[i]}'", timeout=15000)
        wait_index(page, frame_index(page) + 5)
    pool = m.models["small (random weights)"].__self__
    assert pool.rows_stepped > pool.steps, "the pages' steps were never made together"
    for i, page in pages.items():
        pause(page)
        page.fill("#seed", str(20 + i))
        reset(page)
    for page in pages.values():
        page.click("#step")
    for i, page in pages.items():
        wait_index(page, 1)
        lone = MODELS["small (random weights)"]()
        lone.reset(seed=20 + i)
        want = lone.step({shown[i]})
        src = page.get_attribute("#frame", "src")
        got = png({"frame": src.split(",", 1)[1]})
        assert np.abs(np.int16(got) - want).max() <= 1, f"page {i} shows another world's frame"
        assert page.text_content("#keys") == shown[i]
        page.keyboard.up(held[i])
    for page in pages.values():
        page.context.close()


FOREIGN_AXES = {
    "keys": ["none", "turn_left", "forward", "attack"],
    "axes": ["yaw", "pitch"],
    "exclusive": True,
}


def foreign_model():
    return WorldSession.from_preset(
        "tiny", seed=0, device="cpu", config_changes={**SMALL, "actions": FOREIGN_AXES}
    )


def test_the_mouse_reaches_a_models_axes():
    m = SessionManager({"foreign": foreign_model}, keys="attack=j")
    o = m.open(seed=0)
    assert o["mouse"] == ["yaw", "pitch"]
    r = m.step(o["session"], ["q"], mouse=[3.5, -1])
    assert r["pressed"] == ["turn_left"] and r["axes"] == {"yaw": 3.5, "pitch": -1.0}
    assert m.step(o["session"], [])["axes"] == {"yaw": 0.0, "pitch": 0.0}
    for bad in ([1], [1, "x"], [1, float("nan")], [1e9, 0], {"dx": 1}, [True, 0]):
        assert "'mouse'" in refused(m.step, o["session"], [], mouse=bad)


@needs_browser
def test_a_foreign_model_in_the_page(browser):
    """A game of its own (its action names, exclusive, a no-op, two axes) in Chromium: the page lists its
    keys (--keys over the ones its names give), a held key presses its action, and the mouse dragged
    over the picture turns its yaw axis."""
    m = SessionManager({"foreign": foreign_model}, max_sessions=1, idle_timeout=60, keys="attack=j")
    app = build_app(m, fps=30)
    port = free_port()
    launch(app, "127.0.0.1", port)
    try:
        page = browser.new_context(viewport={"width": 960, "height": 640}).new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        wait_index(page, 1)
        pause(page)
        help_text = page.text_content("#help")
        assert "forward w" in help_text and "attack j" in help_text and "turn_left" in help_text
        page.keyboard.down("q")
        box = page.locator("#frame").bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + 60, y, steps=6)
        page.mouse.up()  # that click asked for pointer lock: the page's Esc (here: exitPointerLock) frees it
        page.evaluate("document.exitPointerLock()")
        step_once(page, frame_index(page) + 1)
        keys = page.text_content("#keys")
        assert keys.startswith("turn_left yaw "), keys
        yaw = float(keys.split()[2])
        assert yaw > 0 and "pitch 0.0" in keys, keys
        page.keyboard.up("q")
        step_once(page, frame_index(page) + 1)
        assert page.text_content("#keys") == "none yaw 0.0 pitch 0.0"  # nothing held: its no-op
        page.context.close()
    finally:
        app.get_blocks().close()
        m.shutdown()


class FirstFrameCompiles:
    """A session that reports the compiled backend and whose first step takes `delay` s (a compile)."""

    backend = "compiled"

    def __init__(self, delay=1.5):
        self._s, self.delay = small_model(0)(), delay

    def __getattr__(self, name):
        return getattr(self._s, name)

    def step(self, action):
        if self.delay:
            time.sleep(self.delay)
            self.delay = 0
        return self._s.step(action)


@needs_browser
def test_the_page_says_when_the_first_frame_compiles(browser):
    # a lone session (batch=False): a batch of the web server is compiled before anyone comes (_warm)
    m = SessionManager({"compiled": FirstFrameCompiles}, max_sessions=1, idle_timeout=60, batch=False)
    app = build_app(m, fps=30)
    port = free_port()
    launch(app, "127.0.0.1", port)
    try:
        page = browser.new_context().new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("document.getElementById('message').textContent.startsWith('Compiling')")
        wait_index(page, 2)
        assert page.is_hidden("#message")
        page.context.close()
    finally:
        app.get_blocks().close()
        m.shutdown()


def test_max_sessions_auto_is_what_the_machine_sustains(capsys):
    from app.catalogue import Offer
    from app.web.server import _sustained

    assert build_parser().parse_args(["web", "--max-sessions", "auto"]).max_sessions == "auto"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["web", "--max-sessions", "0"])
    offer = Offer("small", small_model(0))
    assert _sustained(offer, floor=1e-6, most=2, ticks=1) == 2  # any rate will do: the most tried
    assert _sustained(offer, floor=1e9, most=4, ticks=1) == 1  # none reaches it: one visitor still
    out = capsys.readouterr().out
    assert "--max-sessions auto: 2 (fps each by visitors: 1: " in out.replace("each, by", "each by")


def test_backend_auto_for_visitors_is_timed_batched(tmp_path, monkeypatch):
    """web's backend auto with several visitors: the candidates timed as batches of AUTO_ROWS
    players (runtime/auto.py), the choice's own options carried (ONNX Runtime's threads)."""
    from app.catalogue import Offer
    from app.web.server import _batched_backend
    from worldmodel.runtime import auto
    from worldmodel.runtime.backends import BackendOptions

    monkeypatch.setenv("WORLDMODEL_CACHE", str(tmp_path))
    monkeypatch.setattr(
        auto, "candidates", lambda *a, **k: ["eager", ("onnx (1 thread)", "onnx", {"ort_threads": 1})]
    )
    timed = []

    def fake(model, start, device, dtype, options, backend, rows):
        timed.append((backend, rows, options.ort_threads))
        return {"eager": 30.0, "onnx": 20.0}[backend]

    monkeypatch.setattr(auto, "batched_trial", fake)
    backend, options = _batched_backend(Offer("small", small_model(0)), BackendOptions())
    assert timed == [("eager", 4, None), ("onnx", 4, 1)]
    assert backend == "onnx" and options.ort_threads == 1


def test_web_compiles_before_the_first_visitor(tmp_path, monkeypatch, capsys):
    from app.web.server import _warm

    monkeypatch.setenv("WORLDMODEL_CACHE", str(tmp_path))
    made = []

    def make():
        made.append(FirstFrameCompiles(delay=0.2))
        return made[-1]

    m = SessionManager({"compiled": make}, batch=False)
    try:
        _warm(m, {"compiled": make()})
    finally:
        m.shutdown()
    out = capsys.readouterr().out
    assert "compiled: compiling for this machine (the first time takes 5-20 s)" in out
    assert "compiled: compiled in" in out and made[-1].delay == 0  # its first step ran
    assert "compiled|" in (tmp_path / "first-frame.json").read_text()


@needs_browser
def test_cli_server_busy_page(browser, tmp_path):
    """`worldmodel web --max-sessions 1` in a subprocess: a second visitor is told it is busy (its
    buttons off, no broken image), gets in by itself once the first leaves, and no frame is written
    to disk."""
    port = free_port()
    env = dict(os.environ, GRADIO_TEMP_DIR=str(tmp_path / "gradio"), PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable,
        "-m",
        "app.cli",
        "web",
        "--port",
        str(port),
        "--max-sessions",
        "1",
        "--backend",
        "eager",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = []
    threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True).start()
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                assert proc.poll() is None, "".join(log)
                assert time.monotonic() < deadline, "server did not start:\n" + "".join(log)
                time.sleep(0.3)
        one, two = (browser.new_context(viewport={"width": 960, "height": 620}).new_page() for _ in range(2))
        one.goto(url)
        wait_index(one, 2, timeout=30000)
        two.goto(url)
        two.wait_for_function("document.getElementById('message').textContent.includes('Busy')")
        assert "trying again in" in two.text_content("#message").lower()
        assert two.is_visible("#message") and not two.is_visible("#frame")  # no broken image, no alt text
        assert two.is_disabled("#run") and two.is_disabled("#step")  # nothing to start while waiting
        one.goto("about:blank")
        wait_index(two, 2, timeout=30000)  # it gets in by itself once the slot frees: no reload, no click
        assert not two.is_visible("#message") and two.is_visible("#frame") and not two.is_disabled("#run")
        if os.environ.get("WORLDMODEL_WEB_SCREENSHOT"):  # the README's picture of the page
            two.keyboard.down("ArrowRight")
            wait_index(two, frame_index(two) + 20, timeout=30000)
            two.screenshot(path=os.environ["WORLDMODEL_WEB_SCREENSHOT"])
            two.keyboard.up("ArrowRight")
        for page in (one, two):
            page.context.close()
        written = [p for p in (tmp_path / "gradio").rglob("*") if p.is_file()]
        assert not written, f"files written under GRADIO_TEMP_DIR: {written[:5]}"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    said = "".join(log)
    assert "worldmodel web: http://localhost" in said
    # the address is said first, before the models are made ready, so a long first start is not a silence
    ready = said.index(f"getting the models ready, then serving http://localhost:{port}/")
    assert ready < said.index("worldmodel web: http://localhost")
    shutil.rmtree(tmp_path / "gradio", ignore_errors=True)
