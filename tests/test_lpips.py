"""LPIPS: zero for identical images, parity with the lpips package, weight loading, sample diversity."""
import pytest
import torch
import torchvision

from salient_outpaint.evaluation.lpips import LPIPS, linear_layer_key, load_lpips, pairwise_diversity


@pytest.fixture(scope="module")
def alex_lpips():
    torch.manual_seed(0)
    model = LPIPS("alex")
    for linear in model.linear_layers:  # the real linear weights are non-negative
        linear.weight.data.uniform_(0, 1)
    return model


def random_images(count, seed, size=64):
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_identical_images_are_at_distance_zero_and_different_ones_are_not(alex_lpips):
    images, others = random_images(3, 0), random_images(3, 1)
    with torch.no_grad():
        assert torch.equal(alex_lpips(images, images), torch.zeros(3))
        distances = alex_lpips(images, others)
        torch.testing.assert_close(distances, alex_lpips(others, images))  # symmetric
    assert distances.shape == (3,) and (distances > 0).all()


def test_vgg_backbone_runs_and_is_zero_on_identical_images():
    torch.manual_seed(0)
    model = LPIPS("vgg")
    images = random_images(1, 2, size=32)
    with torch.no_grad():
        assert model(images, images).item() == 0
        assert model(images, random_images(1, 3, size=32)).item() != 0


def test_matches_the_lpips_package_with_the_same_weights(tmp_path):
    lpips = pytest.importorskip("lpips", reason="the lpips package is the reference implementation")
    torch.manual_seed(0)
    reference = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)  # random trunk, its shipped linear layers
    # Its trunk is split into slices that keep torchvision's layer indices: slice2.3.weight is features.3.weight.
    torch.save({"features." + key.split(".", 1)[1]: value for key, value in reference.net.state_dict().items()},
               tmp_path / "alexnet.pth")
    torch.save({key: value for key, value in reference.state_dict().items() if key.startswith("lin")},
               tmp_path / "alex_linear.pth")
    ours = load_lpips("alex", tmp_path / "alexnet.pth", tmp_path / "alex_linear.pth")
    images_a, images_b = random_images(2, 4), random_images(2, 5)
    with torch.no_grad():
        # Tolerance 1e-6 on distances of order 0.1: the same float32 operations in a different order.
        torch.testing.assert_close(ours(images_a, images_b), reference(images_a, images_b).flatten(),
                                   rtol=0, atol=1e-6)


def alexnet_checkpoint():
    """torchvision's AlexNet checkpoint layout, with a stand-in for its 58M-parameter classifier to keep tests fast."""
    trunk = {key: value for key, value in torchvision.models.alexnet(weights=None).state_dict().items()
             if key.startswith("features.")}
    return {**trunk, "classifier.1.weight": torch.zeros(2, 2)}


def test_loads_a_torchvision_checkpoint_and_lpips_linear_keys(tmp_path):
    torch.manual_seed(1)
    checkpoint = alexnet_checkpoint()
    torch.save(checkpoint, tmp_path / "alexnet-owt-7be5be79.pth")  # classifier keys are ignored
    linear_weights = {linear_layer_key(layer): torch.rand(1, channels, 1, 1)
                      for layer, channels in enumerate((64, 192, 384, 256, 256))}
    torch.save(linear_weights, tmp_path / "alex.pth")
    model = load_lpips("alex", tmp_path / "alexnet-owt-7be5be79.pth", tmp_path / "alex.pth")
    assert torch.equal(model.features[3].weight, checkpoint["features.3.weight"])
    assert torch.equal(model.linear_layers[2].weight, linear_weights["lin2.model.1.weight"])


def test_missing_or_wrong_weight_files_are_named(tmp_path):
    torch.save(alexnet_checkpoint(), tmp_path / "alexnet.pth")
    with pytest.raises(FileNotFoundError, match="alexnet-owt-7be5be79.pth"):
        load_lpips("alex", tmp_path / "missing.pth", tmp_path / "alex.pth")
    with pytest.raises(FileNotFoundError, match="linear layers"):
        load_lpips("alex", tmp_path / "alexnet.pth", tmp_path / "missing.pth")
    torch.save({"something.else": torch.zeros(1)}, tmp_path / "not_lpips.pth")
    with pytest.raises(KeyError, match="lin0.model.1.weight"):
        load_lpips("alex", tmp_path / "alexnet.pth", tmp_path / "not_lpips.pth")
    with pytest.raises(KeyError, match="features"):
        load_lpips("alex", tmp_path / "not_lpips.pth", tmp_path / "alexnet.pth")  # the two files swapped
    with pytest.raises(ValueError, match="unknown LPIPS backbone"):
        LPIPS("squeeze")


def test_pairwise_diversity_is_the_mean_distance_over_all_pairs(alex_lpips):
    samples = random_images(4, 6)
    with torch.no_grad():
        pair_distances = [alex_lpips(samples[i:i + 1], samples[j:j + 1]) for i in range(4) for j in range(i + 1, 4)]
    assert pairwise_diversity(alex_lpips, samples) == pytest.approx(float(torch.cat(pair_distances).mean()), abs=1e-6)
    # Three copies: no diversity. Not exactly 0: the copies pass the trunk as one batch, and batched
    # convolutions may sum in another order per item (we see ~2e-13); distinct samples are ~1e-1 apart.
    assert pairwise_diversity(alex_lpips, samples[:1].expand(3, -1, -1, -1)) == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="K >= 2"):
        pairwise_diversity(alex_lpips, samples[:1])
