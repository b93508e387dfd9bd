"""Fréchet Inception Distance: the distance between two image sets' feature Gaussians.

Fit a Gaussian to each set's features (mean mu, covariance sigma) and measure

    FID = |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))

Numbers comparable to pytorch-fid need its features (`fid_inception.FIDInceptionV3`, 2048-d pool
features); the toy world can use any network's features, since only the statistics enter here.
Everything here is float64: the trace of a matrix square root of 2048x2048 covariances loses
digits quickly in float32.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch


def activation_statistics(features: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) features -> mean (D,) and unbiased covariance (D, D) (divides by N - 1, as np.cov does), float64."""
    features = torch.as_tensor(features, dtype=torch.float64)
    if features.dim() != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be an (N, D) array with N >= 2 samples, got shape {tuple(features.shape)}")
    return features.mean(dim=0), torch.cov(features.T, correction=1)


def psd_matrix_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix.

    Round-off can leave eigenvalues that should be 0 slightly negative; they are clamped to 0.
    """
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    return (eigenvectors * eigenvalues.clamp(min=0).sqrt()) @ eigenvectors.T


def trace_of_sqrt_product(sigma1: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """tr((sigma1 sigma2)^(1/2)) for covariances sigma1, sigma2.

    sigma1 sigma2 is not symmetric, but it is similar to S sigma2 S with S = sigma1^(1/2)
    (conjugate by S), which is symmetric PSD: the same eigenvalues, all real and >= 0, and a
    symmetric eigensolver finds them stably. The trace of the root is the sum of their roots.
    """
    sqrt_sigma1 = psd_matrix_sqrt(sigma1)
    similar = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    similar = (similar + similar.T) / 2  # symmetric in exact arithmetic; make it so in float64 too
    return torch.linalg.eigvalsh(similar).clamp(min=0).sqrt().sum()


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """The Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2); arrays or tensors, computed in float64."""
    mu1, mu2 = (torch.as_tensor(mu, dtype=torch.float64) for mu in (mu1, mu2))
    sigma1, sigma2 = (torch.as_tensor(sigma, dtype=torch.float64) for sigma in (sigma1, sigma2))
    dim = mu1.shape[0]
    if mu1.shape != (dim,) or mu2.shape != (dim,) or sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(f"expected two means of shape (D,) and two covariances of shape (D, D); got means "
                         f"{tuple(mu1.shape)}, {tuple(mu2.shape)} and covariances {tuple(sigma1.shape)}, "
                         f"{tuple(sigma2.shape)} (were the features from different networks?)")
    squared_mean_distance = (mu1 - mu2).square().sum()
    distance = squared_mean_distance + sigma1.trace() + sigma2.trace() - 2 * trace_of_sqrt_product(sigma1, sigma2)
    return float(distance)


@torch.no_grad()
def extract_features(image_batches: Iterable[torch.Tensor], feature_extractor: Callable[[torch.Tensor], torch.Tensor],
                     device: str | torch.device = "cpu") -> torch.Tensor:
    """Run `feature_extractor` ((B, 3, H, W) in [-1, 1] -> (B, D)) over batches; (N, D) float64 on the CPU.

    A tensor of N images becomes batches with `images.split(batch_size)`.
    """
    features = [feature_extractor(batch.to(device)).double().cpu() for batch in image_batches]
    if not features:
        raise ValueError("no image batches were given to extract features from")
    return torch.cat(features)


def fid_from_features(features1: torch.Tensor | np.ndarray, features2: torch.Tensor | np.ndarray) -> float:
    """FID between two sets of (N, D) features."""
    return frechet_distance(*activation_statistics(features1), *activation_statistics(features2))
