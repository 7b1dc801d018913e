import numpy as np
import pytest
from scipy import ndimage

from synthmed.errors import UserError
from synthmed.metrics.bootstrap import percentile_interval, subsample_ci
from synthmed.metrics.distances import (
    frechet_distance,
    frechet_distance_gaussians,
    kernel_inception_distance,
    mmd2_unbiased,
)
from synthmed.metrics.inception_score import inception_score
from synthmed.metrics.extractors.radiomics import RadiomicsExtractor


def test_frechet_of_two_gaussians_matches_closed_form():
    # 1-D closed form: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance_gaussians(np.array([0.0]), np.eye(1) * 4, np.array([3.0]), np.eye(1)) == pytest.approx(9 + 1)
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (20000, 3))
    b = rng.normal(0, 1, (20000, 3)) * [1, 2, 3] + [1, 0, 0]
    expected = 1 + (0 + 1 + 4)  # mean shift 1, std 1 vs 1, 2, 3
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.03)


def test_frechet_small_n_route_equals_covariance_route():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(30, 50)), rng.normal(size=(40, 50)) + 0.3
    mu_a, mu_b = a.mean(0), b.mean(0)
    exact = frechet_distance_gaussians(mu_a, np.cov(a, rowvar=False), mu_b, np.cov(b, rowvar=False))
    assert frechet_distance(a, b) == pytest.approx(exact, rel=1e-6)


def test_frechet_of_a_set_to_itself_is_zero():
    x = np.random.default_rng(2).normal(size=(50, 8))
    assert frechet_distance(x, x) == pytest.approx(0, abs=1e-8)


def test_frechet_grows_monotonically_with_shift_and_blur():
    rng = np.random.default_rng(3)
    base = rng.normal(size=(200, 8))
    shifts = [frechet_distance(base, base + s) for s in (0.0, 0.2, 0.5, 1.0)]
    assert np.all(np.diff(shifts) > 0)
    images = np.clip(rng.normal(0, 0.3, (24, 1, 16, 16, 16)), -1, 1)
    extractor = RadiomicsExtractor()
    real = extractor.extract(images)
    blurred = [extractor.extract(ndimage.gaussian_filter(images, (0, 0, s, s, s))) if s else real for s in (0, 0.5, 1.0, 2.0)]
    mean, std = real.mean(0), np.where(real.std(0) > 0, real.std(0), 1)
    fds = [frechet_distance((real - mean) / std, (b - mean) / std) for b in blurred]
    assert fds[0] == pytest.approx(0, abs=1e-8) and np.all(np.diff(fds) > 0)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_different_ones():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    same = kernel_inception_distance(a, b, subsets=50, subset_size=100)
    different = kernel_inception_distance(a, b + 0.5, subsets=50, subset_size=100)
    assert abs(same.mean) < 2 * same.std
    assert different.mean > 10 * abs(same.mean) and different.mean - 2 * different.std > 0


def test_kid_works_below_1000_samples():
    rng = np.random.default_rng(5)
    result = kernel_inception_distance(rng.normal(size=(12, 4)), rng.normal(size=(7, 4)))
    assert result.subset_size == 7 and np.isfinite(result.mean)


@pytest.mark.parametrize("a, b, match", [
    (np.zeros((0, 4)), np.zeros((5, 4)), "0 sample"),
    (np.zeros((5, 4)), np.zeros((5, 3)), "feature sizes differ"),
    (np.zeros((5, 4, 1)), np.zeros((5, 4)), r"must be \[N, F\]"),
    (np.full((5, 4), np.nan), np.zeros((5, 4)), "NaN"),
])
def test_bad_feature_sets_are_clear_errors(a, b, match):
    with pytest.raises(UserError, match=match):
        frechet_distance(a, b)
    with pytest.raises(UserError, match=match):
        kernel_inception_distance(a, b)


def test_subsampling_interval_separates_close_from_far_sets():
    rng = np.random.default_rng(6)
    a = rng.normal(size=(100, 4))
    b_near, b_far = rng.normal(size=(100, 4)), rng.normal(size=(100, 4)) + 2
    near = subsample_ci(frechet_distance, a, b_near, frechet_distance(a, b_near), n_resamples=50)
    far = subsample_ci(frechet_distance, a, b_far, frechet_distance(a, b_far), n_resamples=50)
    assert near[0] <= near[1] < far[0] <= far[1]
    assert 16 - 1 < far[1] and far[0] < 16 + 4  # true distance 4 x 2^2 = 16


def test_intervals_contain_their_estimate_where_the_resampling_bootstrap_did_not():
    # 20 samples of 8 features: FD's small-sample bias is large, and resamples with replacement
    # (duplicates) inflate it further: their percentile interval lay wholly above the estimate
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20, 8)), rng.normal(size=(20, 8)) + 0.3
    fd = frechet_distance(a, b)
    draw = np.random.default_rng(0)
    old = percentile_interval([frechet_distance(a[draw.integers(0, 20, 20)], b[draw.integers(0, 20, 20)])
                               for _ in range(200)], 0.95)
    assert old[0] > fd  # the defect, reproduced
    low, high = subsample_ci(frechet_distance, a, b, fd, n_resamples=200)
    assert low <= fd <= high
    kid = kernel_inception_distance(a, b, subsets=10).mean
    low, high = subsample_ci(mmd2_unbiased, a, b, kid, n_resamples=200)
    assert low <= kid <= high and high - low > 0


def test_subsampling_interval_covers_the_true_distance_about_as_often_as_it_claims():
    # two 3-d Gaussians 0.6 apart per axis: true FD = 3 x 0.36; 60 repetitions of n = 80
    rng = np.random.default_rng(1)
    covered = 0
    for rep in range(60):
        a, b = rng.normal(size=(80, 3)), rng.normal(size=(80, 3)) + 0.6
        low, high = subsample_ci(frechet_distance, a, b, frechet_distance(a, b), n_resamples=60, seed=rep)
        covered += low <= 3 * 0.36 <= high
    assert 0.85 <= covered / 60 <= 1.0


def test_subsampling_needs_three_samples_per_set():
    a = np.zeros((2, 3))
    assert subsample_ci(frechet_distance, a, np.ones((10, 3)), 0.0) is None


def test_inception_score_of_confident_uniform_classes_is_the_class_count():
    logits = np.full((100, 10), -50.0)
    logits[np.arange(100), np.arange(100) % 10] = 50.0
    mean, std = inception_score(logits, splits=1)
    assert mean == pytest.approx(10, rel=1e-6)
    assert inception_score(np.zeros((100, 10)), splits=1)[0] == pytest.approx(1.0)


def test_radiomics_standardisation_drops_features_constant_on_real_cases():
    from synthmed.metrics.distances import frechet_distance
    from synthmed.metrics.evaluate import _standardised

    rng = np.random.default_rng(0)
    real = rng.normal(size=(50, 3))
    real[:, 2] = 4.0 + 1e-11 * rng.normal(size=50)  # e.g. a shape feature every real mask shares
    synthetic = rng.normal(size=(50, 3))
    synthetic[:, 2] = 4.0 + 1e-9 * rng.normal(size=50)  # the same, up to rounding
    views = _standardised({"mask": {"train": real, "synthetic": synthetic}})["mask"]
    assert views["train"].shape == (50, 2)
    assert frechet_distance(views["synthetic"], views["train"]) < 1.0  # two N(0, I) samples
