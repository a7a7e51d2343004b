"""Toy CLIP teacher: training lowers the loss; the checkpoint round-trips through clip.load."""
import dataclasses
import json

import clip
import pytest
import torch

from vild_d2.kit.toy import TOY_PREFIX, ToyWorldSettings, build_toy_world
from vild_d2.kit.toy.teacher import TeacherSettings, class_token_table, ensure_teacher, teacher_path, train_toy_clip

TINY_TEACHER = TeacherSettings(steps=30, batch_size=32, warmup=5, seed=1)


def test_tiny_training_lowers_loss_and_roundtrips_through_clip_load(tmp_path):
    torch.manual_seed(0)
    world = tmp_path / TOY_PREFIX
    build_toy_world(world, ToyWorldSettings(num_train=40, num_val=8, seed=1), workers=1)
    history = []
    train_toy_clip(world, TINY_TEACHER, history=history)
    assert sum(history[-8:]) / 8 < sum(history[:8]) / 8 - 0.1

    path = ensure_teacher(world, TINY_TEACHER)
    assert path == teacher_path(world, TINY_TEACHER) and path.with_suffix(".json").is_file()
    report = json.loads(path.with_suffix(".json").read_text())["zero_shot_val"]["1.0x"]
    assert 0 <= report["background"] <= 1 and report["background_crops"] > 0
    assert ensure_teacher(world, TINY_TEACHER) == path  # cached: no retraining
    other = teacher_path(world, dataclasses.replace(TINY_TEACHER, seed=2))
    assert other != path

    model, preprocess = clip.load(str(path), device="cpu", jit=False)  # the users' path
    assert model.visual.input_resolution == TINY_TEACHER.image_resolution
    assert model.context_length == TINY_TEACHER.context_length
    state = torch.load(path)
    assert state.keys() == model.state_dict().keys()
    tokens = class_token_table(["red_circle", "blue_star"], model.context_length).flatten(0, 1)
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        loaded = model.encode_text(tokens), model.encode_image(image)
        model.load_state_dict(state)  # clip.load rounds weights through fp16; restore exact ones
        exact = model.encode_text(tokens), model.encode_image(image)
    for a, b in zip(loaded, exact):
        assert torch.allclose(a, b, atol=0.05, rtol=0.05)


def test_background_rois_avoid_every_object(tmp_path):
    from torchvision.ops import box_iou

    from vild_d2.kit.toy.teacher import annotation_rois, background_rois, load_split_tensors

    world = tmp_path / TOY_PREFIX
    build_toy_world(world, ToyWorldSettings(num_train=12, num_val=2, seed=3), workers=1)
    _, data = load_split_tensors(world, "train_full")
    bg = background_rois(data, torch.Generator().manual_seed(0), per_image=4)
    assert bg.shape[1] == 6 and 0 < len(bg) <= 4 * 12
    assert torch.bincount(bg[:, 0].long(), minlength=12).max() <= 4
    assert (bg[:, 5] == 0).all()
    gt = annotation_rois(data)
    for i, im in enumerate(data["images"]):
        mine = bg[bg[:, 0] == i, 1:5]
        assert (mine[:, :2] >= 0).all() and (mine[:, 2] <= im["width"]).all() and (mine[:, 3] <= im["height"]).all()
        sides = mine[:, 2:] - mine[:, :2]
        assert ((sides >= 12) & (sides <= 60)).all()
        objects = gt[gt[:, 0] == i, 1:5]
        if len(mine) and len(objects):
            assert box_iou(mine, objects).max() < 0.1
    again = background_rois(data, torch.Generator().manual_seed(0), per_image=4)
    assert torch.equal(bg, again)  # seeded


def test_crop_geometry_groups_classes_by_colour_and_shape(tmp_path):
    """A stand-in image tower that embeds a crop as its mean colour puts classes of one colour
    together and classes of one shape apart."""
    from vild_d2.kit.toy.teacher import crop_geometry

    class MeanColour(torch.nn.Module):
        input_resolution, output_dim = 16, 3

        def __init__(self):
            super().__init__()
            self.gain = torch.nn.Parameter(torch.ones(1))

        def forward(self, crops):  # B x 3 x S x S -> B x 3
            return crops.mean((2, 3)) * self.gain

    world = tmp_path / TOY_PREFIX
    build_toy_world(world, ToyWorldSettings(num_train=4, num_val=40, seed=3), workers=1)
    model = torch.nn.Module()
    model.visual = MeanColour()
    geometry = crop_geometry(model, world)
    assert set(geometry) == {"within_class", "same_colour", "same_shape", "neither"}
    assert geometry == pytest.approx({"within_class": 0.9195, "same_colour": 0.8595, "same_shape": -0.2515,
                                      "neither": -0.2760}, abs=1e-3)
    assert geometry["same_colour"] > 0.8 > 0 > geometry["same_shape"]
