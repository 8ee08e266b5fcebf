"""The security flags and how they become SecuritySettings.

TLS flags per port use Triton's gRPC spellings (``--grpc-use-ssl``, ``--grpc-server-cert``,
``--grpc-server-key``, ``--grpc-root-cert``, ``--grpc-use-ssl-mutual``) and the same words for
``--http-*`` and ``--metrics-*`` (ortserve's own; Triton has no TLS there). Triton's
``--grpc-restricted-protocol`` and ``--http-restricted-api`` repeat on the command line; from the
environment, several are separated by ``;`` (their values hold commas).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from server.security.restricted import RestrictionError, grpc_restrictions, http_restrictions
from server.security.settings import ModelKeySource, SecuritySettings, TlsFiles
from server.settings import SettingsError

TLS_PORTS = ("grpc", "http", "metrics")


class _Accumulate(argparse.Action):
    """Collects every use of a flag. Not an append action, so that an environment value stays one
    string (split on ';' here) instead of being split on the commas inside it."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: str | None = None
    ) -> None:
        current = getattr(namespace, self.dest, None)
        collected = [] if current is None or current is self.default else list(current)
        collected.append(values)
        setattr(namespace, self.dest, collected)


def add_security_flags(parser: argparse.ArgumentParser, parse_bool: Callable[[str], bool]) -> None:
    group = parser.add_argument_group("security (docs/security.md)")
    for port in TLS_PORTS:
        group.add_argument(f"--{port}-use-ssl", type=parse_bool, nargs="?", const=True, default=False, help=f"TLS on the {port} port")
        group.add_argument(
            f"--{port}-use-ssl-mutual",
            type=parse_bool,
            nargs="?",
            const=True,
            default=False,
            help=f"mutual TLS on the {port} port: clients need a certificate signed by --{port}-root-cert (implies --{port}-use-ssl)",
        )
        group.add_argument(f"--{port}-server-cert", default=None, help="PEM certificate (chain); reloaded when the file changes")
        group.add_argument(f"--{port}-server-key", default=None, help="PEM private key; reloaded when the file changes")
        group.add_argument(f"--{port}-root-cert", default=None, help="PEM CA certificate(s) that client certificates must chain to")
    group.add_argument(
        "--http-health-port", type=int, default=0, help="plaintext port serving only /v2/health/live and /ready, unauthenticated (0 = none)"
    )
    group.add_argument("--auth-config", default=None, help="principals, token hashes and grants (YAML or JSON); reloaded on change")
    group.add_argument("--grpc-restricted-protocol", action=_Accumulate, default=None, help="<groups>:<key>=<value> (Triton's), repeatable")
    group.add_argument("--http-restricted-api", action=_Accumulate, default=None, help="<groups>:<key>=<value> (Triton's), repeatable")
    group.add_argument(
        "--disable-repository-api",
        type=parse_bool,
        nargs="?",
        const=True,
        default=False,
        help="refuse the whole model-repository API group (index, load, unload) to everyone",
    )
    group.add_argument("--model-key-file", default=None, help="key file for encrypted models (model.onnx.enc) whose config names none")
    group.add_argument("--model-key-env", default=None, help="environment variable holding that key instead")


def _tls_files(args: argparse.Namespace, port: str) -> TlsFiles | None:
    def value(name: str) -> Any:
        return getattr(args, f"{port}_{name}")

    mutual = value("use_ssl_mutual")
    if not (value("use_ssl") or mutual):
        given = [f"--{port}-{n.replace('_', '-')}" for n in ("server_cert", "server_key", "root_cert") if value(n)]
        if given:
            raise SettingsError(f"{', '.join(given)} given without --{port}-use-ssl or --{port}-use-ssl-mutual")
        return None
    if not value("server_cert") or not value("server_key"):
        raise SettingsError(f"--{port}-use-ssl requires --{port}-server-cert and --{port}-server-key")
    if mutual and not value("root_cert"):
        raise SettingsError(f"--{port}-use-ssl-mutual requires --{port}-root-cert")
    root = Path(value("root_cert")) if value("root_cert") else None
    return TlsFiles(Path(value("server_cert")), Path(value("server_key")), root, mutual)


def _options(values: Sequence[str] | str | None) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):  # from the environment
        return [v for v in values.split(";") if v]
    return list(values)


def security_settings(args: argparse.Namespace) -> SecuritySettings:
    """Raises SettingsError with a one-line message."""
    try:
        grpc_rules = grpc_restrictions(_options(args.grpc_restricted_protocol))
        http_rules = http_restrictions(_options(args.http_restricted_api))
    except RestrictionError as exc:
        raise SettingsError(str(exc)) from None
    if args.model_key_file and args.model_key_env:
        raise SettingsError("give --model-key-file or --model-key-env, not both")
    if not 0 <= args.http_health_port <= 65535:
        raise SettingsError(f"port {args.http_health_port} is outside 0-65535")
    return SecuritySettings(
        grpc_tls=_tls_files(args, "grpc"),
        http_tls=_tls_files(args, "http"),
        metrics_tls=_tls_files(args, "metrics"),
        auth_config=Path(args.auth_config) if args.auth_config else None,
        grpc_restrictions=grpc_rules,
        http_restrictions=http_rules,
        disable_repository_api=args.disable_repository_api,
        health_port=args.http_health_port,
        model_key=ModelKeySource(Path(args.model_key_file) if args.model_key_file else None, args.model_key_env or None),
    )
