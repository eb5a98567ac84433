"""Distillation methods.  Names load on first use (:mod:`hfkd.lazy`): the registry and the method configs
import no torch, and a built-in method's module is imported (and registers it) when it is first asked for."""
from ..lazy import lazy_exports

_EXPORTS = {
    "DistillationMethod": ".base", "LossOutput": ".base", "MethodContext": ".base",
    "MethodConfig": ".configs", "KDConfig": ".configs", "SupervisedConfig": ".configs", "MEALv2Config": ".configs",
    "FEEDConfig": ".configs", "BAKEConfig": ".configs", "PSKDConfig": ".configs", "ExtracurricularConfig": ".configs",
    "FeatureKDConfig": ".configs",
    "create_method": ".registry", "get_method_class": ".registry", "get_config_class": ".registry",
    "describe_method": ".registry", "list_methods": ".registry", "normalize_name": ".registry",
    "register_method": ".registry",
    "KD": ".kd", "Supervised": ".supervised", "MEALv2": ".meal_v2", "MEALv2Discriminator": ".meal_v2",
    "FEED": ".feed", "BAKE": ".bake", "PSKD": ".pskd", "Extracurricular": ".extracurricular",
    "FeatureKD": ".feature_kd",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
