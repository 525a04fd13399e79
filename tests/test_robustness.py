"""Corruption robustness: each corruption's behaviour pinned, the grid of test conditions, mCE, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchbone.errors import UsageError
from benchbone.inputs import corruptions
from benchbone.inputs.corruptions import CORRUPTIONS, EXTRA, STANDARD, STREAMS, Corruption, corrupt_array, parse
from benchbone.reporting import robustness

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


needs_frost = pytest.mark.skipif(not corruptions.frost_available(), reason="pip install 'benchbone[frost]'")


def with_frost_marked(names) -> list:
    return [pytest.param(n, marks=needs_frost) if n == "frost" else n for n in names]


def test_fifteen_standard_corruptions_and_four_extra_with_fixed_random_streams():
    assert len(STANDARD) == 15 and STANDARD[8] == "frost" and EXTRA == ("speckle_noise", "gaussian_blur", "spatter",
                                                                        "saturate")
    assert set(CORRUPTIONS) == set(STANDARD) | set(EXTRA) == set(STREAMS) and len(STREAMS) == 19
    # the stream numbers of the 16 corruptions published before frost, spatter and saturate stay as they were
    assert STREAMS.index("fog") == 8 and STREAMS.index("gaussian_blur") == 15


@pytest.mark.parametrize("name", with_frost_marked(STANDARD + EXTRA))
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
# Frost dims the image as its layer weighs more, which cancel on bright pixels: its damage grows on black ones;
# spatter is water at 1-3 and mud at 4-5, saturate desaturates at 1-2 and saturates at 3-5: each grows within.
MONOTONE = [n for n in STANDARD + EXTRA if n not in ("glass_blur", "elastic_transform", "jpeg_compression", "frost",
                                                     "spatter", "saturate")]
MONOTONE_WITHIN = [("spatter", (1, 2, 3)), ("spatter", (4, 5)), ("saturate", (1, 2)), ("saturate", (3, 4, 5)),
                   pytest.param("frost", (1, 2, 3, 4, 5), marks=needs_frost)]


@pytest.mark.parametrize("name", MONOTONE)
def test_degradation_grows_with_severity(name):
    image = smooth_image()
    steps = [distance(name, s, image) for s in (1, 2, 3, 4, 5)]
    assert steps == sorted(steps) and steps[4] > steps[0], steps


@pytest.mark.parametrize("name, severities", MONOTONE_WITHIN)
def test_degradation_grows_within_each_kind_of_damage(name, severities):
    image = np.zeros_like(smooth_image()) if name == "frost" else smooth_image()
    steps = [distance(name, s, image) for s in severities]
    assert steps == sorted(steps) and steps[-1] > steps[0], steps


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


def test_saturate_matches_matplotlib_hsv_round_trip():
    from matplotlib.colors import hsv_to_rgb, rgb_to_hsv

    x = np.random.default_rng(1).random((16, 16, 3))
    x[0, 0], x[0, 1] = 0, 0.5  # black and grey: saturation 0, hue 0 (a shift turns grey red)
    for severity, (scale, shift) in zip((1, 3, 5), ((0.3, 0), (1.5, 0), (2.5, 0.2))):
        hsv = rgb_to_hsv(x)
        hsv[..., 1] = np.clip(hsv[..., 1] * scale + shift, 0, 1)
        np.testing.assert_allclose(CORRUPTIONS["saturate"](x, severity, None), hsv_to_rgb(hsv), atol=1e-12)


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
    from benchbone.inputs.corruption_functions import _plasma_fractal

    grid = _plasma_fractal(32, 2.0, np.random.default_rng(0))
    assert grid.shape == (32, 32) and grid.min() == 0 and grid.max() == 1


@needs_frost
def test_parse_conditions():
    assert parse(None, None, 0) == [None]
    conditions = parse(["contrast", "all"], "2..3", 5)
    assert conditions[0] is None and len(conditions) == 1 + 15 * 2
    assert conditions[1] == Corruption("contrast", 2, 5) and conditions[2] == Corruption("contrast", 3, 5)
    assert parse("speckle_noise", 4, 0) == [None, Corruption("speckle_noise", 4, 0)]


@pytest.mark.parametrize("sets, message", [
    (["corruption=gausian_noise"], "--set corruption=gausian_noise: unknown corruption (did you mean gaussian_noise?)"),
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
    from benchbone.inputs.loading import LoadedImages, iterate_batches
    from benchbone.inputs.splits import whole
    from benchbone.inputs.transforms import Preprocess

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
    assert "Across datasets" not in (tmp_path / "run" / "leaderboard.md").read_text()  # conditions are no datasets
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


# --- frost and spatter: their OpenCV steps against OpenCV itself (opencv-python comes with benchbone[frost]) ----

FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")


def frost_file(name: str) -> str:
    import importlib.metadata

    return str(importlib.metadata.distribution("imagecorruptions").locate_file(f"imagecorruptions/frost/{name}"))


@needs_frost
@pytest.mark.parametrize("severity, keep, amount", [(1, 1, 0.2), (3, 0.9, 0.4), (5, 0.75, 0.45)])
def test_frost_is_the_papers_blend_of_an_opencv_resized_photograph(severity, keep, amount):
    cv2 = pytest.importorskip("cv2")
    image = smooth_image()
    for draw in range(3):
        rng = np.random.default_rng([draw, severity])
        index = int(rng.integers(5))  # the paper draws from the first five photographs
        photo = cv2.resize(cv2.imread(frost_file(FROST_FILES[index])), (0, 0), fx=0.2, fy=0.2)[..., ::-1]
        top, left = int(rng.integers(0, photo.shape[0] - 32)), int(rng.integers(0, photo.shape[1] - 32))
        expected = np.clip(keep * image + amount * photo[top:top + 32, left:left + 32].astype(float), 0, 255)
        out = corrupt_array(image, "frost", severity, np.random.default_rng([draw, severity]))
        assert np.abs(out.astype(float) - expected).max() <= 0.5 + 1e-9


@needs_frost
def test_frost_photographs_decode_as_opencv_reads_them_and_scale_as_its_resize():
    cv2 = pytest.importorskip("cv2")
    from benchbone.inputs.corruption_functions import _frost_layer, frost_photographs

    for index, name in enumerate(FROST_FILES):
        bgr = cv2.imread(frost_file(name))
        assert np.array_equal(frost_photographs()[index], bgr[..., ::-1])
        for factor in (0.2, 0.7):  # 0.2: exact (every fifth pixel); otherwise OpenCV's fixed-point rounding
            resized = cv2.resize(bgr, (0, 0), fx=factor, fy=factor)[..., ::-1].astype(float)
            assert np.abs(_frost_layer(index, factor) - resized).max() <= (0 if factor == 0.2 else 1)


def test_frost_without_the_extra_names_it_and_all_skips_frost(monkeypatch, cli, tmp_path):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    corruptions.frost_photographs.cache_clear()
    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    result = cli(*RUN, "--set", "corruption=frost", "--out", tmp_path / "run")
    assert result.code == 2 and not (tmp_path / "run").exists()
    assert result.err.strip().splitlines() == [
        "benchbone: error: --set corruption=frost needs the paper's frost photographs: pip install "
        "'benchbone[frost]' (the imagecorruptions distribution ships them)"]
    with pytest.warns(UserWarning, match=r"corruption=all: frost skipped, the other 14 run \(pip install "):
        conditions = parse("all", 1, 0)
    assert [c.name for c in conditions[1:]] == [n for n in STANDARD if n != "frost"]
    monkeypatch.undo()
    corruptions.frost_photographs.cache_clear()


def spatter_layer(severity: int, seed: int) -> np.ndarray:
    """The uint8 liquid layer spatter draws (severities 1-3), as its first steps compute it."""
    from scipy import ndimage

    loc, scale, sigma, threshold = [(0.62, 0.1, 0.7, 0.7), (0.65, 0.1, 0.8, 0.7), (0.65, 0.3, 1, 0.69)][severity - 1]
    liquid = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=(32, 32), loc=loc, scale=scale),
                                     sigma, mode="nearest")
    liquid[liquid < threshold] = 0
    return (np.clip(liquid, 0, 1) * 255).astype(np.uint8)


def test_spatter_opencv_steps_match_opencv():
    cv2 = pytest.importorskip("cv2")
    from benchbone.inputs.image_filters import box3, canny, distance_to_edges, equalize_hist

    edged = 0
    for seed in range(40):
        layer = spatter_layer(1 + seed % 3, seed)
        edges = cv2.Canny(layer, 50, 150)
        assert np.array_equal(canny(layer, 50, 150), edges > 0)
        edged += edges.any()
        distance = cv2.threshold(cv2.distanceTransform(255 - edges, cv2.DIST_L2, 5), 20, 20, cv2.THRESH_TRUNC)[1]
        np.testing.assert_allclose(distance_to_edges(edges > 0, 20), distance, atol=1e-5)
        np.testing.assert_allclose(box3(distance), cv2.blur(distance, (3, 3)), atol=1e-5)
        grey = (np.random.default_rng(seed).random((32, 32)) ** 2 * (60 + 4 * seed)).astype(np.uint8)
        assert np.array_equal(equalize_hist(grey), cv2.equalizeHist(grey))
    assert edged > 20  # the comparisons saw real edges


def test_spatter_water_only_brightens_and_mud_blends_towards_brown():
    image = smooth_image().astype(float) / 255
    for severity in (1, 2, 3):
        out = CORRUPTIONS["spatter"](image, severity, np.random.default_rng(severity))
        assert (out >= image - 1e-12).all() and (out > image).any()
    mud = np.array([63, 42, 20]) / 255
    out = CORRUPTIONS["spatter"](image, 5, np.random.default_rng(5))
    channel = np.abs(mud - image).argmax(-1)[..., None]  # where the share is well defined
    share = np.take_along_axis((out - image) / np.where(mud == image, 1, mud - image), channel, -1)
    np.testing.assert_allclose(out, image * (1 - share) + mud * share, atol=1e-9)  # one weight for every channel
    assert (share > 0.8).sum() > 20 and ((share == 0) | (share >= 0.8 - 1e-9)).all()  # blobs weigh >= 0.8


def test_mce_counts_the_standard_corruptions_and_extras_only_get_their_ce():
    errors = {"base": {"clean": 0.1, ("fog", 1): 0.4, ("spatter", 1): 0.4},
              "model": {"clean": 0.1, ("fog", 1): 0.2, ("spatter", 1): 0.8}}
    records = [record(b, 1 - e) if k == "clean" else record(b, 1 - e, *k)
               for b, table in errors.items() for k, e in table.items()]
    model = robustness.table(records, "base").set_index("backbone").loc["model"]
    assert model["CE fog"] == pytest.approx(50) and model["CE spatter"] == pytest.approx(200)
    assert model["mCE"] == pytest.approx(50) and model["corrupted"] == pytest.approx(0.5)  # accuracy: both
