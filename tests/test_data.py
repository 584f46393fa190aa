"""The data module: the three sources, the split, the transforms and every bad input it catches."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from sklearn.datasets import load_digits

from repro.composition import register_configs
from repro.data import DataBundle, build_data, dataset_config, validate_dataset
from repro.errors import UserError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def _cfg(**values: object) -> DictConfig:
    """A dataset config typed like the one Hydra composes."""
    return OmegaConf.structured(dataset_config(**values))


def _targets(loader: torch.utils.data.DataLoader) -> list[int]:
    return [int(t) for _, targets in loader for t in targets]


def _images(loader: torch.utils.data.DataLoader) -> torch.Tensor:
    return torch.cat([images for images, _ in loader])


def _write_tree(root: Path, counts: dict[str, int], size: int = 12) -> Path:
    """Write a small ImageFolder tree: `counts[class]` PNGs per class, left half dark, right half light."""
    rng = np.random.default_rng(0)
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, size=(size, size + i, 3), dtype=np.uint8)
            pixels[:, : pixels.shape[1] // 2] //= 4  # not mirror-symmetric, so a flip shows
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def digits_binary(digits_cache: Path) -> DataBundle:
    cfg = _cfg(name="digits", cache_dir=str(digits_cache), image_size=8, augment=False)
    return build_data(cfg, 256, seed=0)


# --- digits ---------------------------------------------------------------------------------------


def test_digits_binary_has_two_classes_that_split_the_digits_at_five(digits_binary: DataBundle) -> None:
    digits = load_digits().target
    assert digits_binary.class_names == ["0-lt5", "1-ge5"]
    assert digits_binary.num_classes == 2 and digits_binary.binary
    assert digits_binary.n_train + digits_binary.n_val == len(digits) == 1797
    counts = Counter(_targets(digits_binary.train_loader) + _targets(digits_binary.val_loader))
    assert counts == {0: int((digits < 5).sum()), 1: int((digits >= 5).sum())}


def test_digits_multiclass_has_ten_classes(digits_cache: Path) -> None:
    cfg = _cfg(name="digits", task="multiclass", cache_dir=str(digits_cache), image_size=8)
    bundle = build_data(cfg, 64, 0)
    assert bundle.class_names == [str(d) for d in range(10)]
    assert bundle.num_classes == 10 and not bundle.binary
    assert sorted(p.name for p in (digits_cache / "digits-multiclass").iterdir()) == bundle.class_names
    images, targets = next(iter(bundle.val_loader))
    assert images.shape == (64, 3, 8, 8) and targets.dtype == torch.int64


def test_digits_tree_is_written_once_and_reused(digits_cache: Path, digits_binary: DataBundle) -> None:
    root = digits_cache / "digits-binary"
    files = sorted(root.rglob("*.png"))
    assert len(files) == 1797
    mtimes = [f.stat().st_mtime_ns for f in files]
    build_data(_cfg(name="digits", cache_dir=str(digits_cache), image_size=8), 32, seed=1)
    assert [f.stat().st_mtime_ns for f in sorted(root.rglob("*.png"))] == mtimes
    assert not [p for p in digits_cache.iterdir() if p.name.startswith(".")], "a temporary tree is left"


def test_digits_png_holds_the_digit_scaled_to_255(digits_cache: Path, digits_binary: DataBundle) -> None:
    digits = load_digits()
    pixels = np.asarray(Image.open(digits_cache / "digits-binary" / "0-lt5" / "0000.png"))  # digits[0] is a 0
    assert digits.target[0] == 0
    assert pixels.shape == (8, 8)
    np.testing.assert_array_equal(pixels, np.round(digits.images[0] * 255 / 16))


def test_a_crash_while_writing_leaves_no_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saved = []

    def failing_save(self: Image.Image, file: Path, *args: object, **kwargs: object) -> None:
        if len(saved) == 100:
            raise OSError("disk full")
        saved.append(file)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        build_data(_cfg(name="digits", cache_dir=str(tmp_path)), 32, 0)
    assert list(tmp_path.iterdir()) == []


# --- the split ------------------------------------------------------------------------------------


def test_split_is_stratified_70_30(digits_binary: DataBundle) -> None:
    train, val = Counter(_targets(digits_binary.train_loader)), Counter(_targets(digits_binary.val_loader))
    for c in (0, 1):
        assert val[c] / (train[c] + val[c]) == pytest.approx(0.3, abs=0.005)
    assert digits_binary.n_val == len(_targets(digits_binary.val_loader)) == 540  # ceil(0.3 * 1797)


def test_same_seed_gives_same_split_and_order(digits_cache: Path) -> None:
    cfg = _cfg(name="digits", cache_dir=str(digits_cache), image_size=8, augment=False)
    first, again, other = (build_data(cfg, 256, seed) for seed in (0, 0, 1))
    assert torch.equal(_images(again.val_loader), _images(first.val_loader))
    first_epoch = _images(first.train_loader)
    assert torch.equal(_images(again.train_loader), first_epoch)  # same shuffle
    assert not torch.equal(_images(first.train_loader), first_epoch)  # a new shuffle each epoch
    assert not torch.equal(_images(other.val_loader), _images(first.val_loader))


# --- imagefolder and synthetic --------------------------------------------------------------------


def test_imagefolder_reads_any_class_folders_as_rgb(tmp_path: Path) -> None:
    root = _write_tree(tmp_path / "pets", {"cat": 6, "dog": 4})
    Image.new("L", (5, 7), 128).save(root / "dog" / "gray.png")  # grayscale becomes RGB
    (root / "dog" / "notes.txt").write_text("not an image, ignored")
    cfg = _cfg(name="imagefolder", path=str(root), image_size=16)
    validate_dataset(cfg)
    bundle = build_data(cfg, batch_size=4, seed=0)
    assert bundle.class_names == ["cat", "dog"] and bundle.binary
    assert (bundle.n_train, bundle.n_val) == (7, 4)
    images, targets = next(iter(bundle.train_loader))
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.float32
    assert set(targets.tolist()) <= {0, 1}


def test_synthetic_images_have_the_configured_shape_and_are_seeded() -> None:
    cfg = _cfg(name="synthetic", num_images=40, num_classes=4, image_size=16, augment=False)
    validate_dataset(cfg)
    bundle = build_data(cfg, batch_size=8, seed=3)
    assert (bundle.num_classes, bundle.binary, bundle.n_train, bundle.n_val) == (4, False, 28, 12)
    assert Counter(_targets(bundle.val_loader)) == {0: 3, 1: 3, 2: 3, 3: 3}
    images, targets = next(iter(bundle.train_loader))
    assert images.shape == (8, 3, 16, 16) and targets.dtype == torch.int64
    assert torch.equal(_images(build_data(cfg, 8, seed=3).val_loader), _images(bundle.val_loader))
    assert not torch.equal(_images(build_data(cfg, 8, seed=4).val_loader), _images(bundle.val_loader))


# --- transforms and loaders -----------------------------------------------------------------------


def test_augmentation_applies_to_the_training_set_only(tmp_path: Path) -> None:
    root = _write_tree(tmp_path / "tree", {"a": 4, "b": 4})
    for augment in (True, False):
        bundle = build_data(_cfg(name="imagefolder", path=str(root), image_size=12, augment=augment), 4, 0)
        train, val = bundle.train_loader.dataset, bundle.val_loader.dataset
        train_draws = [train[0][0] for _ in range(4)]
        assert all(torch.equal(val[0][0], val[0][0]) for _ in range(4))
        assert any(not torch.equal(draw, train_draws[0]) for draw in train_draws[1:]) == augment


#: The example image of TensorFlow's API docs for `tf.image.adjust_saturation`, `adjust_hue` and
#: `adjust_contrast` (2 x 2 pixels, RGB last), and what the docs print for each (tensorflow.org, TF 2.x).
_TF_DOC_IMAGE = [[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], [[7.0, 8.0, 9.0], [10.0, 11.0, 12.0]]]
_TF_DOC_RESULTS = {
    ("saturation", 0.5): [[[2.0, 2.5, 3.0], [5.0, 5.5, 6.0]], [[8.0, 8.5, 9.0], [11.0, 11.5, 12.0]]],
    ("hue", 0.2): [[[2.4, 1.0, 3.0], [5.4, 4.0, 6.0]], [[8.4, 7.0, 9.0], [11.4, 10.0, 12.0]]],
    ("contrast", 2.0): [[[-3.5, -2.5, -1.5], [2.5, 3.5, 4.5]], [[8.5, 9.5, 10.5], [14.5, 15.5, 16.5]]],
}


@pytest.mark.parametrize(("adjustment", "value"), list(_TF_DOC_RESULTS))
def test_colour_changes_compute_what_tensorflow_documents(adjustment: str, value: float) -> None:
    from repro.data.transforms import _brightness_and_contrast, _saturation_and_hue

    def draw(name: str, neutral: float) -> torch.Tensor:
        return torch.full((1, 1, 1, 1), value if name == adjustment else neutral)

    image = torch.tensor(_TF_DOC_IMAGE).permute(2, 0, 1).unsqueeze(0)  # (1, 3, 2, 2)
    if adjustment == "contrast":
        result = _brightness_and_contrast(image, draw("brightness", 0.0), draw("contrast", 1.0))
    else:
        result = _saturation_and_hue(image, draw("saturation", 1.0), draw("hue", 0.0))
    expected = torch.tensor(_TF_DOC_RESULTS[adjustment, value])
    torch.testing.assert_close(result.squeeze(0).permute(1, 2, 0), expected)


def test_the_study_augmentation_keeps_pixels_in_range_and_leaves_its_input_alone() -> None:
    from repro.data.transforms import augment

    images = torch.rand(8, 3, 6, 6)
    before = images.clone()
    torch.manual_seed(1)
    out = augment(images)
    assert torch.equal(images, before)
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1 and not torch.equal(out, images)


def test_validation_images_are_imagenet_normalised(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    for name, value in (("black", 0), ("white", 255)):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (4, 4), (value,) * 3).save(root / name / f"{i}.png")
    bundle = build_data(_cfg(name="imagefolder", path=str(root), image_size=4), 8, 0)
    for images, targets in bundle.val_loader:
        for image, target in zip(images, targets, strict=True):
            pixel = float(target)  # black is class 0, white class 1
            expected = (pixel - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
            torch.testing.assert_close(image[:, 0, 0], expected)


def test_loader_settings_follow_the_config() -> None:
    cfg = _cfg(name="synthetic", num_images=20, image_size=8, num_workers=2)
    bundle = build_data(cfg, batch_size=3, seed=0)
    for loader in (bundle.train_loader, bundle.val_loader):
        assert loader.num_workers == 2 and loader.persistent_workers and not loader.drop_last
        assert loader.pin_memory == torch.cuda.is_available()
    assert len(bundle.train_loader) == 5  # 14 images, the last batch kept
    plain = build_data(_cfg(name="synthetic", num_images=20, image_size=8), 3, 0)
    assert plain.train_loader.num_workers == 0 and not plain.train_loader.persistent_workers


# --- the YAML files -------------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["digits", "imagefolder", "synthetic"])
def test_every_dataset_option_composes_against_the_schema(option: str) -> None:
    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(overrides=[f"+dataset={option}"]).dataset
        assert cfg.name == option
        if option == "imagefolder":  # the schema's null wins over the YAML's ???: validation enforces it
            with pytest.raises(UserError, match="dataset.path is not set"):
                validate_dataset(cfg)
        else:
            validate_dataset(cfg)
        with pytest.raises(ConfigCompositionException):
            compose(overrides=[f"+dataset={option}", "dataset.imagesize=64"])  # typo caught by the schema


def test_digits_is_binary_by_default() -> None:
    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        assert compose(overrides=["+dataset=digits"]).dataset.task == "binary"


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"name": "digit"}, "'digit'"),
        ({"name": "digits", "task": "regression"}, "'regression'"),
        ({"name": "digits", "image_size": 0}, "dataset.image_size=0"),
        ({"name": "digits", "image_size": -32}, "dataset.image_size=-32"),
        ({"name": "digits", "val_fraction": 0.0}, "dataset.val_fraction=0.0"),
        ({"name": "digits", "val_fraction": 1.0}, "dataset.val_fraction=1.0"),
        ({"name": "digits", "val_fraction": 0.9995}, "dataset.val_fraction=0.9995"),
        ({"name": "digits", "num_workers": -1}, "dataset.num_workers=-1"),
        ({"name": "synthetic", "num_classes": 1}, "dataset.num_classes=1"),
        ({"name": "synthetic", "num_images": 3}, "dataset.num_images=3"),
        ({"name": "imagefolder"}, "dataset.path is not set"),
    ],
)
def test_bad_config_values_are_named(values: dict[str, object], named: str) -> None:
    with pytest.raises(UserError) as caught:
        validate_dataset(_cfg(**values))
    assert named in str(caught.value) and "\n" not in str(caught.value)


def test_unknown_dataset_suggests_the_closest_name() -> None:
    with pytest.raises(UserError, match="did you mean dataset=digits"):
        validate_dataset(_cfg(name="digit"))


def test_non_positive_batch_size_is_named() -> None:
    with pytest.raises(UserError, match="training.batch_size=0"):
        build_data(_cfg(name="synthetic", num_images=8), batch_size=0, seed=0)


def _missing(tmp: Path) -> Path:
    return tmp / "nowhere"


def _a_file(tmp: Path) -> Path:
    (tmp / "file.png").write_bytes(b"")
    return tmp / "file.png"


def _empty(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


def _one_class(tmp: Path) -> Path:
    return _write_tree(tmp / "one", {"only": 3})


def _empty_class(tmp: Path) -> Path:
    root = _write_tree(tmp / "tree", {"a": 3})
    (root / "b").mkdir()
    (root / "b" / "readme.txt").write_text("no images here")
    return root


def _one_image_class(tmp: Path) -> Path:
    return _write_tree(tmp / "tree", {"a": 5, "rare": 1})


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (_missing, "does not exist"),
        (_a_file, "is not a folder"),
        (_empty, "holds no class sub-folders"),
        (_one_class, "one class only ('only')"),
        (_empty_class, "class folder 'b' holds no images"),
        (_one_image_class, "class 'rare' has 1 image"),
    ],
)
def test_bad_image_folders_are_named(tmp_path: Path, make, named: str) -> None:  # noqa: ANN001
    path = make(tmp_path)
    cfg = _cfg(name="imagefolder", path=str(path))
    for check in (lambda: validate_dataset(cfg), lambda: build_data(cfg, 4, 0)):
        with pytest.raises(UserError) as caught:
            check()
        message = str(caught.value)
        assert named in message and "\n" not in message
        if make is not _one_image_class:
            assert str(path) in message


@pytest.mark.parametrize("content", [b"", b"not a png at all", b"truncated"])
def test_an_unreadable_image_is_named(tmp_path: Path, content: bytes) -> None:
    root = _write_tree(tmp_path / "tree", {"a": 3, "b": 3})
    if content == b"truncated":
        good = (root / "b" / "0.png").read_bytes()
        content = good[: len(good) // 2]
    bad = root / "b" / "broken.png"
    bad.write_bytes(content)
    with pytest.raises(UserError) as caught:
        validate_dataset(_cfg(name="imagefolder", path=str(root)))
    assert str(bad) in str(caught.value) and "\n" not in str(caught.value)
