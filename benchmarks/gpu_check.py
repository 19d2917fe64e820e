"""GPU check: the CuPy training step equals NumPy's, and how close it runs to the device's peak.

    python -m benchmarks.gpu_check            # prints everything; exits 0 without CUDA

1. Correctness: one MLP step (loss, gradients) and 5 SGD steps on CuPy vs NumPy,
   both in strict FP32 (TF32 off), within relative tolerance.
2. Throughput: the full training step (forward, backward, SGD update) at batch 8192,
   features 4096, hidden 4096, 16 classes, timed with CUDA events, in FP32 and again
   in TF32 (CUPY_TF32=1, in a child process because CuPy reads it at import).
   Achieved TFLOP/s counts the step's matmul FLOPs only (jobs.model.flops_per_step)
   and is compared with the DENSE (no-sparsity) peak of the same precision.
   Goal: >= 50 % of that peak.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

from jobs.model import ModelConfig, flops_per_step, init_params, loss_and_grads, sgd_update

# Dense peaks in TFLOP/s (NVIDIA datasheets list TF32/BF16 "with sparsity"; these are half of
# those). H100: H100 Tensor Core GPU datasheet; H200: H200 datasheet; A100: A100 datasheet.
PEAKS: dict[str, dict[str, float]] = {
    "H100 SXM": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},
    "H100 PCIe": {"fp32": 51.0, "tf32": 378.0, "bf16": 756.0},
    "H100 NVL": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5},
    "H200 SXM": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},
    "H200 NVL": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5},
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0},
}
GOAL = 0.50
BIG = {"batch": 8192, "features": 4096, "hidden": 4096, "classes": 16}


def peak_key(device_name: str) -> str | None:
    """Map a CUDA device name (e.g. 'NVIDIA H100 80GB HBM3') onto the peak table."""
    n = device_name.upper()
    for chip in ("H200", "H100"):
        if chip in n:
            if "NVL" in n:
                return f"{chip} NVL"
            if "PCIE" in n:
                return f"{chip} PCIe"
            return f"{chip} SXM"
    return "A100" if "A100" in n else None


def _cuda() -> tuple[Any, str] | str:
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "the CUDA runtime sees no device"
        props = cupy.cuda.runtime.getDeviceProperties(0)
        float(cupy.arange(4).sum())
    except Exception as e:  # no cupy, no driver, no device
        return f"{type(e).__name__}: {e}"
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return cupy, name


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def check_correctness(cupy: Any) -> bool:
    import array_api_compat.cupy as cxp
    import array_api_compat.numpy as nxp

    cfg = ModelConfig(512, 16, 1024)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2048, cfg.n_features), dtype=np.float32)
    y = rng.integers(0, cfg.n_classes, 2048)
    pn = init_params(cfg, 0)
    pc = {k: cupy.asarray(v) for k, v in pn.items()}
    Xc, yc = cupy.asarray(X), cupy.asarray(y)
    ln, _, gn = loss_and_grads(nxp, pn, X, y)
    lc, _, gc = loss_and_grads(cxp, pc, Xc, yc)
    worst = {"loss": _rel(np.asarray(float(lc)), np.asarray(float(ln)))}
    worst |= {f"grad {k}": _rel(cupy.asnumpy(gc[k]), gn[k]) for k in gn}
    for _ in range(5):
        pn = sgd_update(nxp, pn, loss_and_grads(nxp, pn, X, y)[2], 0.1)
        pc = sgd_update(cxp, pc, loss_and_grads(cxp, pc, Xc, yc)[2], 0.1)
    worst |= {f"5-step {k}": _rel(cupy.asnumpy(pc[k]), pn[k]) for k in pn}
    tol = 1e-4
    ok = all(v < tol for v in worst.values())
    print(f"correctness (FP32, batch 2048, {cfg}): {'PASS' if ok else 'FAIL'} "
          f"(max relative error {max(worst.values()):.2e}, tolerance {tol:.0e})")
    for k, v in worst.items():
        print(f"  {k:>12}: {v:.2e}")
    return ok


def time_step(cupy: Any, iters: int = 20) -> dict[str, float]:
    import array_api_compat.cupy as cxp

    cfg = ModelConfig(BIG["features"], BIG["classes"], BIG["hidden"])
    B = BIG["batch"]
    rs = cupy.random.RandomState(0)
    X = rs.standard_normal((B, cfg.n_features), dtype=cupy.float32)
    y = rs.randint(0, cfg.n_classes, B)
    p = {k: cupy.asarray(v) for k, v in init_params(cfg, 0).items()}

    def step() -> None:
        nonlocal p
        p = sgd_update(cxp, p, loss_and_grads(cxp, p, X, y)[2], 1e-3)

    for _ in range(3):
        step()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    for _ in range(iters):
        step()
    end.record()
    end.synchronize()
    secs = cupy.cuda.get_elapsed_time(start, end) / 1e3 / iters
    flops = flops_per_step(B, cfg)
    return {"step_ms": secs * 1e3, "steps_per_s": 1 / secs, "samples_per_s": B / secs,
            "tflops": flops / secs / 1e12, "gflop_per_step": flops / 1e9}


def child(mode: str) -> int:
    got = _cuda()
    if isinstance(got, str):
        print(json.dumps({"error": got}))
        return 0
    print(json.dumps({"mode": mode, **time_step(got[0])}))
    return 0


def _report(mode: str, r: dict[str, float], peaks: dict[str, float] | None) -> bool | None:
    line = (f"{mode.upper():>5}: {r['step_ms']:.2f} ms/step, {r['steps_per_s']:.1f} steps/s, "
            f"{r['samples_per_s']:,.0f} samples/s, {r['tflops']:.1f} TFLOP/s achieved")
    if peaks is None:
        print(line + " (no peak known for this device)")
        return None
    frac = r["tflops"] / peaks[mode]
    ok = frac >= GOAL
    print(line + f" = {frac:.0%} of the {peaks[mode]:.1f} TFLOP/s dense {mode.upper()} peak "
          f"-> {'PASS' if ok else 'BELOW'} the {GOAL:.0%} goal")
    return ok


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        return child(sys.argv[2])
    got = _cuda()
    if isinstance(got, str):
        print(f"gpu_check: no usable CUDA device here ({got}); nothing to check. Exit 0.")
        return 0
    cupy, name = got
    from jobs.backend import select_backend

    key = peak_key(name)
    peaks = PEAKS.get(key) if key else None
    print(f"device: {name} (CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}, "
          f"cupy {cupy.__version__}); peak table row: {key or 'unknown'}")
    if peaks:
        print("  dense peaks TFLOP/s: " + ", ".join(f"{k.upper()} {v}" for k, v in peaks.items())
              + " (BF16 listed for reference; CuPy has no bfloat16 matmul)")
    print("jobs backend here: " + select_backend().describe())
    if os.environ.get("CUPY_TF32"):
        print("note: CUPY_TF32 is set in this environment; the FP32 numbers below use TF32.")
    ok = check_correctness(cupy)
    cfg = ModelConfig(BIG["features"], BIG["classes"], BIG["hidden"])
    print(f"throughput: full SGD step, batch {BIG['batch']}, {cfg}, "
          f"{flops_per_step(BIG['batch'], cfg) / 1e9:.0f} GFLOP of matmul per step")
    t0 = time.perf_counter()
    results = {"fp32": time_step(cupy)}
    env = {**os.environ, "CUPY_TF32": "1"}
    out = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--child", "tf32"], env=env,
                         capture_output=True, text=True, timeout=600)
    try:
        results["tf32"] = json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        print(f"TF32 child failed (rc {out.returncode}): {out.stderr[-2000:]}")
    for mode, r in results.items():
        if "error" in r:
            print(f"{mode}: {r['error']}")
        else:
            _report(mode, r, peaks)
    print(f"throughput phase took {time.perf_counter() - t0:.1f}s; correctness "
          f"{'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
