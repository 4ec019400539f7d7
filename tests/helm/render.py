#!/usr/bin/env python3
"""Helm's own lint and render, offline, for tests/helm_chart.rs.

helm-python-sdk (module `helm_python`) embeds Helm's Go SDK, so no helm binary and no cluster
are needed.

    render.py probe
        Exit 0 and print the SDK's versions if helm_python imports, 3 otherwise.
    render.py lint CHART [VALUES.yaml ...]
        `helm lint --strict` with the values files: print the messages, exit 1 on any warning
        or error.
    render.py render CHART [VALUES.yaml ...] [--set-json JSON]
        `helm template`: every rendered manifest (NOTES.txt left out), as one YAML stream on
        stdout, each document preceded by `# Source: <template>`.

Values files are merged in order, later ones winning, as `helm -f a -f b` does.
"""

import json
import sys

RELEASE = "trace-summarizer"
NAMESPACE = "observability"


def load_helm():
    try:
        import helm_python
    except ImportError as e:
        print(f"helm_python is not importable ({e}); pip install helm-python-sdk", file=sys.stderr)
        sys.exit(3)
    return helm_python


def merge(base, override):
    """Deep merge of user values maps, override winning, as `helm -f a -f b` merges them. A null
    is kept: Helm itself then deletes that key from the chart's defaults."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def user_values(helm, args):
    values = {}
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--set-json":
            values = merge(values, json.loads(rest.pop(0)))
        else:
            with open(arg, encoding="utf-8") as f:
                values = merge(values, helm.values_from_yaml(f.read()) or {})
    return values


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    helm = load_helm()
    command = argv[1]
    if command == "probe":
        print(f"helm-python-sdk {helm.__version__}, Helm SDK {helm.helm_sdk_version()}")
        return 0
    chart_dir, extra = argv[2], argv[3:]
    values = user_values(helm, extra)
    if command == "lint":
        report = helm.lint(chart_dir, values, strict=True, namespace=NAMESPACE)
        for m in report.get("messages") or []:
            print(f"[{m.get('severity')}] {m.get('path')}: {m.get('error')}")
        for e in report.get("errors") or []:
            print(f"error: {e}")
        worst = max((m.get("severity", 0) for m in report.get("messages") or []), default=0)
        failed = worst >= 2 or bool(report.get("errors"))
        print(f"linted {report.get('total_charts_linted')} chart(s): {'FAILED' if failed else 'ok'}")
        return 1 if failed else 0
    if command == "render":
        with helm.Chart.load(chart_dir) as chart:
            manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        for path in sorted(manifests):
            if path.endswith("NOTES.txt") or not manifests[path].strip():
                continue
            sys.stdout.write(f"---\n# Source: {path}\n{manifests[path].strip()}\n")
        return 0
    print(f"unknown command {command!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
