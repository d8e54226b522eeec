import numpy as np

from worldmodel.games.noise import fbm, hash_int, hash_u64, hash_unit, unit_int, value_noise


def test_scalar_and_array_hash_agree():
    xs = np.array([-5, -1, 0, 1, 7, 2**40])
    arr = hash_u64(xs, 3, -9)
    assert [hash_int(int(x), 3, -9) for x in xs] == [int(v) for v in arr]
    assert abs(unit_int(4, 5) - float(hash_unit(4, 5))) < 1e-15


def test_hash_spreads_bits():
    h = hash_unit(np.arange(20000), 1)
    assert 0.48 < h.mean() < 0.52
    assert len(np.unique(hash_u64(np.arange(1000), 0))) == 1000


def test_value_noise_is_smooth_and_bounded():
    x = np.linspace(0, 50, 2001)
    n = value_noise(x, np.zeros_like(x), 8.0, seed=1, salt=2)
    assert n.min() >= -1 and n.max() <= 1
    assert np.abs(np.diff(n)).max() < 0.05  # continuous at this sampling step
    f = fbm(x, x, 16.0, 1, 3)
    assert np.all(np.abs(f) <= 1)
