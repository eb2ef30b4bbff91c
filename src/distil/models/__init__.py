"""The model zoo: students and teachers built by name through ``build_model``.

``MODELS`` maps each name to a factory; importing this package imports every model file so
that all of them are registered. Files, one family each: ``mlp``, ``cnn`` (1-D and 2-D),
``resnet`` (CIFAR ResNets), ``wrn`` (Wide ResNets), ``vit`` (a small Vision Transformer),
``mixer`` (a small MLP-Mixer), ``mobilenet`` (a small MobileNetV2) and ``hf`` (a wrapper for
local Hugging Face sequence classifiers). Every model's ``forward`` takes one batch and returns
logits ``(batch, num_classes)``.
"""

from distil.models import cnn, hf, mixer, mlp, mobilenet, resnet, vit, wrn  # noqa: F401  (imported to register)
from distil.models.registry import MODELS, build_model, model_options

__all__ = ["MODELS", "build_model", "model_options"]
