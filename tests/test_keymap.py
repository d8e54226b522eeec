import pytest

from app.keymap import KeyMap, normalize_key
from worldmodel.games.overworld import ACTIONS


def test_browser_and_pygame_names_agree():
    assert normalize_key("ArrowLeft") == normalize_key("left") == "left"
    assert normalize_key(" ") == normalize_key("space") == "space"
    assert normalize_key("W") == "w"


def test_held_keys_to_action():
    km = KeyMap(ACTIONS)
    assert ACTIONS.decode(km.action({"w", "ArrowRight", " "})) == ["up", "right", "action"]
    assert not km.action(set()).any()
    assert not km.action({"z"}).any()  # ignored ...
    with pytest.raises(ValueError, match="unknown key"):
        km.action({"z"}, strict=True)  # ... or refused
    assert km.unbound == []
    assert any("action" in line for line in km.help_lines())


def test_crafter_layout():
    pytest.importorskip("crafter")
    from worldmodel.games.crafter_env import ACTIONS as CRAFTER

    km = KeyMap(CRAFTER)
    assert km.unbound == []
    assert CRAFTER.decode(km.action({"space"})) == ["do"]
    assert CRAFTER.decode(km.action({"a", "d"})).__len__() == 1  # exclusive: one key wins
