import pytest

from benchbone.errors import DuplicateNameError, UnknownNameError, UsageError
from benchbone.registry import Registry, natural_key


def make():
    reg = Registry("backbone")
    for name in ["resnet101", "resnet18", "resnet50.a1_in1k", "vit_small", "convnext_tiny"]:
        reg.add(name, object(), plugin="p")
    return reg


def test_natural_sort_and_patterns():
    reg = make()
    assert reg.names("resnet*") == ["resnet18", "resnet50.a1_in1k", "resnet101"]
    assert reg.names("*", exclude="resnet*") == ["convnext_tiny", "vit_small"]
    assert sorted(["a10", "a9", "a100"], key=natural_key) == ["a9", "a10", "a100"]


def test_resolve_keeps_order_without_repeats():
    reg = make()
    assert reg.resolve(["vit_small", "resnet1*", "resnet18"]) == ["vit_small", "resnet18", "resnet101"]


def test_pattern_matching_nothing_is_a_usage_error():
    with pytest.raises(UsageError, match="no backbone matches 'efficientnet\\*'"):
        make().resolve(["efficientnet*"])


def test_unknown_name_suggests_close_names():
    with pytest.raises(UnknownNameError) as info:
        make().get("resnet5")
    message = str(info.value)
    assert "unknown backbone 'resnet5'" in message and "resnet50.a1_in1k" in message
    assert "benchbone list backbones" in message
    assert isinstance(info.value, KeyError)


def test_aliases_resolve_to_the_canonical_name():
    reg = Registry("backbone")
    reg.add("tv/resnet50.IMAGENET1K_V2", object(), plugin="tv", aliases=("resnet50",))
    assert reg.get("resnet50").name == "tv/resnet50.IMAGENET1K_V2"
    assert reg.resolve(["resnet50"]) == ["tv/resnet50.IMAGENET1K_V2"]


def test_duplicate_names_name_both_plugins():
    reg = Registry("dataset")
    reg.add("cifar10", object(), plugin="first")
    with pytest.raises(DuplicateNameError, match="both plugin 'first' and plugin 'second'"):
        reg.add("cifar10", object(), plugin="second")
    with pytest.raises(DuplicateNameError, match="'cifar10'"):
        reg.add("other", object(), plugin="second", aliases=("cifar10",))


def test_registering_the_same_object_twice_is_harmless():
    reg, obj = Registry("metric"), object()
    reg.add("top1", obj, plugin="a")
    reg.add("top1", obj, plugin="a")
    assert reg.names() == ["top1"]


@pytest.mark.parametrize("bad", ["", "../escape", "with space", "a@b"])
def test_invalid_names_are_refused(bad):
    with pytest.raises(UsageError, match="invalid"):
        Registry("backbone").add(bad, object(), plugin="p")


def test_prefix_entries_build_from_the_value():
    reg = Registry("dataset")
    reg.add("imagefolder:", lambda value: ("built", value), plugin="p", prefix=True)
    entry = reg.get("imagefolder:/data/pets")
    assert entry.obj == ("built", "/data/pets") and entry.name == "imagefolder:/data/pets"
    assert reg.get("imagefolder:/data/pets") is entry
    reg.add("images", object(), plugin="p")
    assert reg.resolve(["image*"]) == ["images"]  # a pattern never picks a prefix entry
    with pytest.raises(UsageError, match="needs a value after the colon"):
        reg.get("imagefolder:")


def test_slash_prefixes_take_the_rest_of_the_name():
    reg = Registry("backbone")
    reg.add("hf/", lambda value: ("hf", value), plugin="p", prefix=True)
    reg.add("hf/special/", lambda value: ("special", value), plugin="p", prefix=True)
    reg.add("timm/hf-hub:", lambda value: ("hub", value), plugin="p", prefix=True)
    reg.add("hf/org/fixed", "fixed", plugin="p")
    assert reg.get("hf/facebook/dinov2-small").obj == ("hf", "facebook/dinov2-small")
    assert reg.get("hf/special/ViT-B-32:openai").obj == ("special", "ViT-B-32:openai")  # the longest prefix wins
    assert reg.get("timm/hf-hub:org/name").obj == ("hub", "org/name")  # a colon prefix still ends at the colon
    assert reg.get("hf/org/fixed").obj == "fixed"  # a registered name beats a prefix
    with pytest.raises(UsageError, match="needs a value after the slash"):
        reg.get("hf/")
    with pytest.raises(UsageError, match="a prefix name ends with ':' or '/'"):
        reg.add("bare", object(), plugin="p", prefix=True)


def test_each_kind_has_one_plural_used_by_hooks_cli_and_messages(cli):
    from benchbone import hookspecs
    from benchbone.cli import build_parser
    from benchbone.kinds import KINDS

    assert KINDS["strategy"] == "strategies"
    for one, many in KINDS.items():
        assert hasattr(hookspecs, f"benchbone_register_{many}")
        unknown = str(UnknownNameError(one, "nope", ["other"]))
        assert unknown.endswith(f"See `benchbone list {many}`.")
        with pytest.raises(UsageError, match=rf"see `benchbone list {many}`"):
            Registry(one).resolve(["nope*"])
    listing = build_parser()._subparsers._group_actions[0].choices["list"]
    assert next(a for a in listing._actions if a.dest == "kind").choices == tuple(KINDS.values())
    result = cli("run", "-b", "resnet50", "-d", "digits", "-s", "linear-probs")
    assert result.code == 2 and "See `benchbone list strategies`." in result.err and "strategys" not in result.err


def test_list_finds_names_by_their_aliases(cli):
    result = cli("list", "backbones", "resnet50")
    assert result.code == 0
    assert result.out.split()[0] == "tv/resnet50.IMAGENET1K_V2" and "alias tv/resnet50, resnet50" in result.out
    assert cli("list", "backbones", "tv/resnet5?").out.split()[0] == "tv/resnet50.IMAGENET1K_V2"
    assert cli("list", "backbones", "no-such-net*").code == 2
