"""The transport-free core both frontends call: InferenceService and the request checks,
parameters, classification and in-flight budget behind it."""

from server.service.api import EXTENSIONS, InferenceService
from server.service.inference import InferenceHandle

__all__ = ["EXTENSIONS", "InferenceHandle", "InferenceService"]
