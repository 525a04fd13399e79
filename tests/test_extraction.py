"""Feature extraction: out-of-memory batches split in halves, precision and memory-format settings."""
import pytest
import torch

from benchbone.inputs.extraction import ExtractionSettings, extract


class RunsOutOfMemory(torch.nn.Module):
    """Pools and flattens, but 'runs out of memory' on batches larger than ``limit``."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit, self.seen = limit, []

    def forward(self, x):
        if len(x) > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate a batch of {len(x)}")
        self.seen.append(len(x))
        return x.mean(dim=(2, 3))


def batches(n=20, size=8):
    x = torch.arange(n * 3 * 4 * 4, dtype=torch.float32).view(n, 3, 4, 4)
    return [(x[i:i + size], None) for i in range(0, n, size)], x.mean(dim=(2, 3))


def test_out_of_memory_halves_the_batch_and_keeps_every_image():
    model = RunsOutOfMemory(limit=3)
    data, expected = batches()
    feats, stats = extract(model, data, 3, 20, ExtractionSettings("cpu", batch_size=8))
    assert torch.equal(feats, expected)  # nothing lost, nothing repeated, order kept
    assert stats["batch_size"] == 2 and max(model.seen) == 2
    assert stats["images"] == 20 and stats["images_per_s"] > 0


def test_other_errors_are_not_retried():
    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        extract(Broken(), batches()[0], 3, 20, ExtractionSettings("cpu", batch_size=8))


def test_out_of_memory_on_a_single_image_fails():
    with pytest.raises(torch.OutOfMemoryError):
        extract(RunsOutOfMemory(limit=0), batches()[0], 3, 20, ExtractionSettings("cpu", batch_size=8))


def test_automatic_settings_per_device():
    assert ExtractionSettings("cpu", 64).describe() == {"dtype": "float32", "channels_last": False, "compile": False}
    cuda = ExtractionSettings("cuda", 64)
    assert cuda.autocast_dtype is torch.bfloat16 and cuda.use_channels_last
    assert ExtractionSettings("cuda:1", 64, precision="fp32", channels_last=False).describe()["dtype"] == "float32"


def test_bf16_and_channels_last_on_cpu_give_close_features_and_other_cells(run_tiny_benchmark, tmp_path):
    import json

    fp32 = run_tiny_benchmark(out=tmp_path / "a", metrics=["top1"])
    bf16 = run_tiny_benchmark(out=tmp_path / "b", metrics=["top1"],
                              overrides={"precision": "bf16", "channels_last": True})
    assert fp32.loc[0, "status"] == bf16.loc[0, "status"] == "ok"
    records = [json.loads(next((tmp_path / d / "records").glob("*.json")).read_text()) for d in "ab"]
    assert records[0]["cell_id"] != records[1]["cell_id"]
    assert records[1]["features"]["train"]["dtype"] == "bfloat16"
    assert records[1]["features"]["train"]["channels_last"] is True
    features = sorted((tmp_path / "cache" / "features").glob("*.safetensors"))
    assert len(features) == 4  # train and test, once per precision: the settings are part of the cache key


def test_at_most_one_batch_of_images_is_alive_during_extraction():
    """When the next batch is made on the device, no reference to the previous one is left."""
    import gc
    import weakref

    from benchbone import ImageTensorDataset
    from benchbone.api import Backbone
    from benchbone.inputs.loading import LoadedImages, iterate_batches
    from benchbone.inputs.splits import whole
    from benchbone.inputs.transforms import Preprocess

    refs, alive = [], []

    class Watched(Preprocess):
        def __call__(self, images, augment=None):
            gc.collect()
            alive.append(sum(ref() is not None for ref in refs))
            batch = super().__call__(images, augment)
            refs.append(weakref.ref(batch))
            return batch

    images = torch.randint(0, 255, (40, 3, 8, 8), dtype=torch.uint8)
    dataset = ImageTensorDataset(images, torch.zeros(40, dtype=torch.long))
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    base = Preprocess.for_backbone(Backbone(model, 3, 16, (0.5,) * 3, (0.5,) * 3))
    preprocess = Watched(base.size, base.crop_pct, base.interpolation, base.mean, base.std)
    batches = iterate_batches(LoadedImages(dataset), whole("train", dataset), preprocess, batch_size=8, device="cpu")
    extract(model, batches, 3, 40, ExtractionSettings("cpu", 8))
    assert alive == [0] * 5


@pytest.mark.gpu
def test_cuda_features_match_the_cpu_forward_pass():
    """On CUDA (fp32, no channels_last) the extracted features are the model's own CPU forward pass."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten()).eval()
    x = torch.randn(20, 3, 16, 16)
    with torch.inference_mode():
        expected = model(x)
    feats, _ = extract(model.cuda(), [(x[i:i + 8].cuda(), None) for i in range(0, 20, 8)], 8, 20,
                       ExtractionSettings("cuda", batch_size=8, precision="fp32", channels_last=False))
    torch.testing.assert_close(feats.float().cpu(), expected, rtol=1e-4, atol=1e-4)
