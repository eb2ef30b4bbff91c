"""data.augment: exact zero-filled shifts and fair flips of training inputs only, drawn from the
checkpointed global RNG (so resume stays exact), and refused where it cannot be right."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from conftest import assert_resume_is_exact
from distil.config import load_config
from distil.data import ArrayDataset, DataConfig, load_data
from distil.data.augment import AugmentConfig, AugmentedDataset
from distil.errors import ConfigError
from distil.pipeline import run
from distil.tasks.classifier_models import teacher_cache_key

SHIFT = 2


def translated(sample: torch.Tensor, offsets: tuple[int, ...], shift: int) -> torch.Tensor:
    """Reference: zero-pad the spatial axes by ``shift``, torch.roll by ``offsets``, crop the
    middle back out — the sample moved by ``offsets``, zeros where nothing moved in."""
    axes = tuple(range(sample.ndim - len(offsets), sample.ndim))
    padded = torch.zeros(
        *sample.shape[: axes[0]], *(sample.shape[a] + 2 * shift for a in axes), dtype=sample.dtype
    )
    middle = (Ellipsis, *(slice(shift, shift + sample.shape[a]) for a in axes))
    padded[middle] = sample
    return torch.roll(padded, offsets, dims=axes)[middle]


def all_offsets(dims: int, shift: int) -> list[tuple[int, ...]]:
    grid = torch.cartesian_prod(*[torch.arange(-shift, shift + 1)] * dims).reshape(-1, dims)
    return [tuple(row) for row in grid.tolist()]


def which_offset(out: torch.Tensor, sample: torch.Tensor, shift: int) -> tuple[int, ...]:
    """The one offset whose reference translation ``out`` equals exactly (fails otherwise)."""
    dims = sample.ndim - 1
    matches = [
        o for o in all_offsets(dims, shift) if torch.equal(out, translated(sample, o, shift))
    ]
    assert len(matches) == 1, f"not one exact translation by at most {shift}: {matches}"
    return matches[0]


def draws(dataset: AugmentedDataset, index: int, count: int) -> list[torch.Tensor]:
    return [dataset[index]["inputs"] for _ in range(count)]


@pytest.fixture
def images() -> ArrayDataset:
    """Strictly positive, all-distinct pixel values: every translation looks different."""
    torch.manual_seed(0)
    inputs = torch.rand(4, 2, 6, 7) + 0.5
    return ArrayDataset(inputs, torch.tensor([3, 1, 4, 1]))


def test_one_pixel_moves_by_the_drawn_offset_and_nothing_wraps_around():
    """Bugs: a crop window off by one (the image moves by more than ``shift`` or not as a
    whole), torch.roll without padding (what leaves one edge wraps around to the other)."""
    image = torch.zeros(1, 1, 9, 9)
    image[0, 0, 4, 4] = 1.0
    dataset = AugmentedDataset(ArrayDataset(image, torch.tensor([0])), AugmentConfig(shift=SHIFT))
    torch.manual_seed(1)
    for out in draws(dataset, 0, 60):
        dy, dx = which_offset(out, image[0], SHIFT)
        assert out.nonzero().tolist() == [[0, 4 + dy, 4 + dx]]
    ones = torch.ones(1, 1, 5, 5)
    dataset = AugmentedDataset(ArrayDataset(ones, torch.tensor([0])), AugmentConfig(shift=SHIFT))
    seen = set()
    for out in draws(dataset, 0, 60):
        dy, dx = which_offset(out, ones[0], SHIFT)
        assert out.sum() == (5 - abs(dy)) * (5 - abs(dx))  # the rest is zero padding
        seen.add((dy, dx))
    assert len(seen) > 10  # of 25; a wrap-around roll would leave the ones all in place


def test_image_offsets_cover_every_shift_in_range_uniformly_and_per_sample(images):
    """Bugs: randint's exclusive high end (offset +shift never drawn), one offset for both
    axes (only the diagonal), one draw per dataset instead of per sample and use."""
    dataset = AugmentedDataset(images, AugmentConfig(shift=SHIFT))
    torch.manual_seed(2)
    counts = Counter(which_offset(out, images.inputs[1], SHIFT) for out in draws(dataset, 1, 1250))
    expected = all_offsets(2, SHIFT)
    assert sorted(counts) == sorted(expected)  # all 25 offsets and nothing else
    mean = 1250 / len(expected)  # 50 each; ±5 sigma of a binomial count
    assert all(abs(c - mean) < 5 * (mean * (1 - 1 / len(expected))) ** 0.5 for c in counts.values())


def test_sequences_shift_along_their_last_axis_only():
    """Bug: a sequence (C, L) treated like an image (the channel axis shifted too)."""
    torch.manual_seed(3)
    signals = torch.rand(2, 3, 40) + 0.5
    dataset = AugmentedDataset(ArrayDataset(signals, torch.tensor([0, 1])), AugmentConfig(shift=3))
    counts = Counter(which_offset(out, signals[0], 3) for out in draws(dataset, 0, 700))
    assert sorted(counts) == [(o,) for o in range(-3, 4)]
    assert min(counts.values()) > 60  # 100 expected each


def test_flip_mirrors_left_right_about_half_the_time(images):
    """Bugs: a vertical flip instead of a horizontal one, a flip probability other than 0.5;
    with a shift as well, every output is an exact translation of the image or its mirror."""
    dataset = AugmentedDataset(images, AugmentConfig(flip=True))
    torch.manual_seed(4)
    sample, mirrored = images.inputs[2], images.inputs[2].flip(-1)
    outs = draws(dataset, 2, 2000)
    assert all(torch.equal(o, sample) or torch.equal(o, mirrored) for o in outs)
    share = sum(torch.equal(o, mirrored) for o in outs) / len(outs)
    assert abs(share - 0.5) < 4 * (0.25 / len(outs)) ** 0.5  # ±0.045
    both = AugmentedDataset(images, AugmentConfig(shift=1, flip=True))
    for out in draws(both, 2, 40):
        flipped = any(torch.equal(out, translated(mirrored, o, 1)) for o in all_offsets(2, 1))
        plain = any(torch.equal(out, translated(sample, o, 1)) for o in all_offsets(2, 1))
        assert flipped or plain


def test_labels_index_and_stored_inputs_are_untouched(images):
    """Bugs: augmenting in place (the stored image drifts with every draw), a label or index
    changed with the inputs (precomputed lookups by index would miss), a different length."""
    stored = images.inputs.clone()
    dataset = AugmentedDataset(images, AugmentConfig(shift=SHIFT, flip=True))
    torch.manual_seed(5)
    assert len(dataset) == len(images)
    for _ in range(20):
        for i in range(len(images)):
            item, plain = dataset[i], images[i]
            assert item["index"] == plain["index"] == i
            assert torch.equal(item["labels"], plain["labels"])
    assert torch.equal(images.inputs, stored)
    assert dataset.inputs is images.inputs and dataset.labels is images.labels
    part = dataset.subset([3, 1])
    assert isinstance(part, AugmentedDataset) and part.labels.tolist() == [1, 1]


def test_shift_zero_is_the_identity_and_draws_nothing(images):
    """Bugs: shift 0 still perturbs, or draws from the RNG (a no-op augmentation would then
    change dropout and every other draw of a run)."""
    dataset = AugmentedDataset(images, AugmentConfig(shift=0))
    before = torch.get_rng_state()
    for i in range(len(images)):
        assert torch.equal(dataset[i]["inputs"], images[i]["inputs"])
    assert torch.equal(torch.get_rng_state(), before)


def test_load_data_augments_the_training_split_only():
    """Bugs: val or test wrapped too (scores would be noisy), the wrapper put in before
    class_groups (which rebuilds the split and silently drops it), another split drawn."""
    plain = load_data(DataConfig(dataset="digits", class_groups=[[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]))
    config = DataConfig(
        dataset="digits", class_groups=[[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]], augment={"shift": 1}
    )
    augmented = load_data(config)
    assert isinstance(augmented.train, AugmentedDataset)
    assert torch.equal(augmented.train.inputs, plain.train.inputs)
    assert torch.equal(augmented.train.labels, plain.train.labels)
    assert set(augmented.train.labels.tolist()) == {0, 1}
    for split in ("val", "test"):
        ours, theirs = getattr(augmented, split), getattr(plain, split)
        assert type(ours) is ArrayDataset
        assert torch.equal(ours.inputs, theirs.inputs) and torch.equal(ours.labels, theirs.labels)
    torch.manual_seed(6)
    moved = sum(
        not torch.equal(augmented.train[i]["inputs"], plain.train[i]["inputs"]) for i in range(50)
    )
    assert moved > 30  # 8 of 9 offsets move a digit


def test_bad_settings_are_errors_naming_the_key(tiny_recipe):
    """Bugs: a negative shift or an unknown key accepted, a flip of 1-D signals, tokenized
    text or feature vectors silently 'shifted'."""
    with pytest.raises(ConfigError, match=r"data\.augment\.shift"):
        load_config(tiny_recipe, ["data.augment.shift=-1"])
    with pytest.raises(ConfigError, match=r"data\.augment\.rotate"):
        load_config(tiny_recipe, ["data.augment.rotate=10"])
    with pytest.raises(ConfigError, match=r"data\.augment\.flip"):
        load_data(DataConfig(dataset="mnist1d", augment={"flip": True}))
    text = ArrayDataset(
        {"input_ids": torch.ones(3, 5, dtype=torch.long), "attention_mask": torch.ones(3, 5)},
        torch.tensor([0, 1, 0]),
    )
    with pytest.raises(ConfigError, match=r"data\.augment: tokenized text"):
        AugmentedDataset(text, AugmentConfig(shift=1))
    features = ArrayDataset(torch.rand(3, 4), torch.tensor([0, 1, 0]))
    with pytest.raises(ConfigError, match=r"data\.augment: .*feature vectors"):
        AugmentedDataset(features, AugmentConfig(shift=1))


def test_a_precomputed_teacher_with_augmentation_is_refused_before_pretraining(
    tiny_recipe, monkeypatch
):
    """Bug: stored teacher outputs served for shifted inputs (digits' zero border keeps the
    input checksum of a one-pixel shift, so the lookup would not even notice)."""
    config = load_config(tiny_recipe, ["data.augment.shift=1", "teacher.precompute=true"])

    def no_pretraining(*args, **kwargs):
        raise AssertionError("the teacher was built before the conflict was reported")

    monkeypatch.setattr("distil.tasks.classification.build_teacher", no_pretraining)
    with pytest.raises(ConfigError) as error:
        run(config)
    assert str(error.value) == (
        "teacher.precompute: stored outputs are exact only without augmentation; "
        "data.augment is set — set teacher.precompute=false"
    )


def test_a_run_with_augmentation_trains_student_and_teacher_on_shifted_inputs(
    tiny_recipe, tmp_path, monkeypatch
):
    """Bugs: the run's training split not wrapped (load_data ignores data.augment), the
    teacher pretrained without it, or cached under the key of an unaugmented teacher."""
    monkeypatch.setenv("DISTIL_CACHE_DIR", str(tmp_path / "cache"))  # the teacher trains here
    calls = Counter()
    original = AugmentedDataset.augment

    def counted(self, sample):
        calls[len(self)] += 1
        return original(self, sample)

    monkeypatch.setattr(AugmentedDataset, "augment", counted)
    config = load_config(tiny_recipe, ["train.epochs=2", "data.augment={shift: 1}"])
    result = run(config)
    # 10 classes, chance 0.1; seen: student 0.67 (1 epoch: 0.30), teacher 0.83
    assert result.metrics["last"]["test"]["accuracy"] > 0.5
    assert result.metrics["teachers"]["teacher"]["test"]["accuracy"] > 0.7
    plain = load_config(tiny_recipe).data
    assert teacher_cache_key(config.data, config.teacher) != teacher_cache_key(
        plain, config.teacher
    )
    (record,) = (tmp_path / "cache/teachers").glob("*/teacher.json")
    assert json.loads(record.read_text())["data"]["augment"] == {"shift": 1, "flip": False}
    # teacher: 4 pretraining epochs, student: 2 epochs, over the 1,258 training digits
    assert calls[1258] >= (4 + 2) * 1258


def test_killed_and_resumed_augmented_run_equals_uninterrupted_run(
    tiny_recipe, tmp_path, monkeypatch
):
    """Bug: shifts drawn from a generator the checkpoint does not hold (a private one, or
    numpy's unseeded one): the resumed run would shift other samples other ways."""
    overrides = [
        "train.epochs=3", "train.checkpoint_every=7", "student.options.dropout=0.2",
        "data.train_limit=300", "data.augment={shift: 1, flip: true}",
    ]  # fmt: skip
    data = load_data(load_config(tiny_recipe, overrides).data)
    assert isinstance(data.train, AugmentedDataset)
    assert_resume_is_exact(tiny_recipe, overrides, tmp_path, monkeypatch, data)
