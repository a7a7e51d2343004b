"""CLIP exactly as ``clip.load`` gives it on CUDA, reproduced on CPU: ``clip.model.build_model``
(which applies CLIP's own ``convert_weights``: convolutions, linear layers and projections in
float16; ``class_embedding``, positional embeddings and LayerNorms in float32) without the
``.float()`` that ``clip.load`` adds on CPU. The region cache, both crop scorings and the text
classifiers must give the float32 results within the tolerances below, for a ViT and a ResNet CLIP."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from clip.model import CLIP, build_model
from detectron2.data import DatasetCatalog
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import Boxes, ImageList

from vild_d2.clip_model import load_clip
from vild_d2.crops import embed_regions, tower_dtype
from vild_d2.modeling import CropEmbedder, ViLDOutputLayers
from vild_d2.region_cache import RegionCache
from vild_d2.region_cache.builder import RegionCacheSettings, build_region_cache
from vild_d2.text_classifier import encode_classes

# float16 weights round to 11 significant bits; on unit vectors of D = 32 the measured worst
# differences were 1.1e-3 (crops) and 4.7e-4 (text): the bounds leave 4x headroom.
EMBED_ATOL = 5e-3
# p = softmax(cos / 0.01): a cosine error of 1e-3 moves a logit by 0.1, so probabilities move by
# up to ~10 % of themselves; the scores are compared in absolute terms.
PROB_ATOL = 3e-2

ARCHS = {  # tiny towers of both kinds, D = 32, 32 px input
    "ViT": dict(vision_layers=1, vision_width=64, vision_patch_size=16),
    "ResNet": dict(vision_layers=(1, 1, 1, 1), vision_width=16, vision_patch_size=None),
}


@pytest.fixture(scope="module", params=sorted(ARCHS))
def clips(request, tmp_path_factory):
    """(float32 CLIP as clip.load gives it on CPU, float16 CLIP as clip.load gives it on CUDA)."""
    torch.manual_seed(0)
    model = CLIP(embed_dim=32, image_resolution=32, context_length=16, vocab_size=49408, transformer_width=64,
                 transformer_heads=1, transformer_layers=1, **ARCHS[request.param])
    path = tmp_path_factory.mktemp("clip") / "clip.pt"
    torch.save(model.state_dict(), path)
    fp32 = load_clip(str(path), "cpu")
    fp16 = build_model(torch.load(path, weights_only=True)).eval()  # clip.load's CUDA model, on CPU
    return fp32, fp16


def test_the_cuda_layout_is_reproduced(clips):
    fp32, fp16 = clips
    assert fp16.visual.conv1.weight.dtype == torch.float16 and fp16.text_projection.dtype == torch.float16
    assert fp16.positional_embedding.dtype == torch.float32  # left in float32 by convert_weights
    if hasattr(fp16.visual, "class_embedding"):  # ViT: the tower's first parameter is float32
        assert next(fp16.visual.parameters()).dtype == torch.float32
    assert tower_dtype(fp16.visual) == torch.float16 and tower_dtype(fp32.visual) == torch.float32


def test_region_embeddings(clips):
    fp32, fp16 = clips
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 60, 80, generator=g) * 255
    boxes = torch.tensor([[0.0, 0, 30, 30], [10, 5, 70, 55], [40, 20, 79, 59]])
    ref = embed_regions(fp32.visual, image, boxes, (1.0, 1.5), "sum", 4)  # 2 regions per forward
    got = embed_regions(fp16.visual, image, boxes, (1.0, 1.5), "sum", 4)
    assert got.dtype == torch.float32 and got.shape == (3, 32)
    torch.testing.assert_close(got, ref, rtol=0, atol=EMBED_ATOL)


def test_region_cache(clips, toy_env, tmp_path):
    records = DatasetCatalog.get("tiny_toy_train_full")[:3]

    def proposals(record, image):  # H x W x 3: the whole image and its top-left quarter
        h, w = image.shape[:2]
        return np.array([[0, 0, w, h], [0, 0, w / 2, h / 2]], np.float32), np.array([1.0, 0.5], np.float32)

    caches = []
    for name, model in zip(("fp32", "fp16"), clips):
        build_region_cache(tmp_path / name, records, proposals, model, "name:test",
                           RegionCacheSettings(num_proposals=2), num_workers=0)
        caches.append(RegionCache(tmp_path / name))
    for r in records:
        (b32, e32, _), (b16, e16, _) = caches[0].get(r["image_id"]), caches[1].get(r["image_id"])
        np.testing.assert_array_equal(b16, b32)
        np.testing.assert_allclose(e16.astype(np.float32), e32.astype(np.float32), rtol=0, atol=EMBED_ATOL)


@pytest.mark.parametrize("test_scores", ["clip", "text+clip"])
def test_crop_scorings(clips, test_scores):
    fp32, fp16 = clips
    g = torch.Generator().manual_seed(1)
    vocab = F.normalize(torch.randn(5, 32, generator=g), dim=1)  # K = 5 classes, D = 32
    layers = ViLDOutputLayers(ShapeSpec(channels=8), box2box_transform=Box2BoxTransform((10.0, 10.0, 5.0, 5.0)),
                              train_embeddings=vocab, test_embeddings=vocab, novel_class_ids=[3, 4],
                              temperature=0.01, test_scores=test_scores).eval()
    images = ImageList.from_tensors([torch.randn(3, 48, 64, generator=g)], size_divisibility=32)  # normalised pixels
    boxes = [Boxes(torch.tensor([[2.0, 3, 30, 35], [10, 0, 60, 40], [0, 0, 64, 48]]))]
    x = torch.randn(3, 8, generator=g)  # R x C box-head features
    scores = []
    for model in (fp32, fp16):
        embedder = CropEmbedder(visual=model.visual, pixel_mean=[120.0] * 3, pixel_std=[60.0] * 3, input_format="BGR")
        crops = embedder(images, boxes)[0]  # R x D
        with torch.no_grad():
            scores.append(layers(x, crops=(crops, torch.tensor([2.0, 0.0, -1.0])))[0])
    assert scores[1].dtype == torch.float32 and torch.isfinite(scores[1]).all()
    torch.testing.assert_close(scores[1], scores[0], rtol=0, atol=PROB_ATOL)


def test_text_classifier(clips):
    fp32, fp16 = clips
    synonyms = [["cat"], ["dog", "puppy"], ["traffic light"], ["bow (weapon)"]]
    templates = ["a photo of a {}.", "a {} in a scene."]
    ref = encode_classes(fp32, synonyms, templates)
    got = encode_classes(fp16, synonyms, templates, batch_size=3)  # several trimmed batches
    assert got.dtype == np.float32 and got.shape == (4, 32)
    np.testing.assert_allclose(got, ref, rtol=0, atol=EMBED_ATOL)
