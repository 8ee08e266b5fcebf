"""Blocking reads the manager plans with (run on load threads): a model's config file and the
number of CPU instances a repository asks for (which sizes the intra-op thread budget)."""

from __future__ import annotations

from server.errors import ServerError
from server.model_config import version_policy
from server.model_config.config_file import read_config_file
from server.proto import model_config_pb2 as mc
from server.repository.layout import ModelSource


def file_config(source: ModelSource) -> mc.ModelConfig:
    """The model's config.pbtxt (an empty config without one). Blocking; raises INVALID_ARG."""
    return read_config_file(source.config_path) if source.config_path else mc.ModelConfig()


def planned_cpu_instances(source: ModelSource) -> int:
    """A rough count for the thread budget: instances per version times versions to load."""
    try:
        config = file_config(source)
        versions = len(version_policy.select_versions(config.version_policy, source.versions))
    except ServerError:
        return 0
    if config.platform == "ensemble":  # runs on its members' instances
        return 0
    cpu_kinds = (mc.ModelInstanceGroup.KIND_CPU, mc.ModelInstanceGroup.KIND_AUTO)
    per_version = sum(max(g.count, 1) for g in config.instance_group if g.kind in cpu_kinds) or 1
    return per_version * versions
