#!/usr/bin/env python
"""Train or evaluate a ViLD model: ``python train_net.py --config-file CFG [--eval-only] [--resume]``.

Multi-GPU: ``--num-gpus 8``; several machines: ``--num-machines``, ``--machine-rank``,
``--dist-url``, as in every Detectron2 project. Also runs under ``torchrun``. The processes talk
over NCCL when ``MODEL.DEVICE`` is cuda, over gloo (and see no GPU) when it is cpu.
"""
from detectron2.engine import default_argument_parser

import vild_d2  # noqa: F401  (registers components and datasets)
from vild_d2.engine import ViLDTrainer, init_torchrun, launch, load_config, load_trained_weights, setup_cfg


def main(args):
    cfg = setup_cfg(args)
    if args.eval_only:
        model = ViLDTrainer.build_model(cfg)
        load_trained_weights(model, cfg.MODEL.WEIGHTS, cfg.OUTPUT_DIR, resume=args.resume)
        return ViLDTrainer.test(cfg, model)
    trainer = ViLDTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    device = load_config(args.config_file, args.opts, register=False).MODEL.DEVICE
    init_torchrun(device)
    launch(main, args.num_gpus, device=device, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
