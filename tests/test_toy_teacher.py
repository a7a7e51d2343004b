"""Toy CLIP teacher: training lowers the loss; the checkpoint round-trips through clip.load."""
import dataclasses

import clip
import torch

from vild_d2.toy import TOY_PREFIX, ToyWorldSettings, build_toy_world
from vild_d2.toy.teacher import (TeacherSettings, class_token_table, ensure_teacher, teacher_path,
                                 train_toy_clip)

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
