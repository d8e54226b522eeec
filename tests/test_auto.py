"""backend="auto" (worldmodel/runtime/auto.py): the fastest candidate by a short trial, remembered."""

import json

import pytest

from worldmodel import WorldSession
from worldmodel.runtime import auto

MICRO = dict(dim=48, depth=2, heads=2, window=4, ae=dict(latent_channels=4, channels=(8, 16, 16)))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLDMODEL_CACHE", str(tmp_path))
    monkeypatch.setattr(auto, "TRIAL_S", 0.05)
    return tmp_path


def make(backend="auto"):
    return WorldSession.from_preset("tiny", seed=0, device="cpu", backend=backend, config_changes=MICRO)


def test_auto_keeps_the_fastest_and_remembers_it(cache, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setattr(auto, "candidates", lambda *args: ["eager", "onnx"])
    fake = {"eager": 9.0, "onnx": 4.0}  # the trial's figures, fixed: which one wins is then known
    monkeypatch.setattr(auto, "trial", lambda s: fake[s.backend])
    s = make()
    assert s.backend == "onnx" and s.auto["ms"] == fake and s.auto["cached"] is False
    saved = json.loads((cache / "auto-backend.json").read_text())
    assert [v["backend"] for v in saved.values()] == ["onnx"]
    assert "wait" in next(iter(saved)) and "threads" in next(iter(saved))  # per machine and policy

    def no_trial(s):
        raise AssertionError("the verdict was cached: no trial")

    monkeypatch.setattr(auto, "trial", no_trial)
    again = make()
    assert again.backend == "onnx" and again.auto["cached"] is True
    # another policy (a busy machine sleeps its threads) is another verdict
    monkeypatch.setenv("OMP_WAIT_POLICY", "SOMETHING_ELSE")
    fake["eager"] = 1.0
    monkeypatch.setattr(auto, "trial", lambda s: fake[s.backend])
    assert make().backend == "eager"


def test_a_backend_that_cannot_run_is_no_choice(cache, monkeypatch):
    monkeypatch.setattr(auto, "candidates", lambda *args: ["nonesuch", "eager"])
    s = make()
    assert s.backend == "eager" and s.auto["ms"]["eager"] > 0
    assert s.auto["ms"]["nonesuch"].startswith("ValueError: unknown backend")
    monkeypatch.setattr(auto, "candidates", lambda *args: ["nonesuch"])
    with pytest.raises(RuntimeError, match="no backend ran here"):
        make()


def test_the_trial_times_real_frames(cache):
    s = make("eager")
    ms = auto.trial(s)
    assert ms > 0 and s.frame_index >= auto.WARMUP + auto.MIN_FRAMES


def test_profile_records_what_auto_chose(cache, monkeypatch, tmp_path):
    from worldmodel.profiling.latency import run_profile

    monkeypatch.setattr(auto, "candidates", lambda *args: ["eager"])
    run_profile(tmp_path / "p", "tiny", None, "cpu", "auto", 3, fill=2, config_changes=MICRO)
    r = json.loads((tmp_path / "p" / "profile.json").read_text())["backends"]["auto"]
    assert r["backend"] == "eager" and r["auto"]["backend"] == "eager"
    md = (tmp_path / "p" / "profile.md").read_text()
    assert "| auto: eager |" in md and "`auto` ran `eager`: the fastest" in md


def test_onnx_runtimes_threads_are_a_choice_of_their_own(cache, monkeypatch):
    """On a CPU with two threads, ONNX Runtime is tried with its default threads and with the other
    choice (a busy machine can turn them around); the winner's threads are the session's."""
    pytest.importorskip("onnxruntime")
    import torch

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    listed = auto.candidates(torch.device("cpu"), make("eager").cfg, None)
    variants = [c for c in listed if not isinstance(c, str)]
    assert "onnx" in listed and len(variants) == 1 and variants[0][1] == "onnx"
    label, _, changes = variants[0]
    # a batch's ONNX Runtime takes both threads by default: its other choice is one
    rows = [
        c for c in auto.candidates(torch.device("cpu"), make("eager").cfg, None, 4) if not isinstance(c, str)
    ]
    assert [c[2] for c in rows] == [{"ort_threads": 1}] and changes == {"ort_threads": 2}
    monkeypatch.setattr(auto, "candidates", lambda *args: ["eager", "onnx", variants[0]])
    monkeypatch.setattr(
        auto, "trial", lambda s: 1.0 if s.options.ort_threads == changes["ort_threads"] else 5.0
    )
    s = make()
    assert (
        s.backend == "onnx" and s.auto["choice"] == label and s.options.ort_threads == changes["ort_threads"]
    )
    again = make()  # the cached verdict brings its threads too
    assert again.auto["cached"] and again.options.ort_threads == changes["ort_threads"]
