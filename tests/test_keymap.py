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


FOREIGN = ("none", "turn_left", "turn_right", "forward", "back", "strafe_left", "strafe_right", "attack")


def test_a_foreign_game_gets_keys_by_its_action_names():
    """A game the project never saw (an exclusive set with a no-op, turns and strafes): every action
    gets a key by what its name says, no key twice; holding nothing sends its no-op, as its frames did."""
    from worldmodel.actions import ActionSpace

    space = ActionSpace(FOREIGN, exclusive=True)
    km = KeyMap(space)
    assert km.unbound == [] and km.problems() == []
    assert len(km.key_to_action) == len(set(km.key_to_action))
    expect = {"w": "forward", "up": "forward", "s": "back", "left": "turn_left", "q": "turn_left"}
    expect.update({"e": "turn_right", "a": "strafe_left", "d": "strafe_right", "space": "attack"})
    assert {k: km.key_to_action[k] for k in expect} == expect
    assert space.decode(km.action(set())) == ["none"]  # nothing held: the game's no-op
    assert space.decode(km.action({"q"})) == ["turn_left"]
    assert any("none" in line and "no key" in line for line in km.help_lines())
    # names nothing matches get spare digits; none of them a control of the window (p, r, m, h, v)
    odd = ActionSpace(("wobble", "sing", "flip"))
    assert KeyMap(odd).key_to_action == {"1": "wobble", "2": "sing", "3": "flip"}


def test_keys_option_rebinds_and_refuses_what_it_cannot_mean():
    from app.keymap import check_bindings, parse_bindings
    from worldmodel.actions import ActionSpace

    space = ActionSpace(FOREIGN, exclusive=True)
    km = KeyMap(space, overrides=parse_bindings("attack=j,turn_left=space/z", space))
    assert km.key_to_action["j"] == "attack" and km.key_to_action["space"] == "turn_left"
    assert km.key_to_action["z"] == "turn_left" and "q" not in km.key_to_action
    with pytest.raises(ValueError, match="unknown action 'dance'"):
        parse_bindings("dance=x", space)
    with pytest.raises(ValueError, match="key 'x' given to both 'attack' and 'back'"):
        parse_bindings("attack=x,back=x", space)
    with pytest.raises(ValueError, match="expected ACTION=KEY"):
        parse_bindings("attack", space)
    with pytest.raises(ValueError, match="unknown action 'dance'; the models' actions"):
        check_bindings("dance=x", [space, ACTIONS])
    check_bindings("attack=x,up=i", [space, ACTIONS])  # each name in one of the models: fine
    # an action left without a key (its only key taken by --keys) is said, and listed in the help
    tight = KeyMap(ActionSpace(("up", "sing")), overrides={"up": ("1",)})
    assert tight.key_to_action == {"1": "up"} and tight.unbound == ["sing"]
    assert "no key for action(s) sing" in tight.problems()[0] and "(none)" in tight.help_lines()[-1]
