"""Tiles: the exact strip decode, and overlapping tiles blended so that no seam shows."""
import pytest
import torch
import torch.nn.functional as F

from salient_outpaint import vae_tiling
from salient_outpaint.loading import load_models
from salient_outpaint.tiles import positions, tiled, windows


def test_tiles_cover_the_map_with_at_least_the_overlap():
    for length, tile, overlap in [(64, 16, 4), (50, 16, 4), (16, 16, 4), (10, 16, 4), (257, 64, 16)]:
        starts = positions(length, tile, overlap)
        assert starts[0] == 0 and min(starts[-1] + tile, length) == length
        assert all(later - earlier <= tile - overlap for earlier, later in zip(starts, starts[1:]))
    assert len(windows(64, 40, 16, 4)) == len(positions(64, 16, 4)) * len(positions(40, 16, 4))


def blur(x):
    """A stand-in network with spatial context: a 7x7 box blur that sees zeros beyond its input's edge,
    as a convolution network's padding does; each tile's edge is an edge of its world."""
    kernel = torch.ones(x.shape[1], 1, 7, 7) / 49
    return F.conv2d(x, kernel, padding=3, groups=x.shape[1])


def seam(tiled_out, whole, tile_edges):
    """The largest error at a tile edge, per edge row, relative to the untiled output."""
    return max(float((tiled_out - whole)[..., edge - 1:edge + 1, :].abs().mean()) for edge in tile_edges)


def test_overlap_blending_hides_the_seams_that_abutting_tiles_show():
    rows = torch.linspace(0, 1, 64)
    x = (torch.sin(6 * rows)[:, None] + torch.cos(4 * rows)[None, :])[None, None].expand(1, 2, 64, 64) + 2
    whole = blur(x)

    def by_tiles(overlap):
        return tiled(lambda r, c: blur(x[..., r, c]), 64, 64, 16, overlap)

    abutting, overlapping = by_tiles(0), by_tiles(4)
    edges = [16, 32, 48]  # where abutting tiles meet
    # Abutting tiles leave a dark line (the blur's zeros) along every edge; overlapping tiles weighted down
    # towards their edges leave a small fraction of it.
    assert seam(abutting, whole, edges) > 0.3
    assert seam(overlapping, whole, edges + [12, 24, 36]) < 0.2 * seam(abutting, whole, edges)


@pytest.fixture(scope="module")
def vae():
    return load_models().vae.eval()


def test_the_strip_decode_is_the_whole_decode_on_a_latent_really_split(vae, monkeypatch):
    """Strips of 8 rows (at every up block's resolution) on the toy VAE's 16x20 latent: every GroupNorm
    must take the whole map's statistics and every convolution its halo, else rows differ by far more than
    1e-4 (with the strips' own statistics: 1e-2 and more)."""
    monkeypatch.setattr(vae_tiling, "STRIP_PIXELS", 8 * 80)
    latents = torch.randn(2, 4, 16, 20, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = vae.decode(latents)
    given = latents.clone()
    strips = vae_tiling.decode_in_strips(vae, latents)
    assert torch.equal(latents, given)  # the maps written over are the decode's own
    assert strips.shape == whole.shape == (2, 3, 64, 80)
    torch.testing.assert_close(strips, whole, rtol=0, atol=1e-4)
    monkeypatch.setattr(vae_tiling, "group_statistics", lambda x, groups: tuple(  # a strip's own statistics
        value.double() for value in torch.var_mean(x.reshape(x.shape[0], groups, -1), -1, unbiased=False)[::-1]))
    monkeypatch.setattr(vae_tiling, "HALO", 0)
    assert (vae_tiling.decode_in_strips(vae, latents) - whole).abs().max() > 1e-2


def test_large_images_decode_and_encode_in_tiles_without_seams(vae):
    """Beyond the native size (16 latent pixels for the toy model) the tiles' GroupNorms differ; blended (as in
    the seam test above), the decode stays close to the whole one."""
    latents = vae.encode(torch.zeros(1, 3, 160, 224)).mean.detach() + 0.3 * torch.randn(1, 4, 40, 56)
    with torch.no_grad():
        whole = vae.decode(latents)
    tiled_image = vae_tiling.decode(vae, latents, native=16)
    assert tiled_image.shape == whole.shape
    difference = (tiled_image - whole).abs().mean(dim=(0, 1))  # (H, W)
    assert difference.mean() < 0.2  # measured 0.10 on these random latents: approximate
    encoded = vae_tiling.encode_tiled(vae, whole.clamp(-1, 1), native=16)
    assert encoded.shape == latents.shape
