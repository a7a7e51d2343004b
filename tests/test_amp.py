"""Mixed precision (SOLVER.AMP.ENABLED): every ViLD mode trains and infers under CPU bf16 autocast, the
code path of CUDA fp16 AMP, with cosine logits, softmax, the ensemble's geometric mean and the
ViLD-image loss in float32."""
import types

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from vild_d2.modeling import MODES, ViLDOutputLayers

H, W = 64, 64  # bf16 convolutions are slow on CPUs without bf16 instructions: a small image


def bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def batch():
    g = torch.Generator().manual_seed(0)
    gt = Instances((H, W), gt_boxes=Boxes(torch.tensor([[4.0, 6, 30, 40]])), gt_classes=torch.tensor([3]))
    masks = torch.zeros(1, H, W, dtype=torch.bool)
    masks[0, 6:40, 4:30] = True
    gt.gt_masks = BitMasks(masks)
    # fp16 embeddings, as the region cache stores them
    regions = Instances((H, W), proposal_boxes=Boxes(torch.tensor([[0.0, 0, 20, 20], [10, 10, 40, 50]])),
                        clip_embeds=torch.randn(2, 64, generator=g).half())
    image = torch.randint(0, 255, (3, H, W), generator=g, dtype=torch.uint8)
    return [{"image": image, "instances": gt, "clip_regions": regions, "height": H, "width": W}]


@pytest.fixture(autouse=True)
def event_storage():
    with EventStorage():
        yield


@pytest.mark.parametrize("mode", MODES)
def test_train_and_inference_step_under_bf16_autocast(toy_cfg, mode):
    toy_cfg.merge_from_list(["MODEL.VILD.MODE", mode, "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 200,
                             "MODEL.RPN.POST_NMS_TOPK_TRAIN", 50, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 16,
                             "MODEL.RPN.PRE_NMS_TOPK_TEST", 200, "MODEL.RPN.POST_NMS_TOPK_TEST", 20,
                             "TEST.DETECTIONS_PER_IMAGE", 10])
    torch.manual_seed(0)
    model = build_model(toy_cfg).train()
    with bf16():
        losses = model(batch())
    assert ("loss_image" in losses) == (mode != "text") and ("loss_cls" in losses) == (mode != "image")
    for name, loss in losses.items():
        assert loss.dtype == torch.float32 and torch.isfinite(loss), name
    sum(losses.values()).backward()
    predictor = model.roi_heads.box_predictor
    assert predictor.projection.weight.grad is not None
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    model.eval()
    with torch.no_grad(), bf16():
        inst = model([{"image": batch()[0]["image"], "height": H, "width": W}])[0]["instances"]
        x = torch.randn(3, predictor.projection.in_features).bfloat16()  # R x C box-head features
        probs = predictor.class_probabilities(predictor.embed(x).bfloat16(), x if mode == "ensemble" else None)
    assert len(inst) > 0 and inst.scores.dtype == torch.float32
    assert torch.isfinite(inst.scores).all() and ((inst.scores >= 0) & (inst.scores <= 1)).all()
    assert torch.isfinite(inst.pred_boxes.tensor).all()
    assert probs.dtype == torch.float32 and probs.shape == (3, predictor.num_classes + 1)
    assert torch.isfinite(probs).all() and ((probs >= 0) & (probs <= 1)).all()


def test_ensemble_geometric_mean_under_autocast_equals_float32():
    """bf16 inputs and an identity image projection (exact in bf16): everything after the projection
    must then be the float32 computation, to float32 rounding (rtol 1e-5); bf16 logits at
    temperature 0.01 would be off by far more."""
    torch.manual_seed(0)
    k, d = 24, 64
    text = F.normalize(torch.randn(k, d), dim=1)
    p = ViLDOutputLayers(ShapeSpec(channels=d), box2box_transform=Box2BoxTransform((10.0, 10.0, 5.0, 5.0)),
                         train_embeddings=text, test_embeddings=text, novel_class_ids=range(0, k, 3),
                         mode="ensemble", temperature=0.01).eval()
    with torch.no_grad():
        p.image_projection.weight.copy_(torch.eye(d))
        p.image_projection.bias.zero_()
    emb = F.normalize(torch.randn(50, d), dim=1).bfloat16()  # R x D text-head embeddings
    image_x = torch.randn(50, d).bfloat16()  # R x C image-head features
    with torch.no_grad():
        with bf16():
            mixed = p.class_probabilities(emb, image_x)
            naive = F.softmax(emb @ text.t() / p.temperature, dim=1)  # what autocast alone computes
        full = p.class_probabilities(emb.float(), image_x.float())
    assert mixed.dtype == torch.float32 and naive.dtype == torch.bfloat16
    torch.testing.assert_close(mixed, full, rtol=1e-5, atol=1e-7)
    p_text = F.softmax(emb.float() @ text.t() / p.temperature, dim=1)
    assert (naive.float() - p_text).abs().max() > 1e-3


def test_trainer_runs_amp_on_cpu(toy_env, toy_cfg):
    from vild_d2.engine import ViLDTrainer

    toy_cfg.merge_from_list(["SOLVER.AMP.ENABLED", True, "MODEL.VILD.MODE", "text", "SOLVER.MAX_ITER", 2,
                             "SOLVER.IMS_PER_BATCH", 1, "SOLVER.WARMUP_ITERS", 1, "SOLVER.STEPS", (),
                             "DATALOADER.NUM_WORKERS", 0, "DATASETS.TRAIN", ("tiny_toy_train_base",),
                             "DATASETS.TEST", (), "INPUT.MIN_SIZE_TRAIN", (H,), "INPUT.MAX_SIZE_TRAIN", 80,
                             "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 200, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 50,
                             "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 16])
    trainer = ViLDTrainer(toy_cfg)
    trainer.resume_or_load(resume=False)
    before = trainer.model.roi_heads.box_predictor.projection.weight.detach().clone()
    trainer.train()
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(before, trainer.model.roi_heads.box_predictor.projection.weight)
    assert type(trainer._trainer).__name__ == "CPUAutocastTrainer"


class _TorchClaimingCuda:
    """``torch`` as Detectron2's train loop sees it, except that CUDA is said to be available."""

    cuda = types.SimpleNamespace(is_available=lambda: True)

    def __getattr__(self, name):
        return getattr(torch, name)


class _Quadratic(torch.nn.Module):
    """A model whose training step returns one loss, as Detectron2's models do."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, x):
        return {"loss": (self.linear(x) ** 2).mean()}


def _clipped_norms(trainer_class, monkeypatch):
    """Gradient norms Detectron2's SOLVER.CLIP_GRADIENTS clipper sees in one AMP step of
    ``trainer_class``: fused AdamW, a GradScaler at scale 1024, float16 autocast, Detectron2's CUDA
    step run on CPU (CUDA's autocast swapped for the CPU one). Also the true norms (float32)."""
    import detectron2.engine.train_loop as train_loop
    from detectron2.config import get_cfg
    from detectron2.solver.build import maybe_add_gradient_clipping

    monkeypatch.setattr(train_loop, "torch", _TorchClaimingCuda())  # for the step's "CUDA is required" assert
    monkeypatch.setattr(torch.cuda.amp, "autocast", lambda dtype: torch.autocast("cpu", dtype=dtype))
    seen, clip = [], torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_",
                        lambda p, max_norm, norm_type=2.0: seen.append(float(clip(p, max_norm, norm_type))))
    torch.manual_seed(0)
    model, x = _Quadratic(), torch.randn(8, 4)
    model(x)["loss"].backward()
    true = [float(p.grad.norm()) for p in model.parameters()]
    model.zero_grad()
    cfg = get_cfg()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True  # CLIP_TYPE "value" by default; the toy configs use "norm"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE, cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = "norm", 1e9
    optimizer = maybe_add_gradient_clipping(cfg, torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True))
    trainer = trainer_class(model, [x] * 4, optimizer, grad_scaler=torch.amp.GradScaler("cpu", init_scale=1024.0))
    with EventStorage():
        trainer.iter = 0
        trainer.run_step()
    return seen, true


def test_amp_clipping_sees_unscaled_gradients(monkeypatch):
    from detectron2.engine import AMPTrainer

    from vild_d2.engine.amp import ScaledClippingAMPTrainer

    seen, true = _clipped_norms(AMPTrainer, monkeypatch)  # the condition reproduced: Detectron2's own step
    assert len(seen) == 2 and seen[0] == pytest.approx(1024 * true[0], rel=2e-2)
    monkeypatch.undo()
    seen, true = _clipped_norms(ScaledClippingAMPTrainer, monkeypatch)
    assert len(seen) == 2 and seen == pytest.approx(true, rel=2e-2, abs=1e-3)  # float16 forward: 2 %, 1e-3
