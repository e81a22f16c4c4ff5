"""Speed of the default denoiser on a quiet and on a busy machine, next to its peers.

Each measurement runs in a fresh subprocess (own peak RSS; the wall time
excludes imports and the numba kernel load). Images: camera mosaics of
256^2, 512^2, 1024^2 (gray) and a 256^2 astronaut crop (RGB), Gaussian
noise sigma = 25/255, seed 0, as float32 and float64. Methods: ``ntd``
(``denoise_ntd`` defaults: the guided NTD), ``ntd-pilot`` (``n_iter=0``: its
pilot alone, to see what the NTK stage costs), ``ntd-nystrom`` (the paper's
method; slow, only with ``--nystrom``), skimage NLM (fast, h = 0.8 sigma,
5x5 patches, 13x13 window) and BM3D (``bm3d``/``bm3d_rgb``, optional).

Loads (``--loads``, issue 13), the same case measured:

* ``quiet``: alone;
* ``spinner``: beside one process that keeps one core busy (a Python loop);
* ``torch``: beside another multi-threaded torch job (matrix products and
  convolutions on all cores: the OpenMP-spinning neighbour);
* ``copy``: two copies of the same job at once (the time is their mean).

Prints, per case, the time under each load and its ratio to ``quiet``, and
writes ``results/bench_speed.md``. Also ``--dask``: a stack of 8 planes of
256^2 through ``denoise_ntd`` on a dask array (default threaded scheduler,
one plane per chunk) against a loop over the planes.

Run: ``python benchmarks/bench_speed.py`` (~15 min on 2 cores);
``--quick`` for 512^2 gray and 256^2 RGB only.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

from _common import bm3d_peer, nlm_peer, save, table

SIGMA = 25 / 255
CASES = [("camera", 256), ("camera", 512), ("camera", 1024), ("astronaut-rgb", 256)]
QUICK = [("camera", 512), ("astronaut-rgb", 256)]
LOADS = ("quiet", "spinner", "torch", "copy")

_SPINNER = "import time\nt = time.time()\nwhile time.time() - t < 900: pass\n"
_TORCH_JOB = (
    "import time, torch\n"
    "a = torch.randn(400, 400); x = torch.randn(1, 16, 96, 96); w = torch.randn(16, 16, 3, 3)\n"
    "t = time.time()\n"
    "while time.time() - t < 900:\n"
    "    a @ a; torch.nn.functional.conv2d(x, w); torch.linalg.eigh(a[:60, :60] @ a[:60, :60].T)\n"
)


def make(name: str, size: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    from skimage import data, img_as_float

    if name == "camera":
        cam = img_as_float(data.camera())
        reps = -(-size // 512)
        clean = np.tile(cam, (reps, reps))[:size, :size]
    else:
        img = img_as_float(data.astronaut())
        clean = img[128 : 128 + size, 128 : 128 + size]
    noisy = clean + SIGMA * np.random.default_rng(0).standard_normal(clean.shape)
    return clean.astype(dtype), noisy.astype(dtype)


def child(method: str, name: str, size: int, dtype: str) -> None:
    from skimage.metrics import peak_signal_noise_ratio as psnr

    clean, noisy = make(name, size, dtype)
    ch = -1 if clean.ndim == 3 else None
    if method.startswith("ntd"):
        from napari_ntd import denoise_ntd

        # load the compiled kernel, start the workers (not timed)
        denoise_ntd(noisy[:32, :32], sigma=SIGMA, seed=0, channel_axis=ch)
    t0 = time.perf_counter()
    if method == "ntd":
        out = denoise_ntd(noisy, sigma=SIGMA, seed=0, channel_axis=ch)
    elif method == "ntd-pilot":
        out = denoise_ntd(noisy, sigma=SIGMA, seed=0, channel_axis=ch, n_iter=0)
    elif method == "ntd-nystrom":
        out = denoise_ntd(noisy, sigma=SIGMA, seed=0, channel_axis=ch, method="nystrom")
    elif method == "nlm":
        out = nlm_peer(noisy, SIGMA, ch)
    else:
        out = bm3d_peer(noisy, SIGMA, ch)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # GiB
    res = {"time": dt, "rss": rss, "psnr": psnr(clean, np.clip(out, 0, 1), data_range=1)}
    print(json.dumps(res))


def dask_child(kind: str) -> None:
    """A stack of 8 planes: dask (threaded scheduler, a plane per chunk) or a loop."""
    from skimage import data, img_as_float

    from napari_ntd import denoise_ntd

    cam = img_as_float(data.camera())
    clean = np.stack([cam[i * 32 : i * 32 + 256, i * 16 : i * 16 + 256] for i in range(8)])
    noisy = (clean + SIGMA * np.random.default_rng(0).standard_normal(clean.shape)).astype(
        np.float32
    )
    denoise_ntd(noisy[0, :32, :32], sigma=SIGMA, seed=0)  # kernel load, workers (not timed)
    t0 = time.perf_counter()
    if kind == "dask":
        import dask.array as da

        out = denoise_ntd(da.from_array(noisy, chunks=(1, 256, 256)), sigma=SIGMA, seed=0)
        out = out.compute()
    else:
        out = np.stack([denoise_ntd(p, sigma=SIGMA, seed=k) for k, p in enumerate(noisy)])
    print(json.dumps({"time": time.perf_counter() - t0, "rss": 0.0, "psnr": 0.0}))


def _spawn(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"child failed:\n{err}")
    return json.loads(out.strip().splitlines()[-1])


def measure(args: list[str], load: str, repeat: int = 1) -> dict:
    """Median over ``repeat`` runs of :func:`measure_once`."""
    runs = [measure_once(args, load) for _ in range(repeat)]
    res = dict(runs[0])
    res["time"] = float(np.median([r["time"] for r in runs]))
    return res


def measure_once(args: list[str], load: str) -> dict:
    """Run one child under ``load``; returns its result (mean time for ``copy``)."""
    neighbour = None
    if load in ("spinner", "torch"):
        code = _SPINNER if load == "spinner" else _TORCH_JOB
        neighbour = subprocess.Popen([sys.executable, "-c", code])
        time.sleep(1.0)  # let it start (torch import)
    try:
        procs = [_spawn(args) for _ in range(2 if load == "copy" else 1)]
        results = [_result(p) for p in procs]
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    res = dict(results[0])
    res["time"] = float(np.mean([r["time"] for r in results]))
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loads", nargs="+", default=list(LOADS), choices=LOADS)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--quick", action="store_true", help="512^2 gray and 256^2 RGB only")
    parser.add_argument("--nystrom", action="store_true", help="also the paper's method")
    parser.add_argument("--dask", action="store_true", help="also the dask-stack case")
    parser.add_argument("--name", default="bench_speed", help="results file name")
    parser.add_argument("--repeat", type=int, default=1, help="median of this many runs")
    parser.add_argument("--methods", nargs="+", default=None, help="a subset of the methods")
    opts = parser.parse_args()

    methods = ["ntd", "ntd-pilot", "nlm"] + (["ntd-nystrom"] if opts.nystrom else [])
    try:
        import bm3d  # noqa: F401

        methods.append("bm3d")
    except ImportError:
        print("bm3d not installed: no BM3D column (pip install bm3d)")
    if opts.methods:
        methods = [m for m in methods if m in opts.methods]
    cases = QUICK if opts.quick else CASES
    rows, times = [], {}
    for name, size in cases:
        for dtype in opts.dtypes:
            for method in methods:
                args = ["--child", method, name, str(size), dtype]
                for load in opts.loads:
                    r = measure(args, load, opts.repeat)
                    times[method, name, size, dtype, load] = r["time"]
                    quiet = times.get((method, name, size, dtype, "quiet"))
                    ratio = r["time"] / quiet if quiet else float("nan")
                    rows.append(
                        [method, f"{name} {size}^2 {dtype}", load, r["time"], ratio, r["psnr"]]
                    )
                    print(rows[-1], flush=True)
    if opts.dask:
        for kind in ("loop", "dask"):
            for load in opts.loads:
                r = measure(["--dask-child", kind], load, opts.repeat)
                times[kind, load] = r["time"]
                quiet = times.get((kind, "quiet"))
                rows.append(
                    [f"stack {kind}", "8 x camera 256^2 float32", load, r["time"],
                     r["time"] / quiet if quiet else float("nan"), "-"]
                )  # fmt: skip
                print(rows[-1], flush=True)
    header = ["method", "image", "load", "time (s)", "÷ quiet", "PSNR (dB)"]
    body = table(header, rows)
    if "bm3d" in methods and "ntd" in methods:
        lines = []
        for name, size in cases:
            for dtype in opts.dtypes:
                per = [
                    f"{load} {times['ntd', name, size, dtype, load] / times['bm3d', name, size, dtype, load]:.2f}"  # noqa: E501
                    for load in opts.loads
                ]
                lines.append(f"- {name} {size}^2 {dtype}: " + ", ".join(per))
        body += "\n\nDefault NTD time ÷ BM3D time, same load, same run:\n" + "\n".join(lines)
    save(opts.name, "Speed: default NTD next to NLM and BM3D, quiet and under load", body)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    elif len(sys.argv) > 1 and sys.argv[1] == "--dask-child":
        dask_child(sys.argv[2])
    else:
        main()
