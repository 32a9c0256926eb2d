"""Model zoo: every architecture is rebuilt from a JSON spec, so pruned variants load without pickle."""

from drivecompress.models import mobilenet, resnet, vgg  # noqa: F401  (registers the families)
from drivecompress.models.registry import available_models, build_model, default_spec, spec_of

__all__ = ["available_models", "build_model", "default_spec", "spec_of"]
