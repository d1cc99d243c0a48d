"""Model registry: resolve a registry name, local directory or hub id to a loadable directory.

Importing this package is cheap (stdlib only); torch/transformers load only when a GGUF is
converted. See :mod:`llambert.models.registry`.
"""

from llambert.models.registry import (
    MANIFEST_NAME,
    OFFLINE_MODELS,
    ChecksumMismatch,
    ModelNotAvailable,
    OfflineModel,
    PackageFile,
    ResolvedModel,
    assemble_parts,
    install_command,
    is_installed,
    lookup_offline,
    offline_requirements,
    resolve_model,
    weights_sha256,
)

__all__ = [
    "ChecksumMismatch",
    "MANIFEST_NAME",
    "ModelNotAvailable",
    "OFFLINE_MODELS",
    "OfflineModel",
    "PackageFile",
    "ResolvedModel",
    "assemble_parts",
    "install_command",
    "is_installed",
    "lookup_offline",
    "offline_requirements",
    "resolve_model",
    "weights_sha256",
]
