"""Open-vocabulary COCO evaluation: AP50 on novel, base and all classes of the 65-class split."""
import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator

__all__ = ["OVCOCOEvaluator"]


class OVCOCOEvaluator(COCOEvaluator):
    """COCOEvaluator restricted to the dataset's classes, reporting ``AP50_novel``, ``AP50_base``,
    ``AP50_all`` (box AP at IoU 0.5, averaged over classes) besides the usual metrics."""

    def __init__(self, dataset_name, **kwargs):
        super().__init__(dataset_name, **kwargs)
        keep = set(MetadataCatalog.get(dataset_name).thing_dataset_id_to_contiguous_id)
        data = self._coco_api.dataset  # ground truth of the used classes only
        data["categories"] = [c for c in data["categories"] if c["id"] in keep]
        data["annotations"] = [a for a in data["annotations"] if a["category_id"] in keep]
        self._coco_api.createIndex()

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names)
        if coco_eval is None:
            return results
        # precision: T x R x K x A x M (IoU thresholds, recalls, classes, areas, max dets)
        precision = coco_eval.eval["precision"][0, :, :, 0, -1]  # IoU 0.5, all areas, 100 dets: R x K
        per_class = np.array([p[p > -1].mean() if (p > -1).any() else np.nan for p in precision.T]) * 100
        meta = MetadataCatalog.get(self._metadata.name)
        for group, ids in (("novel", meta.novel_class_ids), ("base", meta.base_class_ids),
                           ("all", list(range(len(per_class))))):
            results[f"AP50_{group}"] = float(np.nanmean(per_class[ids])) if len(ids) else float("nan")
        return results
