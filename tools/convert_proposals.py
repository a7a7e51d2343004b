#!/usr/bin/env python
"""Convert a Detectron2 ``PROPOSAL_FILES`` pickle to the ``.npz`` proposal file that
tools/build_region_cache.py reads; the pickle is read as plain data only (arrays, numbers, strings).

    python tools/convert_proposals.py proposals.pkl proposals.npz
"""
import argparse
import logging

from detectron2.utils.logger import setup_logger

from vild_d2.region_cache.proposals import read_proposals, save_proposals

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pickle", help="Detectron2 proposal file (.pkl)")
    p.add_argument("output", help="proposal file to write (.npz)")
    args = p.parse_args()
    setup_logger(name="vild_d2")
    index = read_proposals(args.pickle, allow_pickle=True)
    ids = sorted(index)
    modes = {index[i][2] for i in ids}
    if len(modes) > 1:
        raise ValueError(f"{args.pickle} mixes box modes {modes}")
    save_proposals(args.output, ids, [index[i][0] for i in ids], [index[i][1] for i in ids],
                   modes.pop() if modes else 0)
    logging.getLogger("vild_d2").info("wrote %d images' proposals to %s", len(ids), args.output)
