import numpy as np
import pytest

from synthmed.errors import UserError
from synthmed.metrics.memorisation import memorisation_audit
from synthmed.metrics.prdc import precision_recall_density_coverage


def test_prdc_on_identical_distributions_is_high():
    rng = np.random.default_rng(0)
    r = precision_recall_density_coverage(rng.normal(size=(500, 2)), rng.normal(size=(500, 2)))
    assert r["precision"] > 0.9 and r["recall"] > 0.9 and r["coverage"] > 0.9
    assert 0.8 < r["density"] < 1.2


def test_prdc_on_disjoint_clouds_is_zero():
    rng = np.random.default_rng(1)
    r = precision_recall_density_coverage(rng.normal(size=(300, 2)), rng.normal(size=(300, 2)) + 20)
    assert r == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_collapsed_generator_has_high_precision_low_recall():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(500, 2))
    collapsed = rng.normal(scale=0.05, size=(500, 2))  # all mass at the real mode
    r = precision_recall_density_coverage(real, collapsed)
    assert r["precision"] > 0.95 and r["recall"] < 0.2 and r["coverage"] < 0.3


def test_half_overlapping_cloud_gives_about_half_precision():
    rng = np.random.default_rng(3)
    real = rng.uniform(0, 1, (2000, 1))
    fake = rng.uniform(0.5, 1.5, (2000, 1))  # half of its mass lies on the real support
    r = precision_recall_density_coverage(real, fake)
    assert r["precision"] == pytest.approx(0.5, abs=0.05) and r["recall"] == pytest.approx(0.5, abs=0.05)


def test_prdc_needs_more_than_k_samples():
    with pytest.raises(UserError, match="at least 6"):
        precision_recall_density_coverage(np.zeros((5, 2)), np.zeros((10, 2)))


def test_audit_flags_exact_and_noisy_copies_but_not_independent_samples():
    rng = np.random.default_rng(4)
    train = rng.normal(size=(40, 64))
    independent = rng.normal(size=(20, 64))
    copies = train[:5]
    near_copies = train[5:10] + rng.normal(scale=0.05, size=(5, 64))
    audit = memorisation_audit(train, np.concatenate([copies, near_copies, independent]))
    assert audit.flagged[:10].all() and not audit.flagged[10:].any()
    assert audit.fraction_flagged == pytest.approx(10 / 30)
    assert np.allclose(audit.ratio[:5], 0) and list(audit.nearest_index[:10]) == list(range(10))
    assert set(audit.closest(5)) == set(range(5))


def test_audit_errors():
    with pytest.raises(UserError, match="at least 2 training"):
        memorisation_audit(np.zeros((1, 3)), np.zeros((2, 3)))
    with pytest.raises(UserError, match="0 sample"):
        memorisation_audit(np.ones((3, 3)), np.zeros((0, 3)))
    with pytest.raises(UserError, match="duplicates"):
        memorisation_audit(np.ones((3, 3)), np.zeros((2, 3)))
