"""The streaming analysis pipeline: chunked reading gives the whole-log answer."""

import numpy as np
import pytest

from packbms._data import data_dir
from packbms.analysis import _Decimator, analyze, bin_mean, output_rows

DATA = data_dir()
LOG, DBC, LAYOUT = DATA / "drive_96s.blf", DATA / "pack96.dbc", DATA / "pack96.toml"


@pytest.fixture(scope="module")
def whole():
    return analyze(LOG, DBC, LAYOUT, method="ekf", chunk_frames=10_000_000)


@pytest.mark.parametrize("method", ["ekf", "coulomb"])
def test_chunked_equals_whole(whole, method):
    ref = whole if method == "ekf" else analyze(LOG, DBC, LAYOUT, method=method,
                                                chunk_frames=10_000_000)
    chunked = analyze(LOG, DBC, LAYOUT, method=method, chunk_frames=37_000)
    a, b = ref.result, chunked.result
    assert set(a.datasets) == set(b.datasets)
    np.testing.assert_array_equal(a["/time"], b["/time"])
    np.testing.assert_allclose(a["/pack/current"], b["/pack/current"], rtol=0, atol=1e-9)
    # the stale threshold settles within the first seconds; from then on chunks agree exactly
    settled = a["/time"] > 5.0
    for key in ("/cells/voltage", "/cells/soc", "/cells/soc_std", "/pack/soc"):
        np.testing.assert_allclose(a[key][settled], b[key][settled], rtol=0, atol=1e-9,
                                   err_msg=key)
    np.testing.assert_allclose(a["/balancing/passive_bleed_ah"], b["/balancing/passive_bleed_ah"],
                               atol=1e-9)
    np.testing.assert_allclose(a["/balancing/duty"], b["/balancing/duty"], atol=1e-9)
    for key in ("/cells/voltage_min", "/cells/voltage_max", "/cells/voltage_mean"):
        np.testing.assert_allclose(a[key], b[key], atol=1e-9)
    assert ref.stats["running"].ah_out == pytest.approx(chunked.stats["running"].ah_out, rel=1e-12)


def test_decimator_chunks_equal_one_pass():
    rng = np.random.default_rng(3)
    t = np.cumsum(rng.uniform(0.001, 0.03, 5000))
    i = rng.normal(0, 50, 5000)
    v = rng.normal(3.7, 0.01, (5000, 3))
    one = _Decimator(0.1)
    one.push({"/time": t, "/pack/current": i, "/cells/voltage": v})
    ref = one.finish()
    for cuts in ([1], [2500], [10, 11, 12, 4000, 4999]):
        dec = _Decimator(0.1)
        for a, b in zip([0, *cuts], [*cuts, len(t)]):
            dec.push({"/time": t[a:b], "/pack/current": i[a:b], "/cells/voltage": v[a:b]})
        got = dec.finish()
        for k in ref:
            np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-12, err_msg=k)
    rows = output_rows(t, 0.1)
    np.testing.assert_array_equal(ref["/time"], t[rows])
    hold = np.diff(t, append=t[-1])
    np.testing.assert_allclose(ref["/pack/current"], bin_mean(i, hold, rows))
    # charge is preserved
    starts = np.concatenate(([0], rows[:-1] + 1))
    edges = np.concatenate((t[starts], [t[-1]]))
    assert np.sum(ref["/pack/current"] * np.diff(edges)) == pytest.approx(np.sum(i[:-1] *
                                                                                 np.diff(t)))
