"""The backend-agnostic math: gradients, determinism, the synthetic data's ground truth."""

from __future__ import annotations

import array_api_compat.numpy as xp
import numpy as np
import pytest

from jobs.model import (
    ModelConfig,
    epoch_permutation,
    flops_per_step,
    init_params,
    loss_and_grads,
    predict_proba,
    standardizer,
)
from jobs.synthetic import SyntheticSpec, chunks, schema, teacher


def _loss(params: dict[str, np.ndarray], X: np.ndarray, y: np.ndarray) -> float:
    return float(loss_and_grads(xp, params, X, y)[0])


@pytest.mark.parametrize("hidden", [0, 5], ids=["logreg", "mlp"])
def test_gradients_match_finite_differences(hidden: int) -> None:
    rng = np.random.default_rng(1)
    cfg = ModelConfig(4, 3, hidden)
    params = {k: v.astype(np.float64) + rng.normal(0, 0.1, v.shape)
              for k, v in init_params(cfg, 7).items()}
    X = rng.normal(size=(16, 4))
    y = rng.integers(0, 3, 16)
    _, _, grads = loss_and_grads(xp, params, X, y)
    eps = 1e-6
    for name, p in params.items():
        num = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + eps
            up = _loss(params, X, y)
            p[i] = old - eps
            down = _loss(params, X, y)
            p[i] = old
            num[i] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grads[name], num, rtol=1e-5, atol=1e-8, err_msg=name)


def test_init_and_shuffle_depend_only_on_seed_and_epoch() -> None:
    cfg = ModelConfig(8, 4, 16)
    a, b = init_params(cfg, 3), init_params(cfg, 3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(init_params(cfg, 4)["W1"], a["W1"])
    assert np.array_equal(epoch_permutation(0, 2, 100), epoch_permutation(0, 2, 100))
    assert not np.array_equal(epoch_permutation(0, 2, 100), epoch_permutation(0, 3, 100))


def test_probabilities_sum_to_one_and_standardise() -> None:
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(50, 6)) * 10 + 3).astype(np.float32)
    st = standardizer(X.astype(np.float64).sum(0), (X.astype(np.float64) ** 2).sum(0), 50)
    model = {**init_params(ModelConfig(6, 3, 4), 0), **st}
    p = predict_proba(xp, model, X)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(((X - st["mu"]) / st["sigma"]).mean(0), 0, atol=1e-5)


def test_model_config_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="n_classes"):
        ModelConfig(4, 1, 0)


def test_flops_count() -> None:
    assert flops_per_step(2, ModelConfig(3, 5, 0)) == 2 * 2 * 3 * 5 * 2
    # fwd 2*B*(F*H+H*K) + bwd 2*B*(2*H*K+F*H) = 4*B*F*H + 6*B*H*K
    assert flops_per_step(10, ModelConfig(4, 2, 8)) == 4 * 10 * 4 * 8 + 6 * 10 * 8 * 2


def test_synthetic_data_is_chunked_deterministic_and_learnable() -> None:
    spec = SyntheticSpec(rows=10_000, features=8, classes=3, seed=5, chunk_rows=3_000)
    t1, t2 = teacher(spec), teacher(spec)
    a, b = list(chunks(spec, t1)), list(chunks(spec, t2))
    assert [x.num_rows for x in a] == [3000, 3000, 3000, 1000]
    assert all(x.equals(y) for x, y in zip(a, b, strict=True))
    assert a[0].schema == schema(spec)
    acc = t1.stats["teacher_correct"] / spec.rows
    assert 0.6 < acc < 0.99, acc  # noisy labels, but far above chance (1/3)
    ids = np.concatenate([x.column("id").to_numpy() for x in a])
    assert np.array_equal(ids, np.arange(10_000))
    other = next(chunks(SyntheticSpec(rows=10_000, features=8, classes=3, seed=6, chunk_rows=3_000)))
    assert not other.equals(a[0])
