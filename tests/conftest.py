import os
import shutil
import subprocess

import numpy as np
import pytest

# Headless pygame everywhere; no spin-waiting threads on a busy 2-core machine (set before PyTorch
# loads: OpenMP reads it once).
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import torch  # noqa: E402

# Triton kernels run under the interpreter on a machine without a CUDA GPU. It must be set before
# Triton is first imported (kernels decide at definition time).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def recorded(tmp_path_factory):
    """A small real dataset: 3 overworld episodes of 120 frames by the explore agent."""
    from worldmodel.data.recorder import record

    root = tmp_path_factory.mktemp("rec") / "D"
    record(root, "overworld", "explore", episodes=3, steps=120, seed=5, workers=1, show_progress=False)
    return root


def load_tool(name: str):
    """A script of tools/ as a module (they are not a package): tools/NAME.py."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def write_synthetic(root, lengths, space=None, size=(8, 8)):
    """A dataset whose frames encode (episode, t): pixel [0, 0] = (episode, t % 256, t // 256)."""
    from worldmodel.actions import ActionSpace
    from worldmodel.data import writing

    space = space or ActionSpace(("up", "down", "left", "right", "action"))
    m = writing.open_for_writing(root, "synthetic", space, 10, size)
    rng = np.random.default_rng(0)
    for e, n in enumerate(lengths):
        with writing.EpisodeWriter(root, writing.episode_id(e), space, size, {"agent": "synthetic"}) as w:
            for t in range(n):
                frame = np.zeros((*size, 3), np.uint8)
                frame[0, 0] = (e, t % 256, t // 256)
                action = (rng.random(space.size) < 0.3).astype(np.float32)
                w.add(frame, space.canonical(action), {"t": t})
                w.set_reward(float(t))
            m.episodes.append(w.finish())
    m.save(root)
    return m


class XServer:
    """A virtual X server (Xvfb) on a free display number, and xdotool to send it real key events."""

    def __init__(self):
        r, w = os.pipe()
        self.proc = subprocess.Popen(
            ["Xvfb", "-displayfd", str(w), "-screen", "0", "800x700x24", "-nolisten", "tcp"],
            pass_fds=(w,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(w)
        with os.fdopen(r) as f:  # Xvfb writes the display number it took once it is ready
            number = f.readline().strip()
        if not number:
            self.proc.kill()
            pytest.fail("Xvfb did not start")
        self.display = f":{number}"

    def env(self) -> dict:
        """This process's environment, drawing on this display (not SDL's dummy driver)."""
        env = {k: v for k, v in os.environ.items() if k != "SDL_VIDEODRIVER"}
        env["DISPLAY"] = self.display
        return env

    def xdotool(self, *args):
        return subprocess.run(["xdotool", *args], env=self.env(), capture_output=True, text=True, timeout=10)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


@pytest.fixture
def xserver():
    if not (shutil.which("Xvfb") and shutil.which("xdotool")):
        pytest.skip("needs Xvfb and xdotool (apt-get install xvfb xdotool)")
    server = XServer()
    yield server
    server.stop()
