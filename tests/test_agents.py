import re

import numpy as np
import pytest

from worldmodel.actions import ActionSpace
from worldmodel.games import make_game
from worldmodel.games.agents import ExploreAgent, RandomAgent, make_agent


def _play(agent, env, seed, n):
    obs, info = env.reset(seed=seed)
    agent.reset(seed, env.actions)
    actions, infos = [], []
    for _ in range(n):
        a = agent.act(obs, info)
        actions.append(a)
        obs, _, _, _, info = env.step(a)
        infos.append(info)
    return np.stack(actions), infos


def test_random_agent_holds_actions_and_is_seeded():
    env = make_game("overworld")
    a1, _ = _play(RandomAgent(), env, 3, 400)
    a2, _ = _play(RandomAgent(), env, 3, 400)
    assert np.array_equal(a1, a2)
    changes = (a1[1:] != a1[:-1]).any(1).sum()
    assert 400 / (changes + 1) > 3  # held for several frames on average
    assert len({tuple(a) for a in a1}) > 4


def test_explore_agent_walks_idles_and_turns():
    env = make_game("overworld")
    actions, infos = _play(ExploreAgent(), env, 0, 1500)
    noop = ~actions.any(1)
    runs, run = [], 0
    for idle in noop:
        run = run + 1 if idle else 0
        runs.append(run)
    assert max(runs) >= 10  # stands idle for a while
    assert noop.mean() < 0.5  # but mostly walks
    xs = np.array([i["x"] for i in infos])
    ys = np.array([i["y"] for i in infos])
    assert np.hypot(xs - xs[0], ys - ys[0]).max() > 15  # gets somewhere
    # after being blocked twice in a row it turns within a frame or two
    for t in range(2, len(infos) - 3):
        if (
            infos[t - 1]["blocked"]
            and infos[t]["blocked"]
            and not noop[t + 1]
            and not infos[t - 2]["blocked"]
        ):
            assert any(not np.array_equal(actions[t + k], actions[t]) for k in (1, 2))


def test_agents_work_with_exclusive_spaces():
    space = ActionSpace(("left", "right", "up", "down", "do", "sleep"), exclusive=True)
    for name in ("random", "explore"):
        agent = make_agent(name)
        agent.reset(0, space)
        for t in range(300):
            a = agent.act(None, {"x": t % 3, "y": 0, "blocked": t % 7 == 0})
            assert a.sum() <= 1
            space.validate(a)


def test_an_agent_spec_sets_its_options_and_a_bad_one_is_named():
    """ "explore:idle=P" rests after that share of its walks: none at 0, far more at 1 than by default;
    a bad option, value or name is one error naming it."""
    env = make_game("overworld")
    assert make_agent("explore:idle=0.5,use=0").idle_prob == 0.5 and make_agent("random:hold=3").max_hold == 3
    still = {}
    for spec in ("explore:idle=0", "explore", "explore:idle=1"):
        actions, _ = _play(make_agent(spec), env, 0, 2000)
        still[spec] = float((~actions.any(1)).mean())
    assert still["explore:idle=0"] == 0.0 and still["explore"] < still["explore:idle=1"], still
    for bad, says in (
        ("explore:rest=0.5", "bad option 'rest=0.5'; explore takes idle=..., use=..."),
        ("explore:idle=2", "idle must be in [0.0, 1.0]"),
        ("explore:idle=lots", "idle must be a float"),
        ("random:hold=0", "hold must be in [1, 10000]"),
        ("wander", "unknown agent 'wander'"),
    ):
        with pytest.raises(ValueError, match=re.escape(says)):
            make_agent(bad)
