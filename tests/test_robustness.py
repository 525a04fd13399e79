"""Corruption robustness: each corruption's behaviour pinned, the grid of test conditions, mCE, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchbone.corruptions import CORRUPTIONS, EXTRA, STANDARD, Corruption, corrupt_array, parse
from benchbone.errors import UsageError
from benchbone import robustness

RUN = ["run", "-p", "benchbone.testing", "-b", "test/tiny-cnn", "-b", "pixels:4", "-d", "test/blobs",
       "-s", "linear-probe", "--set", "c_steps=2", "-q"]


def smooth_image(size: int = 32) -> np.ndarray:
    """A smooth, colourful uint8 [size, size, 3] image (blur and noise change it measurably)."""
    yy, xx = np.mgrid[0:size, 0:size]
    return np.stack([128 + 100 * np.sin(xx / 5), 128 + 100 * np.cos(yy / 4), (xx * 4 + yy * 3) % 256],
                    -1).clip(0, 255).astype(np.uint8)


def distance(name: str, severity: int, image: np.ndarray, draws: int = 4) -> float:
    return float(np.mean([np.abs(corrupt_array(image, name, severity, np.random.default_rng(k)).astype(float)
                                 - image).mean() for k in range(draws)]))


def test_fourteen_standard_corruptions_frost_left_out():
    assert len(STANDARD) == 14 and "frost" not in CORRUPTIONS
    assert set(CORRUPTIONS) == set(STANDARD) | set(EXTRA)


@pytest.mark.parametrize("name", STANDARD + EXTRA)
def test_each_corruption_keeps_shape_and_dtype_is_seeded_and_changes_the_image(name):
    image = torch.from_numpy(smooth_image(24)[:, :20].copy()).permute(2, 0, 1)  # not square: 24 x 20
    out = Corruption(name, 5, seed=3)(image, 17)
    assert out.dtype == torch.uint8 and out.shape == image.shape
    assert torch.equal(out, Corruption(name, 5, seed=3)(image, 17))  # deterministic under a seed and index
    assert not torch.equal(out, image)
    grey = Corruption(name, 3)(image[:1], 0)  # one channel in, three out
    assert grey.shape == (3, 24, 20)


# Pixel distance grows with severity for these; glass blur and elastic transform trade one kind of damage for
# another across severities (as in the paper's parameters), and JPEG's quality steps are too close at 32 px.
MONOTONE = [n for n in STANDARD + EXTRA if n not in ("glass_blur", "elastic_transform", "jpeg_compression")]


@pytest.mark.parametrize("name", MONOTONE)
def test_degradation_grows_with_severity(name):
    image = smooth_image()
    steps = [distance(name, s, image) for s in (1, 2, 3, 4, 5)]
    assert steps == sorted(steps) and steps[4] > steps[0], steps


def test_random_corruptions_draw_per_image_and_seed():
    image = torch.from_numpy(smooth_image()).permute(2, 0, 1)
    noise = Corruption("gaussian_noise", 3)
    assert not torch.equal(noise(image, 0), noise(image, 1))
    assert not torch.equal(noise(image, 0), Corruption("gaussian_noise", 3, seed=1)(image, 0))


@pytest.mark.parametrize("name", ["gaussian_blur", "defocus_blur", "motion_blur", "zoom_blur", "glass_blur", "pixelate"])
def test_blurs_keep_a_constant_image(name):
    flat = np.full((32, 32, 3), 97, dtype=np.uint8)
    assert np.array_equal(corrupt_array(flat, name, 5, np.random.default_rng(0)), flat)


def test_brightness_matches_matplotlib_hsv_round_trip():
    from matplotlib.colors import hsv_to_rgb, rgb_to_hsv

    x = np.random.default_rng(0).random((16, 16, 3))
    x[0, 0] = 0  # black: value 0
    for severity, c in zip((1, 5), (0.05, 0.3)):
        hsv = rgb_to_hsv(x)
        hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
        np.testing.assert_allclose(CORRUPTIONS["brightness"](x, severity, None), hsv_to_rgb(hsv), atol=1e-12)


def test_contrast_known_value():
    x = np.zeros((2, 1, 3))
    x[1] = 1.0  # per-channel mean 0.5
    out = CORRUPTIONS["contrast"](x, 5, None)  # c = 0.15
    np.testing.assert_allclose(out[:, 0, 0], [0.5 - 0.5 * 0.15, 0.5 + 0.5 * 0.15])


def test_noise_statistics_follow_their_parameters():
    grey = np.full((128, 128, 3), 0.5)
    rng = np.random.default_rng(0)
    assert CORRUPTIONS["gaussian_noise"](grey, 5, rng).std() == pytest.approx(0.10, rel=0.03)
    shot = CORRUPTIONS["shot_noise"](grey, 5, rng)  # Poisson(0.5 * 50) / 50
    assert shot.mean() == pytest.approx(0.5, abs=0.005) and shot.var() == pytest.approx(0.5 / 50, rel=0.05)
    impulse = CORRUPTIONS["impulse_noise"](grey, 5, rng)  # 7% of the values salt or pepper
    changed = impulse != 0.5
    assert changed.mean() == pytest.approx(0.07, abs=0.005) and set(np.unique(impulse[changed])) == {0.0, 1.0}


def test_pixelate_and_jpeg_match_pil():
    from io import BytesIO

    from PIL import Image

    image = smooth_image()
    pil = Image.fromarray(image)
    boxed = np.asarray(pil.resize((27, 27), Image.BOX).resize((32, 32), Image.BOX))  # severity 3: 0.85 x 32
    assert np.array_equal(corrupt_array(image, "pixelate", 3, None), boxed)
    buffer = BytesIO()
    pil.save(buffer, "JPEG", quality=40)  # severity 5
    assert np.array_equal(corrupt_array(image, "jpeg_compression", 5, None), np.asarray(Image.open(buffer)))


def test_fog_height_map_spans_zero_to_one():
    from benchbone.corruptions import _plasma_fractal

    grid = _plasma_fractal(32, 2.0, np.random.default_rng(0))
    assert grid.shape == (32, 32) and grid.min() == 0 and grid.max() == 1


def test_parse_conditions():
    assert parse(None, None, 0) == [None]
    conditions = parse(["contrast", "all"], "2..3", 5)
    assert conditions[0] is None and len(conditions) == 1 + 14 * 2
    assert conditions[1] == Corruption("contrast", 2, 5) and conditions[2] == Corruption("contrast", 3, 5)
    assert parse("speckle_noise", 4, 0) == [None, Corruption("speckle_noise", 4, 0)]


@pytest.mark.parametrize("sets, message", [
    (["corruption=gausian_noise"], "--set corruption=gausian_noise: unknown corruption (did you mean gaussian_noise?)"),
    (["corruption=frost"], "--set corruption=frost: not available here"),
    (["corruption=all", "severity=6"], "--set severity=6: severities are whole numbers 1 to 5"),
    (["corruption=all", "severity=0,1"], "--set severity=0: severities are whole numbers 1 to 5"),
    (["severity=3"], "--set severity=3: give --set corruption=NAME[,NAME] or all as well"),
    (["corruption=fog", "corruption_seed=-1"], "--set corruption_seed=-1: give a whole number >= 0"),
])
def test_bad_corruption_input_is_one_line_and_writes_nothing(cli, tmp_path, sets, message):
    result = cli(*RUN, *(a for s in sets for a in ("--set", s)), "--out", tmp_path / "run")
    assert result.code == 2
    assert result.err.strip().splitlines() == [f"benchbone: error: {result.err.split('error: ', 1)[1].strip()}"]
    assert message in result.err
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_corrupted_batches_are_the_corrupted_images_preprocessed():
    from benchbone.api import ImageTensorDataset
    from benchbone.data import LoadedImages, Preprocess, iterate_batches, whole

    images = torch.from_numpy(np.stack([smooth_image(12), smooth_image(12)[::-1].copy()])).permute(0, 3, 1, 2)
    dataset = ImageTensorDataset(images.contiguous(), torch.tensor([0, 1]))
    preprocess = Preprocess((16, 16), 1.0, "bilinear", (0.5,) * 3, (0.25,) * 3)
    corruption = Corruption("zoom_blur", 4)
    (x, _), = iterate_batches(LoadedImages(dataset), whole("test", dataset), preprocess, batch_size=2, device="cpu",
                              corrupt=corruption)
    expected = preprocess(torch.stack([corruption(images[i], i) for i in range(2)]))  # at 12 px, then resized
    assert torch.equal(x, expected)


def test_a_corruption_run_has_one_record_per_condition_and_caches_each(cli, tmp_path):
    plain = cli(*RUN, "--out", tmp_path / "plain")
    assert plain.code == 0, plain.err
    args = [*RUN, "--set", "corruption=contrast,gaussian_noise", "--set", "severity=1,5", "--out", tmp_path / "run"]
    result = cli(*args)
    assert result.code == 0, result.err
    records = [json.loads(p.read_text()) for p in (tmp_path / "run" / "records").glob("*.json")]
    assert sorted({r["dataset"] for r in records}) == ["test/blobs", "test/blobs/contrast-1", "test/blobs/contrast-5",
                                                      "test/blobs/gaussian_noise-1", "test/blobs/gaussian_noise-5"]
    assert len(records) == 10 and all(r["status"] == "ok" for r in records)
    corrupted = [r for r in records if "corruption" in r]
    assert {(r["corruption"]["name"], r["corruption"]["severity"], r["corruption"]["seed"]) for r in corrupted} == {
        (n, s, 0) for n in ("contrast", "gaussian_noise") for s in (1, 5)}
    assert all(not r["features"]["test"]["cached"] and r["features"]["train"]["cached"] for r in corrupted)
    plain_records = {json.loads(p.read_text())["cell_id"] for p in (tmp_path / "plain" / "records").glob("*.json")}
    assert plain_records == {r["cell_id"] for r in records if "corruption" not in r}  # the clean row is the plain cell
    heavy = {r["backbone"]: r["metrics"]["top1"] for r in corrupted if r["dataset"].endswith("contrast-5")}
    assert heavy["test/tiny-cnn"] < max(r["metrics"]["top1"] for r in records if r["dataset"] == "test/blobs")
    (tmp_path / "run" / "records").rename(tmp_path / "old-records")
    again = cli(*args)  # new records from the cached corrupted features: the same numbers
    assert again.code == 0, again.err
    reruns = [json.loads(p.read_text()) for p in (tmp_path / "run" / "records").glob("*.json")]
    assert all(r["features"]["test"]["cached"] for r in reruns)
    assert {r["cell_id"]: r["metrics"]["top1"] for r in reruns} == {r["cell_id"]: r["metrics"]["top1"] for r in records}
    board = cli("leaderboard", tmp_path / "run", "--robustness", "test/tiny-cnn", "-f", "json")
    assert board.code == 0, board.err
    rows = {row["backbone"]: row for row in json.loads(board.out)}
    assert rows["test/tiny-cnn"]["mCE"] == pytest.approx(100) and rows["test/tiny-cnn"]["conditions"] == 4
    bad = cli("leaderboard", tmp_path / "run", "--robustness", "resnet50")
    assert bad.code == 2 and "--robustness 'resnet50': no such backbone" in bad.err
    clean = cli("leaderboard", tmp_path / "plain", "--robustness", "pixels:4")
    assert clean.code == 2 and "no corrupted test conditions" in clean.err


def record(backbone: str, top1: float, corruption: str | None = None, severity: int | None = None) -> dict:
    return {"status": "ok", "backbone": backbone, "cell": {"dataset": "d"}, "strategy": "s", "params": {},
            "metrics": {"top1": top1}, **({"corruption": {"name": corruption, "severity": severity}} if corruption else {})}


def test_mce_and_relative_mce_follow_hendrycks_definitions():
    errors = {"base": {"clean": 0.1, ("a", 1): 0.2, ("a", 2): 0.4, ("b", 1): 0.5, ("b", 2): 0.5},
              "model": {"clean": 0.05, ("a", 1): 0.1, ("a", 2): 0.2, ("b", 1): 0.5, ("b", 2): 1.0}}
    records = [record(b, 1 - e) if k == "clean" else record(b, 1 - e, *k)
               for b, table in errors.items() for k, e in table.items()]
    rows = robustness.table(records, "base").set_index("backbone")
    model = rows.loc["model"]
    # CE_a = (0.1 + 0.2) / (0.2 + 0.4) = 0.5, CE_b = 1.5 / 1.0 = 1.5: mCE 100
    assert model["CE a"] == pytest.approx(50) and model["CE b"] == pytest.approx(150)
    assert model["mCE"] == pytest.approx(100)
    # relative: a (0.3 - 2 x 0.05) / (0.6 - 2 x 0.1) = 0.5, b (1.5 - 0.1) / (1.0 - 0.2) = 1.75
    assert model["relative_mCE"] == pytest.approx(112.5)
    assert model["clean"] == pytest.approx(0.95) and model["corrupted"] == pytest.approx(0.55)
    assert model["gap"] == pytest.approx(0.40)
    assert rows.loc["base", "mCE"] == pytest.approx(100) and rows.loc["base", "relative_mCE"] == pytest.approx(100)
    with pytest.raises(UsageError, match="the baseline has no record of c at severity 1"):
        robustness.table([*records, record("model", 0.5, "c", 1)], "base")
