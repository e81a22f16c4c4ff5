"""The ``napari-ntd denoise`` command on temporary files."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from skimage import data

from napari_ntd._ui._cli import build_parser, main

FAST = ["--patch-size", "5", "--n-columns", "64", "--n-iter", "3", "--seed", "0", "--quiet"]


@pytest.fixture
def tiff(tmp_path):
    clean = data.camera()[100:148, 200:248].astype(np.float64) * 200
    noisy = clean + np.random.default_rng(0).normal(0, 2000, clean.shape)
    img = np.clip(noisy, 0, 65535).astype(np.uint16)
    path = tmp_path / "cells.tif"
    tifffile.imwrite(path, img)
    return path, img


def test_uint16_tiff_to_float32(tiff, tmp_path):
    src, img = tiff
    dst = tmp_path / "out.tif"
    assert main(["denoise", str(src), str(dst), *FAST]) == 0
    out = tifffile.imread(dst)
    assert out.dtype == np.float32 and out.shape == img.shape
    # values keep the input's units (ADU), and the noise dropped
    assert 0.5 * img.mean() < out.mean() < 1.5 * img.mean()
    assert np.std(np.diff(out, axis=1)) < 0.7 * np.std(np.diff(img.astype(float), axis=1))
    assert list(tmp_path.glob(".*part*")) == []  # no temporary leftovers


def test_dtype_input_keeps_uint16(tiff, tmp_path):
    src, _ = tiff
    dst = tmp_path / "out16.tif"
    assert main(["denoise", str(src), str(dst), "--dtype", "input", *FAST]) == 0
    out = tifffile.imread(dst)
    assert out.dtype == np.uint16
    ref = tmp_path / "ref.tif"
    assert main(["denoise", str(src), str(ref), "--dtype", "float32", *FAST]) == 0
    expected = np.clip(np.rint(tifffile.imread(ref).astype(np.float64)), 0, 65535)
    assert np.abs(out.astype(np.float64) - expected).max() <= 1


def test_refuses_to_overwrite(tiff, tmp_path, capsys):
    src, img = tiff
    dst = tmp_path / "exists.tif"
    dst.write_bytes(b"keep me")
    assert main(["denoise", str(src), str(dst), *FAST]) == 2
    assert "exists" in capsys.readouterr().err
    assert dst.read_bytes() == b"keep me"
    # the input itself, too
    assert main(["denoise", str(src), str(src), *FAST]) == 2
    assert "refusing to overwrite the input" in capsys.readouterr().err
    np.testing.assert_array_equal(tifffile.imread(src), img)
    # unless asked
    assert main(["denoise", str(src), str(dst), "--overwrite", *FAST]) == 0
    assert tifffile.imread(dst).dtype == np.float32


def test_batch_folder_and_glob(tiff, tmp_path):
    _, img = tiff
    tifffile.imwrite(tmp_path / "second.tif", img[::-1])
    outdir = tmp_path / "den"
    assert main(["denoise", str(tmp_path / "*.tif"), str(outdir), *FAST]) == 0
    assert sorted(p.name for p in outdir.iterdir()) == ["cells.tif", "second.tif"]
    outdir2 = tmp_path / "den2"
    assert main(["denoise", str(tmp_path), str(outdir2), "--tile", "32", *FAST]) == 0
    assert len(list(outdir2.iterdir())) == 2


def test_png_keeps_uint8_and_poisson_option(tmp_path):
    import imageio.v3 as iio

    rng = np.random.default_rng(1)
    img = rng.poisson(data.camera()[100:148, 200:248] / 8.0).astype(np.uint8)
    src = tmp_path / "photons.png"
    iio.imwrite(src, img)
    dst = tmp_path / "out.png"
    args = ["denoise", str(src), str(dst), "--noise-model", "poisson", "--gain", "1", *FAST]
    assert main(args) == 0
    out = iio.imread(dst)
    assert out.dtype == np.uint8 and out.shape == img.shape


def test_failures_exit_nonzero_without_partial_files(tmp_path, capsys):
    src = tmp_path / "flat.tif"
    tifffile.imwrite(src, np.zeros((8, 30), np.uint16))  # smaller than the patch
    dst = tmp_path / "never.tif"
    assert main(["denoise", str(src), str(dst), "--quiet"]) == 1
    assert "smaller than the patch" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat.tif"]
    assert main(["denoise", str(tmp_path / "missing.tif"), str(dst)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["denoise", str(src), str(dst), "--gain", "2"]) == 2


def test_demo_subcommand_still_there():
    args = build_parser().parse_args(["demo", "--sigma", "10"])
    assert args.command == "demo" and args.sigma == 10


def test_options_are_checked_before_any_file_is_read(tmp_path, capsys):
    """A usage error is reported once, even for inputs that do not exist."""
    missing = [str(tmp_path / f"nope{i}.tif") for i in range(3)]
    status = main(["denoise", *missing, str(tmp_path / "out"), "--sigma", "-1"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("error:") == 1 and "sigma" in err
    assert "nope" not in err


def test_several_inputs_and_a_single_file_output_is_a_usage_error(tiff, tmp_path, capsys):
    first = tiff[0]
    other = tmp_path / "b.tif"
    other.write_bytes(first.read_bytes())
    status = main(["denoise", str(first), str(other), str(tmp_path / "out.tif")])
    err = capsys.readouterr().err
    assert status == 2 and "single file" in err and err.count("error:") == 1
    assert not (tmp_path / "out.tif").exists()


@pytest.mark.parametrize("argv", [["--n-iter", "many"], ["--n-columns", "x"], ["--tile", "a"]])
def test_bad_values_name_the_option_not_a_function(tiff, tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as stop:
        main(["denoise", str(tiff[0]), str(tmp_path / "o.tif"), *argv])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and argv[0] in err and "invalid" in err
    assert "_n_iter" not in err and "_columns" not in err and "_tile" not in err


def test_raw_counts_keep_their_units_with_the_fitted_model(tmp_path):
    from skimage import data, img_as_float

    clean = img_as_float(data.camera())[200:296, 200:296] * 20
    rng = np.random.default_rng(0)
    raw = np.clip(
        np.round(2 * rng.poisson(clean) + 100 + 6 * rng.standard_normal(clean.shape)), 0, 65535
    )
    src = tmp_path / "raw.tif"
    tifffile.imwrite(src, raw.astype(np.uint16))
    out = tmp_path / "den.tif"
    assert main(["denoise", str(src), str(out), "--quiet", "--seed", "0"]) == 0
    den = tifffile.imread(out)
    assert den.dtype == np.float32 and abs(float(np.median(den)) - np.median(2 * clean + 100)) < 5


def test_time_axis_denoises_a_time_lapse_stack(tmp_path):
    """--time-axis 0: each frame with its neighbours; the output has the input's shape."""
    from napari_ntd import denoise_ntd

    clean = data.camera()[100:152, 200:248].astype(np.float64) * 200
    frames = np.stack([clean[t : t + 48] for t in range(4)])  # drifting a pixel a frame
    noisy = frames + np.random.default_rng(0).normal(0, 2000, frames.shape)
    img = np.clip(noisy, 0, 65535).astype(np.uint16)
    src, dst = tmp_path / "movie.tif", tmp_path / "out.tif"
    tifffile.imwrite(src, img, photometric="minisblack")  # 4 frames, not RGBA
    argv = ["denoise", str(src), str(dst), "--time-axis", "0", "--sigma", "2000"]
    assert main([*argv, "--time-window", "1", "--seed", "0", "--quiet"]) == 0
    out = tifffile.imread(dst)
    assert out.dtype == np.float32 and out.shape == img.shape
    expected = denoise_ntd(img, sigma=2000, time_axis=0, time_window=1, seed=0, preserve_range=True)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-2)
    assert np.std(np.diff(out, axis=2)) < 0.7 * np.std(np.diff(img.astype(float), axis=2))


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--time-window", "1"], ["--time-window", "--time-axis"]),
        (["--time-axis", "0", "--n-iter", "auto"], ["--n-iter", "--time-axis"]),
        (["--time-axis", "0", "--method", "nystrom"], ["--time-axis", "guided"]),
        (["--time-axis", "0", "--time-window", "-1"], ["--time-window", ">= 0"]),
    ],
)
def test_time_options_are_usage_errors_before_any_file_is_read(tmp_path, capsys, argv, words):
    missing = str(tmp_path / "nope.tif")
    assert main(["denoise", missing, str(tmp_path / "out.tif"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "nope" not in err
    assert all(w in err for w in words), err
    assert "time_window" not in err and "time_axis" not in err  # the CLI's terms


def test_a_file_error_names_the_option_not_a_keyword(tiff, tmp_path, capsys):
    """An option that fits no axis of this file fails the file in the CLI's terms."""
    status = main(["denoise", str(tiff[0]), str(tmp_path / "o.tif"), "--time-axis", "5"])
    err = capsys.readouterr().err
    assert status == 1 and "cells.tif" in err and "--time-axis" in err, err
    assert "time_axis" not in err


def test_tiff_output_is_a_stack_or_colour_as_the_input(tmp_path, recwarn):
    """A 3-frame stack is written as 3 grey planes (tifffile would guess RGB);
    a colour picture as RGB samples."""
    rng = np.random.default_rng(0)
    stack = (rng.random((3, 40, 40)) * 60000).astype(np.uint16)
    src, dst = tmp_path / "stack.tif", tmp_path / "out.tif"
    tifffile.imwrite(src, stack, photometric="minisblack")
    assert main(["denoise", str(src), str(dst), *FAST]) == 0
    with tifffile.TiffFile(dst) as tif:
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.MINISBLACK
        assert tif.asarray().shape == stack.shape
    rgb = (rng.random((40, 40, 3)) * 255).astype(np.uint8)
    src, dst = tmp_path / "rgb.tif", tmp_path / "rgb_out.tif"
    tifffile.imwrite(src, rgb, photometric="rgb")
    assert main(["denoise", str(src), str(dst), "--channel-axis", "-1", *FAST]) == 0
    with tifffile.TiffFile(dst) as tif:
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.RGB
        assert tif.asarray().shape == rgb.shape
    assert not [w for w in recwarn if "RGB" in str(w.message)]
