import numpy as np
import pytest

from worldmodel.actions import ActionSpace


def test_encode_decode_roundtrip():
    s = ActionSpace(("up", "down", "left", "right", "action"), axes=("dx",))
    v = s.encode({"up": 1, "action": 1, "dx": -0.5})
    assert v.dtype == np.float32 and v.tolist() == [1, 0, 0, 0, 1, -0.5]
    assert s.decode(v) == ["up", "action"]
    assert s.noop().tolist() == [0] * 6
    assert ActionSpace.from_dict(s.to_dict()) == s


def test_unknown_key_is_named():
    s = ActionSpace(("up", "down"))
    with pytest.raises(ValueError, match="'jump'"):
        s.encode({"jump"})


def test_validate_rejects_bad_vectors():
    s = ActionSpace(("a", "b"))
    with pytest.raises(ValueError, match="size 3"):
        s.validate([0, 1, 0])
    with pytest.raises(ValueError, match="0 or 1"):
        s.validate([0.5, 0])
    with pytest.raises(ValueError, match="NaN"):
        s.validate([np.nan, 0])


def test_exclusive_first_key_wins():
    s = ActionSpace(("left", "right", "do"), exclusive=True)
    assert s.canonical([0, 1, 1]).tolist() == [0, 1, 0]
    with pytest.raises(ValueError, match="at most one"):
        s.validate([1, 1, 0])


def test_bad_names():
    with pytest.raises(ValueError, match="duplicate"):
        ActionSpace(("a", "a"))
    with pytest.raises(ValueError, match="bad action name"):
        ActionSpace(("a,b",))
