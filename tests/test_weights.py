"""Weights from local files: reading, strict loading, and ``--weights`` / suite ``[weights]`` in runs."""
from __future__ import annotations

import json
import pickle

import pytest
import torch

from benchbone import UsageError
from benchbone.cli import main
from benchbone.execution.harness import run_grid
from benchbone.inputs.weights import file_digest, load_backbone_weights, load_state_dict_file
from benchbone.planning.grid import GridSpec, expand
from benchbone.planning.suites import load_suite
from benchbone.testing import tiny_cnn


def _tiny_state(seed: int = 7) -> dict:
    torch.manual_seed(seed)
    return tiny_cnn(pretrained=False).model.state_dict()


@pytest.mark.parametrize("layout", ["plain.safetensors", "plain.pth", "state_dict.pt", "model.pth", "module.pth"])
def test_state_dict_files_in_common_layouts(tmp_path, layout):
    from safetensors.torch import save_file

    state = _tiny_state()
    path = tmp_path / layout.split(".", 1)[0] / f"w.{layout.split('.')[1]}"
    path.parent.mkdir()
    if layout.endswith(".safetensors"):
        save_file(state, str(path))
    elif layout == "module.pth":
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    elif layout == "plain.pth":
        torch.save(state, path)
    else:
        torch.save({layout.split(".")[0]: state, "epoch": 3}, path)
    model = tiny_cnn(pretrained=False).model
    load_backbone_weights(model, load_state_dict_file(path))
    torch.testing.assert_close(model.state_dict()["0.weight"], state["0.weight"])


def test_classifier_keys_are_ignored_and_reported():
    state = {**_tiny_state(), "fc.weight": torch.zeros(10, 8), "fc.bias": torch.zeros(10)}
    assert load_backbone_weights(tiny_cnn(pretrained=False).model, state) == {"ignored": ["fc.weight", "fc.bias"]}
    head = {**_tiny_state(), "classifier.3.weight": torch.zeros(10, 8)}  # a plugin names its own classifier
    assert load_backbone_weights(tiny_cnn(pretrained=False).model, head, "classifier.3")["ignored"] == ["classifier.3.weight"]


def test_missing_or_unexpected_backbone_keys_are_a_clear_error():
    state = _tiny_state()
    del state["0.weight"]
    state["blocks.9.weight"] = torch.zeros(1)
    model = tiny_cnn(pretrained=False).model
    before = model.state_dict()["1.weight"].clone()
    with pytest.raises(UsageError) as info:
        load_backbone_weights(model, state)
    message = str(info.value)
    assert "1 missing backbone key(s): 0.weight" in message and "1 unexpected key(s): blocks.9.weight" in message
    assert torch.equal(model.state_dict()["1.weight"], before)  # nothing loaded
    bad = {**_tiny_state(), "0.weight": torch.zeros(8, 3, 5, 5)}
    with pytest.raises(UsageError, match=r"shape mismatch.*0\.weight \(8, 3, 5, 5\) vs \(8, 3, 3, 3\)"):
        load_backbone_weights(tiny_cnn(pretrained=False).model, bad)


class Evil:
    def __reduce__(self):
        return (print, ("unpickled arbitrary code",))


def test_files_are_read_with_weights_only(tmp_path):
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"x": Evil()}, protocol=2))
    with pytest.raises(UsageError, match="cannot read weights file"):
        load_state_dict_file(path)
    (tmp_path / "w.npz").write_bytes(b"")
    with pytest.raises(UsageError, match=".safetensors, .pth"):
        load_state_dict_file(tmp_path / "w.npz")
    with pytest.raises(UsageError, match="does not exist"):
        load_state_dict_file(tmp_path / "absent.pth")
    torch.save({"epoch": 3}, tmp_path / "meta.pth")
    with pytest.raises(UsageError, match="not hold a state dict"):
        load_state_dict_file(tmp_path / "meta.pth")


def test_torchvision_checkpoint_with_wrapper_prefix_and_fc(tmp_path):
    import torchvision

    from benchbone_plugins.torchvision_backbones import build

    torch.manual_seed(5)
    state = torchvision.models.mobilenet_v3_small().state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ckpt.pth")
    backbone = build("mobilenet_v3_small", "IMAGENET1K_V1", pretrained=False)
    result = load_backbone_weights(backbone.model, load_state_dict_file(tmp_path / "ckpt.pth"),
                                   backbone.info["classifier"])
    assert result["ignored"] == ["classifier.3.weight", "classifier.3.bias"]
    torch.testing.assert_close(backbone.model.classifier[0].weight, state["classifier.0.weight"])


def _spec(weights: dict, backbones=("test/tiny-cnn",)) -> GridSpec:
    return GridSpec(list(backbones), ["test/blobs"], ["linear-probe"], [], 1, {"c_steps": 2}, None, weights)


def test_weights_file_in_a_run(benchbone_pm, tmp_path):
    from safetensors.torch import save_file

    file = tmp_path / "tiny.safetensors"
    save_file({**_tiny_state(), "fc.weight": torch.zeros(4, 8)}, str(file))
    board = run_grid(_spec({"test/tiny-cnn": str(file)}, ["test/tiny-cnn"]), out=tmp_path / "run", pm=benchbone_pm,
                     cache_dir=tmp_path / "cache", quiet=True, echo=False)
    assert list(board.backbone) == ["test/tiny-cnn@tiny.safetensors"] and list(board.status) == ["ok"]
    record = json.loads(next((tmp_path / "run" / "records").glob("*.json")).read_text())
    digest = file_digest(file)
    assert record["backbone_info"]["weights"] == f"file:tiny.safetensors@sha256:{digest}"
    assert record["cell"]["weights_sha256"] == digest

    cells = expand(_spec({"test/tiny-cnn": str(file)}), benchbone_pm.registries())
    plain = expand(_spec({}), benchbone_pm.registries())
    save_file(_tiny_state(seed=8), str(file))
    changed = expand(_spec({"test/tiny-cnn": str(file)}), benchbone_pm.registries())
    assert len({cells[0].id, plain[0].id, changed[0].id}) == 3  # the digest is part of the cell id


def test_bad_weights_stop_the_run(benchbone_pm, tmp_path):
    torch.save({"0.weight": torch.zeros(8, 3, 3, 3)}, tmp_path / "partial.pth")
    with pytest.raises(UsageError, match="missing backbone key"):
        run_grid(_spec({"test/tiny-cnn": str(tmp_path / "partial.pth")}), out=tmp_path / "run", pm=benchbone_pm,
                 cache_dir=tmp_path / "cache", quiet=True, echo=False)
    with pytest.raises(UsageError, match="not random init"):
        expand(_spec({"test/tiny-cnn@random": str(tmp_path / "partial.pth")}), benchbone_pm.registries())
    with pytest.raises(UsageError, match="not in this run"):
        expand(_spec({"pixels": str(tmp_path / "partial.pth")}), benchbone_pm.registries())
    with pytest.raises(UsageError, match="no such file"):
        expand(_spec({"test/tiny-cnn": str(tmp_path / "absent.pth")}), benchbone_pm.registries())


def test_weights_make_an_untrained_timm_arch_usable(benchbone_pm, tmp_path):
    registry = benchbone_pm.registries().backbones
    arch = next(n for n in registry.names("timm/*") if registry.get(n).meta.get("pretrained") is False)
    torch.save({}, tmp_path / "w.pth")
    with pytest.raises(UsageError, match="no pretrained weights"):
        expand(_spec({}, [arch]), benchbone_pm.registries())
    assert expand(_spec({arch: str(tmp_path / "w.pth")}, [arch]), benchbone_pm.registries())[0].weights


def test_suite_weights_are_relative_to_the_suite(tmp_path):
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "s.toml").write_text('backbones = ["resnet50"]\n[weights]\nresnet50 = "../w/r50.pth"\n')
    assert load_suite(tmp_path / "suites" / "s.toml").weights == {"resnet50": str(tmp_path / "w" / "r50.pth")}


def test_cli_weights_flag(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BENCHBONE_LOAD_PLUGINS", "")
    file = tmp_path / "tiny.pth"
    torch.save(_tiny_state(), file)
    base = ["run", "-p", "benchbone.testing", "-b", "test/tiny-cnn", "-d", "test/blobs", "-s", "linear-probe",
            "--set", "c_steps=2", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run"), "-q"]
    assert main([*base, "--weights", f"test/tiny-cnn={file}"]) == 0
    assert "test/tiny-cnn@tiny.pth" in capsys.readouterr().out
    assert main([*base, "--weights", "test/tiny-cnn"]) == 2
    assert "NAME=PATH" in capsys.readouterr().err
