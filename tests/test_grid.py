import pytest

from benchbone.errors import UsageError
from benchbone.planning.grid import GridSpec, expand, parse_overrides
from benchbone.planning.suites import load_suite
from benchbone.plugins import get_plugin_manager


@pytest.fixture
def regs():
    return get_plugin_manager(entrypoints=False, extra=["benchbone.testing"]).registries()


def test_cross_product_of_names_seeds_and_random_init(regs):
    spec = GridSpec(["test/tiny-cnn", "test/tiny-cnn@random", "resnet50"], ["test/blobs", "digits"],
                    ["linear-probe", "finetune"], seeds=2)
    cells = expand(spec, regs)
    assert len(cells) == 3 * 2 * 2 * 2
    assert len({c.id for c in cells}) == len(cells)
    assert {c.backbone_label for c in cells} == {"test/tiny-cnn", "test/tiny-cnn@random", "tv/resnet50.IMAGENET1K_V2"}
    assert cells[0].metrics[0] == "top1"  # registration order: top1 first


def test_patterns_expand_against_the_registry(regs):
    cells = expand(GridSpec(["tv/resnet50*"], ["test/*"], ["linear-*"]), regs)
    assert [c.backbone for c in cells] == ["tv/resnet50.IMAGENET1K_V1", "tv/resnet50.IMAGENET1K_V2"]


def test_cell_id_is_stable_and_ignores_batch_size(regs):
    base = GridSpec(["test/tiny-cnn"], ["test/blobs"], ["linear-probe"])
    a = expand(base, regs)[0]
    b = expand(GridSpec(**{**base.__dict__, "overrides": {"batch_size": 7}}), regs)[0]
    c = expand(GridSpec(**{**base.__dict__, "overrides": {"val_fraction": 0.2}}), regs)[0]
    assert a.id == b.id != c.id
    assert a.id == expand(base, regs)[0].id


def test_overrides_are_typed_and_scoped(regs):
    spec = GridSpec(["test/tiny-cnn"], ["test/blobs"], ["linear-probe", "finetune"],
                    overrides=parse_overrides(["epochs=2", "linear-probe.c_steps=3", "val_fraction=0.25"]))
    cells = {c.strategy: c for c in expand(spec, regs)}
    assert dict(cells["finetune"].params)["epochs"] == 2
    assert dict(cells["linear-probe"].params)["c_steps"] == 3
    assert dict(cells["finetune"].options)["val_fraction"] == 0.25


@pytest.mark.parametrize("override, message", [
    (["nonsense=1"], "unknown parameter 'nonsense'"),
    (["c_steps=many"], "expected int"),
    (["linear-probe.epochs=2"], "strategy 'linear-probe' has no parameter 'epochs'"),
    (["finetune.epochs=2"], "strategy 'finetune' is not in this run"),
    (["image_size=3"], "image_size"),
])
def test_bad_overrides_are_usage_errors(regs, override, message):
    spec = GridSpec(["test/tiny-cnn"], ["test/blobs"], ["linear-probe"], overrides=parse_overrides(override))
    with pytest.raises(UsageError, match=message):
        expand(spec, regs)


def test_set_needs_key_equals_value():
    with pytest.raises(UsageError, match="is not key=value"):
        parse_overrides(["epochs"])


def test_suite_and_flags_give_the_same_cells(regs, tmp_path):
    suite = tmp_path / "suite.toml"
    suite.write_text(
        'backbones = ["test/tiny-cnn", "test/tiny-cnn@random"]\n'
        'datasets = ["test/blobs"]\nstrategies = ["linear-probe", "finetune"]\nmetrics = ["top1"]\nseeds = 2\n'
        '[set]\nval_fraction = 0.2\n[set.finetune]\nepochs = 1\n'
    )
    from_suite = expand(load_suite(suite), regs)
    from_flags = expand(GridSpec(["test/tiny-cnn", "test/tiny-cnn@random"], ["test/blobs"],
                                 ["linear-probe", "finetune"], ["top1"], 2,
                                 parse_overrides(["val_fraction=0.2", "finetune.epochs=1"])), regs)
    assert [c.id for c in from_suite] == [c.id for c in from_flags]


def test_malformed_suite_names_file_and_line(tmp_path):
    suite = tmp_path / "bad.toml"
    suite.write_text('backbones = ["a"]\ndatasets = ["x" "y"]\n')
    with pytest.raises(UsageError, match=r"bad.toml: malformed TOML: .*line 2"):
        load_suite(suite)
    suite.write_text('backbones = ["a"]\nbackbone = ["b"]\n')
    with pytest.raises(UsageError, match=r"bad.toml:2: unknown key 'backbone'"):
        load_suite(suite)
    suite.write_text('seeds = "three"\n')
    with pytest.raises(UsageError, match=r"bad.toml:1: seeds must be a positive integer"):
        load_suite(suite)
    with pytest.raises(UsageError, match="cannot read suite file"):
        load_suite(tmp_path / "missing.toml")


def test_a_grid_needs_each_kind(regs):
    with pytest.raises(UsageError, match="no dataset given; pass --dataset"):
        expand(GridSpec(["test/tiny-cnn"], [], ["linear-probe"]), regs)


def test_unknown_weights_suffix(regs):
    with pytest.raises(UsageError, match="unknown weights suffix"):
        expand(GridSpec(["test/tiny-cnn@imagenet"], ["test/blobs"], ["linear-probe"]), regs)


def test_a_suite_may_give_each_dataset_its_own_data_directory(regs, tmp_path):
    (tmp_path / "cifar").mkdir()
    suite = tmp_path / "suite.toml"
    suite.write_text('backbones = ["test/tiny-cnn"]\ndatasets = ["test/blobs", "digits"]\nstrategies = ["knn"]\n'
                     '[data_dir]\ndigits = "cifar"\n')
    dirs = {c.dataset: c.data_dir for c in expand(load_suite(suite), regs)}
    assert dirs == {"digits": str(tmp_path / "cifar"), "test/blobs": None}
    flags = expand(load_suite(suite).merge(GridSpec(data_dir="/elsewhere")), regs)  # --data-dir: every dataset
    assert {c.data_dir for c in flags} == {"/elsewhere"}
    suite.write_text('backbones = ["test/tiny-cnn"]\ndatasets = ["test/blobs"]\nstrategies = ["knn"]\n'
                     '[data_dir]\ndigits = "cifar"\n')
    with pytest.raises(UsageError, match="names 'digits', which is not a dataset of this grid"):
        expand(load_suite(suite), regs)
