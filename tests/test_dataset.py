import numpy as np
import pytest
import torch

from worldmodel.data import format as fmt
from worldmodel.data import storage
from worldmodel.data.dataset import WindowDataset

from .conftest import write_synthetic


def _decode(frames):
    """(episode, t) of each frame of a synthetic window."""
    px = frames[:, 0, 0].numpy().astype(int)
    return px[:, 0], px[:, 1] + 256 * px[:, 2]


def test_windows_never_span_two_episodes(tmp_path):
    lengths = [7, 3, 12, 5, 300]
    write_synthetic(tmp_path / "D", lengths)
    ds = WindowDataset(tmp_path / "D", num_frames=5)
    assert ds.skipped == 1  # the 3-frame episode cannot hold a window
    assert len(ds) == sum(n - 5 + 1 for n in lengths if n >= 5)
    seen = set()
    for i in range(len(ds)):
        item = ds[i]
        ep, t = _decode(item["frames"])
        assert (ep == ep[0]).all(), f"window {i} spans episodes {set(ep)}"
        assert (np.diff(t) == 1).all() and t[-1] < lengths[ep[0]]
        assert item["episode"] == ep[0] and item["start"] == t[0]
        seen.add((ep[0], t[0]))
    assert len(seen) == len(ds)  # every window once


def test_stride_and_shapes(tmp_path):
    write_synthetic(tmp_path / "D", [20, 9])
    ds = WindowDataset(tmp_path / "D", num_frames=4, stride=3)
    assert len(ds) == (20 - 4) // 3 + 1 + (9 - 4) // 3 + 1
    item = ds[len(ds) - 1]
    assert item["frames"].shape == (4, 8, 8, 3) and item["frames"].dtype == torch.uint8
    assert item["actions"].shape == (4, 5) and item["actions"].dtype == torch.float32
    assert item["rewards"].tolist() == [3.0, 4.0, 5.0, 6.0]  # rewards[t] = t in the synthetic data
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_actions_taken_and_caused(tmp_path):
    write_synthetic(tmp_path / "D", [10])
    stored = np.load(fmt.episode_dir(tmp_path / "D", "000000") / "actions.npy")
    taken = WindowDataset(tmp_path / "D", 4, actions="taken")
    caused = WindowDataset(tmp_path / "D", 4, actions="caused")
    assert np.array_equal(taken[2]["actions"].numpy(), stored[2:6])
    assert np.array_equal(caused[2]["actions"].numpy(), stored[1:5])  # actions[i] produced frames[i]
    first = caused[0]["actions"].numpy()
    assert not first[0].any() and np.array_equal(first[1:], stored[0:3])  # no-op before the first frame


def test_frames_are_memory_mapped_and_workers_reopen(tmp_path):
    write_synthetic(tmp_path / "D", [30, 30])
    ds = WindowDataset(tmp_path / "D", 6)
    assert isinstance(ds.episode(0).frames, np.memmap)
    loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True, num_workers=2)
    total = 0
    for batch in loader:
        ep, t = _decode(batch["frames"].reshape(-1, 8, 8, 3))
        assert batch["frames"].shape[1:] == (6, 8, 8, 3)
        total += len(batch["frames"])
    assert total == len(ds)


def test_loader_refuses_bad_data(tmp_path, recorded):
    import shutil

    d = tmp_path / "D"
    shutil.copytree(recorded, d)
    f = fmt.episode_dir(d, "000001") / "frames.npy"
    with open(f, "r+b") as fh:
        fh.truncate(5000)
    with pytest.raises(fmt.DatasetError, match=r"episode 000001: .*frames.npy: truncated"):
        WindowDataset(d, 8)
    with pytest.raises(fmt.DatasetError, match="no episode has 500 frames"):
        WindowDataset(recorded, 500)
    with pytest.raises(fmt.DatasetError, match="no episodes 000009"):
        WindowDataset(recorded, 8, episodes=["000009"])
    ds = WindowDataset(recorded, 8, episodes=["000000"], verify=True)
    assert len(ds) == 120 - 8 + 1


def test_loader_refuses_nan_actions_and_paths_out_of_the_dataset(tmp_path, recorded):
    """What reaches training is sane: NaN or out-of-range actions, NaN rewards, an episode.json whose
    files point elsewhere and a link leading out of the dataset are refused, each naming the file."""
    import json
    import shutil

    import numpy as np

    def fresh(name):
        d = tmp_path / name
        shutil.copytree(recorded, d)
        return d, fmt.episode_dir(d, "000001")

    d, ep = fresh("nan")
    a = np.load(ep / "actions.npy")
    a[3, 0] = np.nan
    storage.save_npy(ep / "actions.npy", a)  # a consistent file: only its values are wrong
    meta = json.loads((ep / "episode.json").read_text())
    meta["files"]["actions.npy"] = storage.file_record(ep / "actions.npy")
    (ep / "episode.json").write_text(json.dumps(meta))
    with pytest.raises(fmt.DatasetError, match=r"000001/actions.npy: actions contains NaN"):
        WindowDataset(d, 8)
    a[3, 0] = 7.0
    storage.save_npy(ep / "actions.npy", a)
    with pytest.raises(fmt.DatasetError, match=r"actions.npy: actions: keys must be 0 or 1"):
        WindowDataset(d, 8)

    d, ep = fresh("escape")
    meta = json.loads((ep / "episode.json").read_text())
    meta["files"]["../../../etc/passwd"] = {"bytes": 1, "crc32": 0}
    (ep / "episode.json").write_text(json.dumps(meta))
    with pytest.raises(fmt.DatasetError, match=r"file '../../../etc/passwd' is not a plain name"):
        WindowDataset(d, 8)

    d, ep = fresh("link")
    outside = tmp_path / "elsewhere.npy"
    shutil.move(ep / "rewards.npy", outside)
    (ep / "rewards.npy").symlink_to(outside)
    with pytest.raises(fmt.DatasetError, match="rewards.npy: leads outside the dataset"):
        WindowDataset(d, 8)
