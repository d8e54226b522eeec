"""Property-based tests: whatever a careless user or an attacker hands in (a config, a manifest, an
action space, an action file, a web request) either works or gets one clear error of the kind the
command line prints as one line (ValueError, DatasetError); never another exception, never an
unbounded allocation."""

import json
import string

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from worldmodel.actions import ActionSpace  # noqa: E402
from worldmodel.data import format as fmt  # noqa: E402
from worldmodel.model.config import ModelConfig  # noqa: E402

# derandomize: the same examples on every run (CI must not fail by luck); the database stays off
FAST = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# JSON values of every kind, a little nested
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8,
)


def mutated(base: dict, keys) -> st.SearchStrategy:
    """`base` with a few of its fields replaced by anything (and now and then an unknown field)."""
    return st.dictionaries(st.sampled_from(keys), values, max_size=3).map(lambda changes: {**base, **changes})


TINY = ModelConfig.from_name("tiny", dim=48, depth=2, heads=2).to_dict()


@FAST
@given(mutated(TINY, [*TINY, "warp"]))
def test_model_configs_work_or_say_which_field(d):
    try:
        cfg = ModelConfig.from_dict(d)
    except ValueError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert cfg.dim * cfg.depth <= 8192 * 256  # bounded before any allocation


@FAST
@given(mutated(TINY["ae"], [*TINY["ae"], "depth"]))
def test_autoencoder_configs_work_or_say_which_field(ae):
    try:
        ModelConfig.from_dict({**TINY, "ae": ae})
    except ValueError as e:
        assert str(e) and "\n" not in str(e)


@FAST
@given(values)
def test_action_spaces_work_or_say_what_is_wrong(d):
    try:
        space = ActionSpace.from_dict(d)
    except ValueError as e:
        assert str(e)
        return
    assert space.size >= 1 and all(isinstance(n, str) for n in space.names)


@FAST
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "resolution": values,
            "fps": values,
            "action_space": values,
            "episodes": values,
            "game": values,
            "channels": values,
        },
    )
)
def test_manifests_load_or_name_the_file(tmp_path_factory, fields):
    root = tmp_path_factory.mktemp("m")
    good = {
        "format": fmt.FORMAT,
        "version": fmt.VERSION,
        "game": "g",
        "fps": 10,
        "resolution": [8, 8],
        "action_space": {"keys": ["a"]},
        "episodes": [],
    }
    (root / fmt.MANIFEST).write_text(json.dumps({**good, **fields}, allow_nan=True))
    try:
        fmt.Manifest.load(root)
    except fmt.DatasetError as e:
        assert str(root / fmt.MANIFEST) in str(e)


@FAST
@given(
    st.lists(
        st.lists(st.text(alphabet=string.printable, max_size=6), min_size=0, max_size=4),
        min_size=1,
        max_size=8,
    ),
    st.booleans(),
)
def test_action_csv_files_import_or_name_the_line(tmp_path_factory, rows, header_ok):
    from worldmodel.data.action_files import read_actions

    d = tmp_path_factory.mktemp("csv")
    space = ActionSpace(("up", "jump"))
    head = "frame,up,jump" if header_ok else ",".join(rows[0])
    path = d / "run.csv"
    path.write_text(head + "\n" + "\n".join(",".join(r) for r in rows) + "\n")
    try:
        arr = read_actions(path, space)
    except fmt.DatasetError as e:
        assert "run.csv" in str(e)
        return
    assert arr.shape[1] == space.size


@pytest.fixture(scope="module")
def client():
    import functools

    from fastapi.testclient import TestClient

    from app.web.server import build_app
    from app.web.sessions import SessionManager
    from worldmodel import WorldSession

    small = dict(dim=48, depth=2, heads=2, window=4, ae=dict(latent_channels=4, channels=(8, 16, 16)))
    make = functools.partial(WorldSession.from_preset, "tiny", seed=0, device="cpu", config_changes=small)
    m = SessionManager({"small": make}, max_sessions=64)
    c = TestClient(build_app(m))
    yield c, c.post("/api/open", json={}).json()["session"]
    m.shutdown()


@settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.sampled_from(["open", "step", "reset", "close"]), st.one_of(values, st.binary(max_size=64)))
def test_web_requests_are_answered_never_a_server_error(client, endpoint, body):
    c, sid = client
    if isinstance(body, bytes):
        r = c.post(f"/api/{endpoint}", content=body)
    else:
        if isinstance(body, dict) and endpoint != "open":
            body = {"session": sid, **body}
        r = c.post(f"/api/{endpoint}", content=json.dumps(body, allow_nan=True))
    assert r.status_code in (200, 400, 404, 409, 413, 503), (r.status_code, r.text)
    assert "error" in r.json() or r.status_code == 200
