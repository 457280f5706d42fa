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
    def push(dec, a, b):
        rows = dec.rows(t[a:b])
        dec.push(t[a:b], i[a:b], rows, {"/cells/voltage": v[a:b][rows]})

    one = _Decimator(0.1)
    push(one, 0, len(t))
    ref = one.finish()
    # cuts inside a bin, on a bin's last sample, one-sample chunks, a whole bin in one chunk
    on_edge = int(output_rows(t, 0.1)[7]) + 1
    for cuts in ([1], [2500], [10, 11, 12, 4000, 4999], [on_edge], list(range(100, 140))):
        dec = _Decimator(0.1)
        for a, b in zip([0, *cuts], [*cuts, len(t)]):
            push(dec, a, b)
        got = dec.finish()
        for k in ref:
            np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-12, err_msg=k)
    # every sample kept when dt is 0
    keep = _Decimator(0.0)
    push(keep, 0, 300)
    push(keep, 300, len(t))
    got = keep.finish()
    np.testing.assert_array_equal(got["/time"], t)
    np.testing.assert_array_equal(got["/pack/current"], i)
    np.testing.assert_array_equal(got["/cells/voltage"], v)
    rows = output_rows(t, 0.1)
    np.testing.assert_array_equal(ref["/time"], t[rows])
    hold = np.diff(t, append=t[-1])
    np.testing.assert_allclose(ref["/pack/current"], bin_mean(i, hold, rows))
    # charge is preserved
    starts = np.concatenate(([0], rows[:-1] + 1))
    edges = np.concatenate((t[starts], [t[-1]]))
    assert np.sum(ref["/pack/current"] * np.diff(edges)) == pytest.approx(np.sum(i[:-1] *
                                                                                 np.diff(t)))


def test_streaming_smoother_equals_one_chunk(tmp_path):
    """The smoother streams its forward pass chunk by chunk; its backward pass over the
    records gives the whole-drive smoother's numbers, written or kept in memory."""
    one = analyze(LOG, DBC, LAYOUT, method="smoother", chunk_frames=10_000_000)
    out = tmp_path / "s.h5"
    chunked = analyze(LOG, DBC, LAYOUT, method="smoother", chunk_frames=23_000, out=out)
    assert one.method == chunked.method == "smoother"
    a, b = one.result, chunked.result
    assert set(a.datasets) == set(b.datasets)
    np.testing.assert_array_equal(a["/time"], b["/time"])
    settled = a["/time"] > 5.0
    for key in ("/cells/soc", "/cells/soc_std", "/pack/soc", "/pack/soc_min"):
        assert len(a[key]) == len(a["/time"])
        np.testing.assert_allclose(a[key][settled], b[key][settled], rtol=0, atol=2e-6,
                                   err_msg=key)          # float32 in the file
    np.testing.assert_allclose(a["/balancing/soc"], b["/balancing/soc"], atol=1e-6)
    assert one.stats["running"].soc_start == pytest.approx(chunked.stats["running"].soc_start,
                                                           abs=1e-9)


def test_auto_falls_back_to_ekf_past_its_limit(whole):
    """Past whole_drive_cell_samples, auto goes on as the EKF: the rows smoothed so far are
    sent as filtered, so the result is the streaming EKF's."""
    fell = analyze(LOG, DBC, LAYOUT, method="auto", chunk_frames=37_000,
                   whole_drive_cell_samples=2_000_000)
    assert fell.method == "ekf"
    a, b = whole.result, fell.result
    np.testing.assert_array_equal(a["/time"], b["/time"])
    settled = a["/time"] > 5.0
    for key in ("/cells/soc", "/cells/soc_std", "/pack/soc"):
        np.testing.assert_allclose(a[key][settled], b[key][settled], rtol=0, atol=1e-9,
                                   err_msg=key)
    smooth = analyze(LOG, DBC, LAYOUT, method="auto", chunk_frames=37_000)
    assert smooth.method == "smoother"
    # the smoother differs from the filter (it is not the EKF's output relabelled)
    assert np.abs(smooth.result["/cells/soc"] - a["/cells/soc"]).max() > 1e-3


@pytest.mark.parametrize("limit", ["AUTO_WHOLE_DRIVE_CELL_SAMPLES", "AUTO_HELD_BYTES"])
def test_auto_limits_are_read_at_call_time(whole, monkeypatch, limit):
    """Both of auto's limits (cell-samples, and bytes of filtered rows held for the fallback,
    which output_dt_s=0 makes ten times bigger) can be set on the module; past either, auto
    goes on as the EKF with each row stored once."""
    from packbms import analysis

    monkeypatch.setattr(analysis, limit, {"AUTO_WHOLE_DRIVE_CELL_SAMPLES": 2_000_000,
                                          "AUTO_HELD_BYTES": 2 << 20}[limit])
    fell = analyze(LOG, DBC, LAYOUT, method="auto", chunk_frames=37_000)
    assert fell.method == "ekf" and fell.stats["requested_method"] == "auto"
    a, b = whole.result, fell.result
    np.testing.assert_array_equal(a["/time"], b["/time"])
    settled = a["/time"] > 5.0
    np.testing.assert_allclose(a["/cells/soc"][settled], b["/cells/soc"][settled], rtol=0,
                               atol=1e-9)
