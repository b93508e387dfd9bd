"""FID: statistics, the Fréchet distance against closed forms and scipy, and pytorch-fid's Inception."""
import numpy as np
import pytest
import torch
import torchvision

from salient_outpaint.evaluation.fid import (activation_statistics, extract_features, fid_from_features,
                                             frechet_distance)
from salient_outpaint.evaluation.fid_inception import FIDInceptionV3, load_fid_inception


def random_covariance(dim, generator):
    """Well conditioned: eigenvalues in about [0.1, 5]."""
    factor = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    return factor @ factor.T / dim + 0.1 * torch.eye(dim, dtype=torch.float64)


def test_statistics_are_the_mean_and_the_unbiased_covariance_in_float64():
    features = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    mu, sigma = activation_statistics(features)
    assert mu.dtype == sigma.dtype == torch.float64
    np.testing.assert_allclose(mu.numpy(), features.astype(np.float64).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sigma.numpy(), np.cov(features.astype(np.float64), rowvar=False), rtol=1e-12)
    with pytest.raises(ValueError, match="N >= 2"):
        activation_statistics(features[:1])


def test_identical_feature_sets_are_at_distance_zero():
    # The two Gaussians are the same, so FID is 0 exactly; what remains is float64 round-off of the
    # eigendecompositions, about 1e-15 of the covariance's trace (~64 here).
    features = torch.randn(500, 64, generator=torch.Generator().manual_seed(0))
    assert abs(fid_from_features(features, features.clone())) < 1e-6


def test_shifting_every_feature_by_c_gives_fid_of_squared_shift():
    features = torch.randn(300, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    shift = torch.linspace(-1, 2, 16, dtype=torch.float64)
    # Same covariance, so the trace term cancels and FID = |shift|^2 (to round-off, as above).
    assert fid_from_features(features, features + shift) == pytest.approx(float(shift.square().sum()), abs=1e-6)


def test_diagonal_covariances_match_the_closed_form():
    generator = torch.Generator().manual_seed(2)
    mu1, mu2 = torch.randn(2, 20, generator=generator, dtype=torch.float64)
    variances1, variances2 = torch.rand(2, 20, generator=generator, dtype=torch.float64) + 0.1
    expected = ((mu1 - mu2).square() + variances1 + variances2 - 2 * (variances1 * variances2).sqrt()).sum()
    # Tolerance 1e-6: a float64 result on numbers of order 10 is good to ~1e-13.
    assert frechet_distance(mu1, variances1.diag(), mu2, variances2.diag()) == pytest.approx(float(expected), abs=1e-6)


def test_frechet_distance_matches_scipy_sqrtm_on_random_covariances():
    linalg = pytest.importorskip("scipy.linalg", reason="scipy's sqrtm is the reference pytorch-fid uses")
    generator = torch.Generator().manual_seed(3)
    dim = 48
    mu1, mu2 = torch.randn(2, dim, generator=generator, dtype=torch.float64)
    sigma1, sigma2 = random_covariance(dim, generator), random_covariance(dim, generator)
    sqrt_product = linalg.sqrtm(sigma1.numpy() @ sigma2.numpy()).real
    expected = (float((mu1 - mu2).square().sum()) + float(sigma1.trace() + sigma2.trace())
                - 2 * np.trace(sqrt_product))
    # Tolerance 1e-6 absolute on a distance of order 50: both are float64 with well-conditioned inputs.
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, abs=1e-6)


def test_frechet_distance_matches_pytorch_fid():
    fid_score = pytest.importorskip("pytorch_fid.fid_score", reason="pytorch-fid is the reference implementation")
    generator = torch.Generator().manual_seed(4)
    mu1, mu2 = torch.randn(2, 32, generator=generator, dtype=torch.float64)
    sigma1, sigma2 = random_covariance(32, generator), random_covariance(32, generator)
    expected = fid_score.calculate_frechet_distance(mu1.numpy(), sigma1.numpy(), mu2.numpy(), sigma2.numpy())
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(float(expected), abs=1e-6)


def test_frechet_distance_refuses_statistics_of_different_dimensions():
    with pytest.raises(ValueError, match="different networks"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4))


def test_any_feature_extractor_can_feed_fid():
    images = torch.rand(10, 3, 8, 8) * 2 - 1
    toy_network = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())  # (B, 4 * 6 * 6)
    features = extract_features(images.split(4), toy_network)
    assert features.shape == (10, 144) and features.dtype == torch.float64
    with pytest.raises(ValueError, match="no image batches"):
        extract_features([], toy_network)


@pytest.fixture(scope="module")
def fid_inception():
    torch.manual_seed(0)
    network = FIDInceptionV3()
    # He init keeps activations of order 1 through the depth (PyTorch's default init shrinks
    # them to ~1e-8), so a wrong pooling branch shows up as a large difference.
    for module in network.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return network


def test_fid_inception_gives_2048_pool_features_for_any_input_size(fid_inception):
    with torch.no_grad():
        assert fid_inception(torch.rand(2, 3, 299, 299) * 2 - 1).shape == (2, 2048)
        assert fid_inception(torch.rand(1, 3, 64, 96) * 2 - 1).shape == (1, 2048)  # resized to 299 first


def test_fid_inception_matches_pytorch_fid_and_not_plain_torchvision(fid_inception, monkeypatch):
    pytorch_fid_inception = pytest.importorskip("pytorch_fid.inception", reason="pytorch-fid is the reference")
    # pytorch-fid would download its weights; hand it ours instead.
    monkeypatch.setattr(pytorch_fid_inception, "load_state_dict_from_url", lambda *args, **kwargs:
                        fid_inception.state_dict())
    reference = pytorch_fid_inception.InceptionV3([pytorch_fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    images_01 = torch.rand(2, 3, 128, 160, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ours = fid_inception(images_01 * 2 - 1)
        theirs = reference(images_01)[0].flatten(1)  # pytorch-fid takes [0, 1] and rescales after resizing
    # Tolerance 1e-5 on features of order 0.3: float32, resize-then-rescale vs rescale-then-resize.
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)

    plain = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
    plain.load_state_dict(fid_inception.state_dict())
    plain.fc = torch.nn.Identity()
    with torch.no_grad():
        plain_features = plain.eval()(torch.nn.functional.interpolate(images_01 * 2 - 1, size=(299, 299),
                                                                      mode="bilinear", align_corners=False))
    assert (plain_features - ours).abs().max() > 0.1  # the TF pooling branches matter


def test_fid_inception_loads_a_weight_file_and_names_a_missing_one(fid_inception, tmp_path):
    weights_path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(fid_inception.state_dict(), weights_path)
    loaded = load_fid_inception(weights_path)
    images = torch.rand(1, 3, 75, 75) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), fid_inception(images), rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05-6726825d.pth"):
        load_fid_inception(tmp_path / "missing.pth")
