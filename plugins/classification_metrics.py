"""Classification metrics computed by scikit-learn: top1 accuracy and macro precision, recall and F1."""
from __future__ import annotations

from benchbone import hookimpl


def top1(y_true, y_pred, y_score) -> float:
    from sklearn.metrics import accuracy_score

    return accuracy_score(y_true, y_pred)


def _macro(fn_name: str):
    def metric(y_true, y_pred, y_score) -> float:
        import sklearn.metrics

        return getattr(sklearn.metrics, fn_name)(y_true, y_pred, average="macro", zero_division=0)

    metric.__name__ = fn_name
    return metric


@hookimpl
def benchbone_register_metrics(register):
    register("top1", top1, higher_is_better=True, percent=True, description="top-1 accuracy")
    register("precision", _macro("precision_score"), higher_is_better=True, percent=True,
             description="macro-averaged precision")
    register("recall", _macro("recall_score"), higher_is_better=True, percent=True,
             description="macro-averaged recall")
    register("f1", _macro("f1_score"), higher_is_better=True, percent=True, description="macro-averaged F1")
