from rknnlite.api.rknn_lite import RKNNLite

__all__ = ["RKNNLite"]  # re-exported, as by the real wheel
