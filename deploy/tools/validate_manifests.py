"""Validate Kubernetes manifests strictly, with no cluster: kubernetes-validate plus our CRD schemas.

kubernetes-validate (PyPI) only warns when it has no schema for a kind, which would let a typo'd
or third-party object through unchecked. Here every document must match a schema:

- built-in kinds: kubernetes-validate's strict schema for each --k8s-version (unknown fields fail);
- custom resources (KServe, KEDA, prometheus-operator): a JSON schema in --schemas named
  ``<group>_<version>_<Kind>.json`` covering the fields we use; Kubernetes types inside them
  (Container, Volume, HPA behavior, ObjectMeta...) are checked against kubernetes-validate's own
  definitions for the same version;
- any other kind fails ("no schema").

    python validate_manifests.py manifests --k8s-version 1.35.0 --schemas deploy/schemas FILE|- ...
    python validate_manifests.py values --schema deploy/schemas/prometheus-adapter-values.json FILE
    python validate_manifests.py dashboard --metrics-source server/observability FILE

Exit status 1 when anything is invalid; one line per object on stdout.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate.utils as kv
import yaml
from referencing import Registry, Resource

K8S_DEFINITIONS_ID = "https://kubernetes.io/api/_definitions.json"


def documents(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    for index, doc in enumerate(yaml.safe_load_all(text)):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise SystemExit(f"{path}: document {index} is not a mapping")
        yield f"{path}#{index}", doc


def k8s_definitions(version: str) -> dict[str, Any]:
    """kubernetes-validate's strict definitions for the schema version it would use for ``version``."""
    wanted = kv.major_minor(version)
    chosen = [v for v in kv.all_versions() if kv.major_minor(v) <= wanted]
    if not chosen:
        raise SystemExit(f"kubernetes-validate has no schemas for Kubernetes {version}")
    return kv.schema_contents(f"kubernetes-json-schema/v{chosen[-1]}-local-strict/_definitions.json", version)


def crd_schema_path(schemas: Path, doc: dict[str, Any]) -> Path:
    group_version = str(doc.get("apiVersion", ""))
    return schemas / f"{group_version.replace('/', '_')}_{doc.get('kind', '')}.json"


def describe(error: jsonschema.ValidationError) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"{where}: {error.message[:300]}"


def check_crd(doc: dict[str, Any], schema_file: Path, definitions: dict[str, Any]) -> list[str]:
    schema = json.loads(schema_file.read_text())
    registry: Registry = Registry().with_resource(K8S_DEFINITIONS_ID, Resource.from_contents(definitions))
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    return [describe(e) for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))]


def check_builtin(doc: dict[str, Any], version: str) -> list[str]:
    try:
        kv.validate(doc, version, strict=True)
    except kv.SchemaNotFoundError as exc:
        return [f"no schema for {exc.kind} {exc.api_version} (unknown kind, or a custom resource without a schema in --schemas)"]
    except kv.ValidationError as exc:
        return [describe(exc)]
    return []


def cmd_manifests(args: argparse.Namespace) -> int:
    schemas = Path(args.schemas)
    failures = checked = 0
    kinds: dict[str, int] = {}
    for version in args.k8s_version:
        definitions = k8s_definitions(version)
        for path in args.files:
            for where, doc in documents(path):
                kind = f"{doc.get('apiVersion')}/{doc.get('kind')}"
                name = (doc.get("metadata") or {}).get("name", "?")
                schema_file = crd_schema_path(schemas, doc)
                if schema_file.is_file():
                    errors, how = check_crd(doc, schema_file, definitions), f"schema {schema_file.name}"
                else:
                    errors, how = check_builtin(doc, version), "kubernetes-validate --strict"
                checked += 1
                kinds[kind] = kinds.get(kind, 0) + 1
                if errors:
                    failures += 1
                    for error in errors:
                        print(f"INVALID k8s {version} {where} {kind} {name}: {error}")
                elif not args.quiet:
                    print(f"ok      k8s {version} {kind} {name} ({how})")
    if checked == 0:
        print("INVALID: no Kubernetes objects found")
        return 1
    summary = ", ".join(f"{count}x {kind}" for kind, count in sorted(kinds.items()))
    print(f"{checked - failures}/{checked} objects valid [{summary}]")
    return 1 if failures else 0


def cmd_values(args: argparse.Namespace) -> int:
    schema = json.loads(Path(args.schema).read_text())
    failures = 0
    for path in args.files:
        for where, doc in documents(path):
            errors = [describe(e) for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)]
            for error in errors:
                print(f"INVALID {where}: {error}")
            failures += bool(errors)
            if not errors:
                print(f"ok      {where} ({Path(args.schema).name})")
    return 1 if failures else 0


_METRIC_NAME = re.compile(r"\b((?:nv|ortserve)_[a-z0-9_]+)\b")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def known_metrics(source: Path) -> set[str]:
    """Metric names the server defines (string literals in its observability modules)."""
    names: set[str] = set()
    for file in sorted(source.rglob("*.py")):
        for literal in re.findall(r"[\"']((?:nv|ortserve)_[a-z0-9_]+)[\"']", file.read_text()):
            names.add(literal)
    return names


def cmd_dashboard(args: argparse.Namespace) -> int:
    names = known_metrics(Path(args.metrics_source))
    failures = 0
    for path in args.files:
        board = json.loads(Path(path).read_text())
        exprs = [
            (panel.get("title", "?"), target.get("expr", "")) for panel in board.get("panels", []) for target in panel.get("targets", [])
        ]
        problems = []
        if not board.get("uid") or not board.get("title"):
            problems.append("dashboard needs a uid and a title")
        if not exprs:
            problems.append("no panel has a query")
        for title, expr in exprs:
            used = _METRIC_NAME.findall(expr)
            if not used:
                problems.append(f"panel '{title}': query uses no ortserve metric: {expr}")
            for metric in used:
                base = next((metric[: -len(s)] for s in _HISTOGRAM_SUFFIXES if metric.endswith(s) and metric[: -len(s)] in names), metric)
                if base not in names:
                    problems.append(f"panel '{title}': {metric} is not a metric the server defines")
        for problem in problems:
            print(f"INVALID {path}: {problem}")
        failures += bool(problems)
        if not problems:
            print(f"ok      {path}: {len(exprs)} queries over {len({m for _, e in exprs for m in _METRIC_NAME.findall(e)})} server metrics")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    manifests = sub.add_parser("manifests", help="Kubernetes objects (multi-document YAML, '-' = stdin)")
    manifests.add_argument("--k8s-version", action="append", required=True)
    manifests.add_argument("--schemas", required=True, help="directory of <group>_<version>_<Kind>.json")
    manifests.add_argument("--quiet", action="store_true", help="print only failures and the summary")
    manifests.add_argument("files", nargs="+")
    values = sub.add_parser("values", help="YAML documents against one JSON schema")
    values.add_argument("--schema", required=True)
    values.add_argument("files", nargs="+")
    dashboard = sub.add_parser("dashboard", help="Grafana dashboards: queries use metrics the server defines")
    dashboard.add_argument("--metrics-source", required=True, help="the server's observability package")
    dashboard.add_argument("files", nargs="+")
    args = parser.parse_args()
    return {"manifests": cmd_manifests, "values": cmd_values, "dashboard": cmd_dashboard}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
