"""Reliability: a bad-input corpus for every method and the CLI, cancellation, isolation.

Every input either raises a specific exception with a helpful message or gives
a correct result (a constant image stays constant, a big-endian array gives
the native result, ...); the input array is never modified.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading

import numpy as np
import pytest
import tifffile
import torch

from napari_ntd import denoise_ntd, iter_denoise_ntd
from napari_ntd._dip._trainers import DIPTrainer
from napari_ntd._engine._tiling import MemoryBudgetError
from napari_ntd._ui._cli import main

#: Fast settings per method (tiny networks, two iterations; the guided default
#: keeps n_iter="auto", its SURE run over t = 0 and the twicing grid).
FAST = {
    "guided": {"n_columns": 64, "seed": 0},
    "nystrom": {"n_columns": 64, "n_iter": 2, "seed": 0},
    "exact": {"n_iter": 2, "seed": 0},
    "dip": {"width": 4, "n_iter": 2, "seed": 0},
}
METHODS = tuple(FAST)
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).random(shape)


def _with(img, **values):
    img = img.copy()
    for key, val in values.items():
        img[tuple(int(c) for c in key.split("_"))] = val
    return img


def _ids(cases):
    return [c.values[0] if hasattr(c, "values") else c[0] for c in cases]


def _readonly(img):
    img.flags.writeable = False
    return img


# (id, image factory, extra kwargs, exception, message fragment)
BAD = [
    ("all-nan", lambda: np.full((16, 16), np.nan), {}, ValueError, "NaN"),
    ("one-nan", lambda: _with(_rand(16, 16), **{"3_4": np.nan}), {}, ValueError, "NaN"),
    ("nan-float32", lambda: _rand(16, 16).astype(np.float32) * np.nan, {}, ValueError, "NaN"),
    ("+inf", lambda: _with(_rand(16, 16), **{"0_0": np.inf}), {}, ValueError, "infinite"),
    ("-inf", lambda: _with(_rand(16, 16), **{"15_15": -np.inf}), {}, ValueError, "infinite"),
    ("empty-rows", lambda: np.zeros((0, 24)), {}, ValueError, "empty"),
    ("empty-2d", lambda: np.zeros((0, 0)), {}, ValueError, "empty"),
    ("empty-list", lambda: [], {}, ValueError, "empty"),
    ("one-pixel", lambda: np.ones((1, 1)), {}, ValueError, "smaller than the patch"),
    ("thin", lambda: _rand(8, 30), {}, ValueError, "smaller than the patch"),
    ("smaller-than-patch", lambda: _rand(16, 16), {"patch_size": 25}, ValueError, "patch"),
    ("1d", lambda: _rand(30), {}, NotImplementedError, "2D"),
    ("0d", lambda: np.array(0.5), {}, NotImplementedError, "2D"),
    ("5d-rgb-no-axis", lambda: _rand(1, 2, 16, 16, 3), {}, NotImplementedError, "channel_axis"),
    ("complex128", lambda: _rand(16, 16) + 1j, {}, TypeError, "complex"),
    ("complex64", lambda: (_rand(16, 16) + 1j).astype(np.complex64), {}, TypeError, "complex"),
    ("object", lambda: np.empty((16, 16), object), {}, TypeError, "numeric"),
    ("object-floats", lambda: _rand(16, 16).astype(object), {}, TypeError, "numeric"),
    ("strings", lambda: np.full((16, 16), "a"), {}, TypeError, "numeric"),
    ("none", lambda: None, {}, TypeError, "numeric"),
    ("ragged-list", lambda: [[0.1, 0.2], [0.3]], {}, ValueError, "inhomogeneous"),
    ("datetime", lambda: np.zeros((16, 16), "datetime64[s]"), {}, TypeError, "numeric"),
    ("channel-axis-out", lambda: _rand(16, 16, 3), {"channel_axis": 3}, ValueError, "channel_axis"),
    ("channel-axis-neg", lambda: _rand(16, 16, 3), {"channel_axis": -4}, ValueError, "channel"),
    ("channel-axis-float", lambda: _rand(16, 16, 3), {"channel_axis": 2.0}, ValueError, "channel"),
    ("channel-axis-2d", lambda: _rand(16, 16), {"channel_axis": -1}, NotImplementedError, "ndim"),
    ("channel-axis-wrong", lambda: _rand(3, 16, 16), {"channel_axis": 1}, ValueError, "patch"),
    ("sigma-negative", lambda: _rand(16, 16), {"sigma": -0.1}, ValueError, "sigma"),
    ("sigma-nan", lambda: _rand(16, 16), {"sigma": float("nan")}, ValueError, "sigma"),
    ("sigma-inf", lambda: _rand(16, 16), {"sigma": float("inf")}, ValueError, "sigma"),
    ("sigma-str", lambda: _rand(16, 16), {"sigma": "0.1"}, TypeError, "sigma"),
    ("sigma-bool", lambda: _rand(16, 16), {"sigma": True}, TypeError, "sigma"),
    ("unknown-method", lambda: _rand(16, 16), {"method": "bm3d"}, ValueError, "unknown method"),
    ("method-none", lambda: _rand(16, 16), {"method": "none"}, ValueError, "unknown method"),
    ("unknown-option", lambda: _rand(16, 16), {"n_iters": 3}, TypeError, "unexpected keyword"),
    ("n-iter-zero", lambda: _rand(16, 16), {"n_iter": 0}, ValueError, "n_iter"),
    ("n-iter-float", lambda: _rand(16, 16), {"n_iter": 2.5}, ValueError, "n_iter"),
    ("patch-even", lambda: _rand(16, 16), {"patch_size": 4}, ValueError, "patch_size"),
    ("seed-float", lambda: _rand(16, 16), {"seed": 1.5}, TypeError, "seed"),
    ("max-memory-text", lambda: _rand(16, 16), {"max_memory": "lots"}, ValueError, "max_memory"),
    ("max-memory-neg", lambda: _rand(16, 16), {"max_memory": -1}, ValueError, "max_memory"),
    ("max-memory-tiny", lambda: _rand(16, 16), {"max_memory": 1000}, MemoryBudgetError, "needs"),
    ("tile-too-small", lambda: _rand(16, 16), {"tile_shape": 5}, ValueError, "too small"),
    ("tile-wrong-len", lambda: _rand(16, 16), {"tile_shape": (64,) * 3}, ValueError, "axis"),
    ("noise-model", lambda: _rand(16, 16), {"noise_model": "laplace"}, ValueError, "noise_model"),
    ("sigma-poisson", lambda: _rand(16, 16), {"noise_model": "poisson", "sigma": 0.1}, ValueError,
     "sigma applies"),
    ("spatial-dims", lambda: _rand(16, 16), {"spatial_dims": 4}, ValueError, "spatial_dims"),
    ("progress", lambda: _rand(16, 16), {"progress": 3}, TypeError, "progress"),
    ("device-unknown", lambda: _rand(16, 16), {"device": "tpu"}, ValueError, "invalid device"),
    pytest.param("device-cuda", lambda: _rand(16, 16), {"device": "cuda"}, ValueError,
                 "CUDA is not available", marks=NO_CUDA),
    pytest.param("device-cuda1", lambda: _rand(16, 16), {"device": "cuda:1"}, ValueError,
                 "CUDA is not available", marks=NO_CUDA),
]  # fmt: skip


def _snapshot(image):
    if isinstance(image, np.ndarray):
        return image.copy(), image.flags.writeable
    return None, None


def _assert_untouched(image, snap):
    copy, writeable = snap
    if copy is None:
        return
    assert image.dtype == copy.dtype and image.shape == copy.shape
    if image.dtype.kind in "fc":
        np.testing.assert_array_equal(image, copy)  # NaN == NaN here
    elif image.dtype.kind != "O":
        assert np.array_equal(image, copy)
    assert image.flags.writeable == writeable


#: (case, method) of ``BAD`` that the method accepts: it must then give a result.
ACCEPTED = {("n-iter-zero", "guided")}  # n_iter=0: the guided method's pilot alone


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("name", "make", "kwargs", "exc", "match"), BAD, ids=_ids(BAD))
def test_bad_input_raises(method, name, make, kwargs, exc, match):
    image = make()
    snap = _snapshot(image)
    options = {**FAST[method], "method": method, **kwargs}
    if (name, method) in ACCEPTED:
        out = denoise_ntd(image, **options)
        assert out.shape == np.shape(image) and np.isfinite(out).all()
    else:
        with pytest.raises(exc, match=match):
            denoise_ntd(image, **options)
    _assert_untouched(image, snap)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"architecture": "resnet"}, ValueError, "unknown architecture"),
        ({"optimizer": "sgd"}, ValueError, "unknown optimizer"),
        ({"input": "zeros"}, ValueError, "unknown input"),
        ({"width": 0}, ValueError, "width"),
        ({"lr": -1.0}, ValueError, "lr"),
        ({"lr": float("nan")}, ValueError, "lr"),
        ({"lr": "fast"}, TypeError, "lr"),
    ],
)
def test_bad_dip_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        denoise_ntd(_rand(16, 16), **{**FAST["dip"], "method": "dip", **kwargs})


def test_method_specific_limits():
    with pytest.raises(ValueError, match=r"method='exact'.*limited"):
        denoise_ntd(_rand(65, 64), method="exact")
    with pytest.raises(NotImplementedError, match="spatial_dims=3"):
        denoise_ntd(_rand(12, 16, 16), method="exact", spatial_dims=3)
    with pytest.raises(NotImplementedError, match="spatial_dims=3"):
        denoise_ntd(_rand(12, 16, 16), method="dip", spatial_dims=3)


# --- valid but unusual input: a correct result -------------------------------


def _const(out, img, value, dtype):
    assert out.dtype == dtype
    assert np.all(out == value)


def _close_mean(out, img, rel=0.15):
    ref = np.asarray(img, np.float64)
    out = out.astype(np.float64)  # a float32 mean near the float32 maximum overflows
    spread = ref.max() - ref.min()
    assert abs(out.mean() - ref.mean()) <= rel * spread
    assert out.min() >= ref.min() - spread and out.max() <= ref.max() + spread


def _float64_in_unit(out, img):
    assert out.dtype == np.float64
    assert -0.5 < out.min() and out.max() < 1.5


# (id, image factory, extra kwargs, check(out, image))
VALID = [
    ("constant-float64", lambda: np.full((16, 16), 0.3), {},
     lambda o, i: _const(o, i, 0.3, np.float64)),
    ("constant-float32", lambda: np.full((16, 16), 0.7, np.float32), {},
     lambda o, i: _const(o, i, np.float32(0.7), np.float32)),
    ("constant-uint16", lambda: np.full((16, 16), 7, np.uint16), {},
     lambda o, i: _const(o, i, 7 / 65535, np.float64)),
    ("constant-with-sigma", lambda: np.zeros((16, 16)), {"sigma": 0.1},
     lambda o, i: _const(o, i, 0.0, np.float64)),
    ("constant-huge", lambda: np.full((16, 16), 3e38, np.float32), {},
     lambda o, i: _const(o, i, np.float32(3e38), np.float32)),
    ("constant-rgb", lambda: np.full((16, 16, 3), 0.2), {"channel_axis": -1},
     lambda o, i: _const(o, i, 0.2, np.float64)),
    ("bool", lambda: _rand(16, 16) > 0.5, {}, _float64_in_unit),
    ("uint8", lambda: (_rand(16, 16) * 255).astype(np.uint8), {}, _float64_in_unit),
    ("int8", lambda: (_rand(16, 16) * 255 - 128).astype(np.int8), {},
     lambda o, i: _close_mean(o, i.astype(float) / 127, rel=0.2)),
    ("uint16-near-max", lambda: (65535 - _rand(16, 16) * 40).astype(np.uint16), {},
     lambda o, i: _close_mean(o, i / 65535)),
    ("uint16-preserve", lambda: (65535 - _rand(16, 16) * 40).astype(np.uint16),
     {"preserve_range": True}, lambda o, i: _close_mean(o, i)),
    ("float-large", lambda: 1000 + 50 * _rand(16, 16), {}, _close_mean),
    ("float-negative", lambda: -5 - _rand(16, 16), {}, _close_mean),
    ("float32-1e30", lambda: (1e30 * _rand(16, 16)).astype(np.float32), {}, _close_mean),
    ("float32-near-max", lambda: (3e38 * (2 * _rand(16, 16) - 1)).astype(np.float32), {},
     _close_mean),
    ("float64-1e200", lambda: 1e200 * _rand(16, 16), {}, _close_mean),
    ("float64-1e-300", lambda: 1e-300 * _rand(16, 16), {}, _close_mean),
    ("float16", lambda: _rand(16, 16).astype(np.float16), {},
     lambda o, i: (o.dtype == np.float32) and _close_mean(o, i)),
    ("nested-list", lambda: _rand(16, 16).tolist(), {}, _float64_in_unit),
    ("5d-stack", lambda: _rand(1, 2, 1, 16, 16), {}, _float64_in_unit),
    ("4-channels", lambda: _rand(16, 16, 4), {"channel_axis": -1}, _float64_in_unit),
    ("2-channels-first", lambda: _rand(2, 16, 16), {"channel_axis": 0}, _float64_in_unit),
    ("channels-middle", lambda: _rand(16, 3, 16), {"channel_axis": 1}, _float64_in_unit),
    ("sigma-zero", lambda: _rand(16, 16), {"sigma": 0.0}, _float64_in_unit),
    ("sigma-huge", lambda: _rand(16, 16), {"sigma": 1e6}, _float64_in_unit),
    ("n-iter-numpy-int", lambda: _rand(16, 16), {"n_iter": np.int64(2)}, _float64_in_unit),
]  # fmt: skip


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("name", "make", "kwargs", "check"), VALID, ids=_ids(VALID))
def test_valid_unusual_input(method, name, make, kwargs, check):
    image = make()
    snap = _snapshot(image)
    out = denoise_ntd(image, **{**FAST[method], "method": method, **kwargs})
    assert out.shape == np.shape(image)
    assert np.isfinite(out).all()
    assert out.dtype.isnative
    check(out, image)
    _assert_untouched(image, snap)


# layout variants must give exactly the result of the plain C-contiguous array
LAYOUTS = [
    ("read-only", lambda a: _readonly(a.copy())),
    ("transposed", lambda a: np.ascontiguousarray(a.T).T),
    ("strided", lambda a: np.repeat(np.repeat(a, 2, 0), 2, 1)[::2, ::2]),
    ("fortran", np.asfortranarray),
    ("big-endian-f8", lambda a: a.astype(">f8")),
    ("list", lambda a: a.tolist()),
    ("tensor", torch.from_numpy),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("name", "layout"), LAYOUTS, ids=[n for n, _ in LAYOUTS])
def test_layout_does_not_change_the_result(method, name, layout):
    base = _rand(16, 16, seed=3)
    expected = denoise_ntd(base, method=method, **FAST[method])
    image = layout(base.copy())
    snap = _snapshot(image)
    out = denoise_ntd(image, method=method, **FAST[method])
    assert out.dtype == np.float64 and out.dtype.isnative
    np.testing.assert_array_equal(out, expected)
    _assert_untouched(image, snap)


@pytest.mark.parametrize(
    ("be", "native", "out_dtype"),
    [
        (">u2", np.uint16, np.float64),
        (">f4", np.float32, np.float32),
        (">i2", np.int16, np.float64),
    ],
)
def test_big_endian_equals_native(be, native, out_dtype):
    base = (_rand(16, 16) * 1000).astype(native)
    ref = denoise_ntd(base, **FAST["nystrom"])
    out = denoise_ntd(base.astype(be), **FAST["nystrom"])
    assert out.dtype == out_dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, ref)


def test_constant_channel_does_not_break_sigma_estimate():
    # estimate_sigma gives NaN for a constant channel; it used to reach MC-SURE
    img = np.zeros((11, 11, 2), bool)
    img[[4, 8, 10], [4, 8, 10], 0] = True
    for method in METHODS:
        opts = {**FAST[method], "n_iter": "auto"} if method == "nystrom" else FAST[method]
        out = denoise_ntd(img, method=method, channel_axis=-1, patch_size=3, **opts)
        assert np.isfinite(out).all() and out.shape == img.shape


def test_diverging_gradient_descent_raises_instead_of_nan():
    w = 15  # a low-contrast step, a width-4 U-Net: 1 / lambda_max is far too large
    img = np.where(np.arange(w) < w // 2, 4, 3) * np.ones((11, 1))
    img = np.repeat(img[..., None], 2, -1).astype(np.uint8)
    kw = {"method": "dip", "channel_axis": -1, "patch_size": 5, "width": 4, "seed": 0}
    with pytest.raises(FloatingPointError, match=r"diverged.*smaller lr"):
        denoise_ntd(img, optimizer="gd", n_iter=3, **kw)
    out = denoise_ntd(img, optimizer="gd", n_iter=3, lr=1.0, **kw)
    assert np.isfinite(out).all()


# --- cancellation and isolation -------------------------------------------------


def test_trainer_stops_within_one_step():
    y = torch.tensor(_rand(3, 16, 16) - 0.5, dtype=torch.float32)
    trainer = DIPTrainer(y, sigma=0.1, width=4, max_iter=50, seed=0)
    after = []
    for step in trainer:
        if after or step.iteration == 3:
            after.append(step.iteration)
            trainer.request_stop()
    assert after == [3]  # no step after the one that asked to stop
    # at most the update that was running when the stop was requested
    assert trainer.result.stopped and trainer.result.n_updates <= 3 + 1


def test_closing_the_step_generator_stops_and_leaves_input():
    image = _rand(16, 16)
    snap = _snapshot(image)
    for method in METHODS:
        gen = iter_denoise_ntd(image, method=method, **{**FAST[method], "n_iter": 50})
        steps = [next(gen) for _ in range(2)]
        assert all(done < total for done, total in steps)
        gen.close()
        with pytest.raises(StopIteration):
            next(gen)
    _assert_untouched(image, snap)


def test_interleaved_trainers_do_not_interfere():
    ya = torch.tensor(_rand(1, 16, 16, seed=1) - 0.5, dtype=torch.float32)
    yb = torch.tensor(_rand(1, 16, 16, seed=2) - 0.5, dtype=torch.float32)
    alone = DIPTrainer(yb, sigma=0.1, width=4, n_iter=6, seed=5).run()
    a = DIPTrainer(ya, sigma=0.1, width=4, n_iter=6, seed=4)
    b = DIPTrainer(yb, sigma=0.1, width=4, n_iter=6, seed=5)
    ia, ib = iter(a), iter(b)
    next(ia)
    a.request_stop()  # stopping one run must not stop the other
    for _ in ia:
        pass
    for _ in ib:
        pass
    assert a.result.stopped and not b.result.stopped
    assert torch.equal(b.result.estimate, alone)


@pytest.mark.parametrize("method", ["guided", "nystrom"])
def test_concurrent_threads_match_sequential_runs(method):
    images = [_rand(16, 16, seed=s) for s in (7, 8)]
    options = {**FAST[method], "method": method}
    expected = [denoise_ntd(im, **options) for im in images]
    results: dict[int, np.ndarray] = {}

    def work(k):
        results[k] = denoise_ntd(images[k], **options)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(2):
        np.testing.assert_array_equal(results[k], expected[k])


# --- CLI --------------------------------------------------------------------------

CLI_FAST = ["--patch-size", "5", "--n-columns", "64", "--n-iter", "2", "--seed", "0", "--quiet"]


def _files(path):
    return sorted(p.name for p in path.iterdir())


# (id, array written to in.tif or raw bytes, extra args, exit code, stderr fragment)
CLI_BAD = [
    ("nan", np.full((16, 16), np.nan, np.float32), [], 1, "NaN"),
    ("inf", _with(_rand(16, 16), **{"1_1": np.inf}), [], 1, "infinite"),
    ("complex", _rand(16, 16) + 1j, [], 1, "complex"),
    ("1d", _rand(30), [], 1, "2D"),
    ("one-pixel", np.ones((1, 1), np.float32), [], 1, "smaller than the patch"),
    ("thin", _rand(3, 30), [], 1, "smaller than the patch"),
    ("rgb-no-axis", _rand(1, 16, 16, 3), [], 1, "--channel-axis"),
    ("corrupt", b"II*\x00garbage", [], 1, "in.tif"),
    ("empty-file", b"", [], 1, "in.tif"),
    ("method", _rand(16, 16), ["--method", "bm3d"], 2, "invalid choice: 'bm3d'"),
    ("sigma-neg", _rand(16, 16), ["--sigma", "-1"], 2, "sigma"),
    ("sigma-nan", _rand(16, 16), ["--sigma", "nan"], 2, "sigma"),
    ("channel-axis", _rand(16, 16, 3), ["--channel-axis", "5"], 1, "--channel-axis"),
    ("max-memory-text", _rand(16, 16), ["--max-memory", "lots"], 2, "--max-memory"),
    ("max-memory-tiny", _rand(16, 16), ["--max-memory", "1000"], 1, "--max-memory="),
    ("tile-small", _rand(16, 16), ["--tile", "3"], 2, "too small"),
    ("gain-without-poisson", _rand(16, 16), ["--gain", "2"], 2, "--gain"),
    pytest.param("cuda", _rand(16, 16), ["--device", "cuda"], 2, "CUDA is not available",
                 marks=NO_CUDA),
]  # fmt: skip


@pytest.mark.parametrize(("name", "data", "extra", "code", "match"), CLI_BAD, ids=_ids(CLI_BAD))
def test_cli_bad_input(tmp_path, capsys, name, data, extra, code, match):
    src = tmp_path / "in.tif"
    if isinstance(data, bytes):
        src.write_bytes(data)
    else:
        tifffile.imwrite(src, data)
    dst = tmp_path / "out.tif"
    try:
        status = main(["denoise", str(src), str(dst), *CLI_FAST, *extra])
    except SystemExit as stop:  # argparse's own usage errors
        status = stop.code
    assert status == code
    err = capsys.readouterr().err
    assert match in err
    if code == 2:  # a usage error: one message, no internal names
        message = err.split("error:")[1]
        assert err.count("error:") == 1 and not re.search(r"\b_?[a-z]+_[a-z_]+\b", message)
    assert _files(tmp_path) == ["in.tif"]  # no output, no temporary file


@pytest.mark.parametrize(
    "argv",
    [["--tile", "abc"], ["--n-iter", "many"], ["--bogus"], ["--spatial-dims", "4"]],
)
def test_cli_bad_arguments_exit_2(tmp_path, capsys, argv):
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, _rand(16, 16))
    with pytest.raises(SystemExit) as info:
        main(["denoise", str(src), str(tmp_path / "out.tif"), *argv])
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err
    assert _files(tmp_path) == ["in.tif"]


@pytest.mark.parametrize(
    ("name", "data", "check"),
    [
        ("constant", np.full((16, 16), 1234, np.uint16), lambda o, i: np.all(o == 1234)),
        ("uint16-near-max", (65535 - _rand(16, 16) * 40).astype(np.uint16),
         lambda o, i: abs(o.mean() - i.mean()) < 20 and o.max() < 65600),
        ("float-large", 1e4 + 100 * _rand(16, 16), lambda o, i: abs(o.mean() - i.mean()) < 10),
        ("big-endian", (_rand(16, 16) * 1000).astype(">u2"), lambda o, i: o.dtype.isnative),
        ("bool", _rand(16, 16) > 0.5, lambda o, i: 0 <= o.min() and o.max() <= 1),
        ("5d", _rand(1, 1, 2, 16, 16).astype(np.float32), lambda o, i: o.shape == i.shape),
    ],
)  # fmt: skip
def test_cli_valid_unusual_files(tmp_path, name, data, check):
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, data, byteorder=">" if name == "big-endian" else None)
    dst = tmp_path / "out.tif"
    assert main(["denoise", str(src), str(dst), *CLI_FAST]) == 0
    out = tifffile.imread(dst)
    assert out.shape == data.shape and np.isfinite(out).all()
    assert check(out, data)
    np.testing.assert_array_equal(tifffile.imread(src), data)


@pytest.fixture
def batch(tmp_path):
    """a_good.tif, b_bad.tif (NaN), c_good.tif in ``in/``."""
    src = tmp_path / "in"
    src.mkdir()
    tifffile.imwrite(src / "a_good.tif", _rand(16, 16, seed=1))
    tifffile.imwrite(src / "b_bad.tif", np.full((16, 16), np.nan))
    tifffile.imwrite(src / "c_good.tif", _rand(16, 16, seed=2))
    return src


def test_cli_batch_continues_past_a_failure(batch, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["denoise", str(batch), str(out), *CLI_FAST]) == 1
    err = capsys.readouterr().err
    assert "b_bad.tif" in err and "NaN" in err and "1 of 3 files failed" in err
    assert _files(out) == ["a_good.tif", "c_good.tif"]
    single = tmp_path / "single.tif"
    assert main(["denoise", str(batch / "a_good.tif"), str(single), *CLI_FAST]) == 0
    np.testing.assert_array_equal(tifffile.imread(out / "a_good.tif"), tifffile.imread(single))


def test_cli_batch_stops_on_error_when_asked(batch, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["denoise", str(batch), str(out), "--stop-on-error", *CLI_FAST]) == 1
    err = capsys.readouterr().err
    assert "b_bad.tif" in err and "stopping (1 files not processed)" in err
    assert _files(out) == ["a_good.tif"]  # written before the failure, intact
    assert np.isfinite(tifffile.imread(out / "a_good.tif")).all()


def test_cli_unexpected_error_is_reported_and_batch_goes_on(batch, tmp_path, capsys, monkeypatch):
    import napari_ntd as den

    real = den.denoise_ntd
    calls = []

    def flaky(image, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("simulated crash")
        return real(image, **kw)

    monkeypatch.setattr(den, "denoise_ntd", flaky)
    (batch / "b_bad.tif").unlink()
    out = tmp_path / "out"
    assert main(["denoise", str(batch), str(out), *CLI_FAST]) == 1
    assert "RuntimeError: simulated crash" in capsys.readouterr().err
    assert _files(out) == ["c_good.tif"]


def test_cli_failed_write_leaves_no_partial_file_and_keeps_old_output(
    batch, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "c_good.tif").write_bytes(b"previous result")
    real = tifffile.imwrite

    def dying_write(path, data, **kw):
        if "c_good" in str(path):
            with open(path, "wb") as fh:
                fh.write(b"partial")
            raise OSError("disk full")
        return real(path, data, **kw)

    monkeypatch.setattr(tifffile, "imwrite", dying_write)
    (batch / "b_bad.tif").unlink()
    assert main(["denoise", str(batch), str(out), "--overwrite", *CLI_FAST]) == 1
    assert "disk full" in capsys.readouterr().err
    assert _files(out) == ["a_good.tif", "c_good.tif"]  # no temporary leftovers
    assert (out / "c_good.tif").read_bytes() == b"previous result"

    def interrupted(path, data, **kw):
        with open(path, "wb") as fh:
            fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(tifffile, "imwrite", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["denoise", str(batch), str(tmp_path / "out2"), *CLI_FAST])
    assert _files(tmp_path / "out2") == []


def test_console_script_reports_failure_without_traceback(tmp_path):
    src = tmp_path / "nan.tif"
    tifffile.imwrite(src, np.full((16, 16), np.nan))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "napari_ntd",
            "denoise",
            str(src),
            str(tmp_path / "o.tif"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "NaN" in proc.stderr and "Traceback" not in proc.stderr
    assert _files(tmp_path) == ["nan.tif"]
