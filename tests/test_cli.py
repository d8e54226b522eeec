import json
import shutil
import subprocess
import sys

import cv2

from app.cli import main
from worldmodel.data import format as fmt


def test_console_script_help():
    exe = shutil.which("worldmodel")
    cmd = [exe] if exe else [sys.executable, "-m", "app.cli"]
    out = subprocess.run([*cmd, "--help"], capture_output=True, text=True, check=True).stdout
    for name in ("record", "data"):
        assert name in out
    out = subprocess.run([*cmd, "data", "--help"], capture_output=True, text=True, check=True).stdout
    for name in ("check", "stats", "show", "import"):
        assert name in out


def test_record_check_stats_show(tmp_path, capsys):
    d = tmp_path / "D"
    assert (
        main(
            [
                "record",
                "--game",
                "overworld",
                "--agent",
                "explore",
                "--episodes",
                "2",
                "--steps",
                "80",
                "--workers",
                "2",
                "--seed",
                "0",
                "--out",
                str(d),
                "--quiet",
            ]
        )
        == 0
    )
    assert "recorded 2 episode(s), 160 frames" in capsys.readouterr().out
    assert main(["data", "check", str(d)]) == 0
    assert capsys.readouterr().out.startswith("OK")
    assert main(["data", "stats", str(d), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["frames"] == 160 and set(stats["key_fraction"]) == {"up", "down", "left", "right", "action"}
    png = tmp_path / "sheet.png"
    assert main(["data", "show", str(d), "--episode", "1", "--out", str(png), "--count", "12"]) == 0
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 100
    assert main(["data", "show", str(d), "--out", str(tmp_path / "e.webm")]) == 0
    assert "80 frames" in capsys.readouterr().out


def test_check_names_bad_episodes_and_exits_nonzero(recorded, tmp_path, capsys):
    d = tmp_path / "D"
    shutil.copytree(recorded, d)
    f = fmt.episode_dir(d, "000002") / "frames.npy"
    f.write_bytes(f.read_bytes()[:-64])
    assert main(["data", "check", str(d)]) == 1
    out = capsys.readouterr().out
    assert "BAD episode 000002" in out and "truncated" in out and "1 bad episode(s) of 3: 000002" in out
    # stats summarises the sound episodes and names the damaged one instead of reading as a sound dataset
    assert main(["data", "stats", str(d)]) == 0
    out = capsys.readouterr().out
    assert "episodes     2" in out and "damaged      1 episode(s)" in out and "000002" in out
    assert main(["data", "stats", str(d), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["episodes"] == 2 and list(stats["damaged"]) == ["000002"]
    assert "truncated" in stats["damaged"]["000002"]


def test_clear_errors(tmp_path, capsys):
    assert main(["data", "stats", str(tmp_path / "nope")]) == 2
    assert "no such dataset directory" in capsys.readouterr().err
    assert main(["data", "show", str(tmp_path / "nope")]) == 2
    assert main(["record", "--out", str(tmp_path / "x"), "--steps", "0"]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err


def test_threads_sleep_on_a_busy_cpu_and_spin_on_an_idle_one():
    from worldmodel.runtime.threads import choose_wait_policy

    env = {}
    assert choose_wait_policy(env, load=0.2, cores=2) is None and env == {}  # idle: spinning stays
    said = choose_wait_policy(env, load=1.7, cores=2)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"} and "busy (load 1.7 on 2 cores)" in said
    mine = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert choose_wait_policy(mine, load=9.0, cores=2) is None and mine["OMP_WAIT_POLICY"] == "ACTIVE"


def test_play_says_when_no_window_can_be_seen():
    from app.play.launch import no_display

    assert "no display" in no_display({}, "linux")
    assert (
        no_display({"DISPLAY": ":0"}, "linux") is None
        and no_display({"SDL_VIDEODRIVER": "dummy"}, "linux") is None
    )
    assert no_display({}, "darwin") is None
