"""`finetune-pipeline backfill-evals`: a Dagster backfill of model_eval over model versions.

Launched through the Dagster webserver's public GraphQL API, with the same
mutation (`launchPartitionBackfill`) the UI's Materialize button sends, so the
backfill lands in the instance that webserver serves; no private Dagster API.
"""

from __future__ import annotations

import argparse
import http.client
import json
import urllib.error
import urllib.request
from pathlib import Path

from finetune_pipeline.lib.config import load_config

DEFAULT_URL = "http://127.0.0.1:3000"  # where `dagster dev -w workspace.yaml` serves
START = "start it with `dagster dev -w workspace.yaml` (or pass --url)"
SERVES_US = "is it the webserver `dagster dev -w workspace.yaml` starts for this project?"
PROMOTION = ("leaderboard", "champion", "serving_spec")
EVAL_ASSET = "model_eval"  # partitioned by model version (dynamic partitions `model_versions`)
# One asset per eval suite, each partitioned by version: backfilling a suite is selecting its asset.
SUITES = {"task": ("model_eval",), "general": ("general_eval",), "all": ("model_eval", "general_eval")}
REQUEST_TIMEOUT_S = 120.0  # generous: a launch cut short may still land, and must not be sent twice

# model_eval's partition keys are the registered model versions (its partitions are dynamic).
KNOWN_VERSIONS = """
query BackfillEvalsVersions($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    __typename
    ... on AssetNode { partitionKeys }
    ... on Error { message }
  }
}
"""

# The UI's LaunchPartitionBackfill mutation, with the result types of LaunchBackfillResult.
LAUNCH = """
mutation BackfillEvals($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
  }
}
"""


class WebserverError(ValueError):
    """The webserver did not answer, or answered an error: one line for the user, no traceback."""


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _graphql_errors(body: object) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
        return "; ".join(_one_line(e.get("message", e) if isinstance(e, dict) else e) for e in body["errors"][:3])
    return None


def _graphql(url: str, query: str, variables: dict, launches: bool = False) -> dict:
    """POSTs one GraphQL request to `<url>/graphql`, once; any failure is a WebserverError naming the URL."""
    endpoint = f"{url}/graphql"
    request = urllib.request.Request(
        endpoint, data=json.dumps({"query": query, "variables": variables}).encode(), method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            raw = response.read()
    except urllib.error.HTTPError as e:
        try:
            detail = _graphql_errors(json.loads(e.read() or b"null"))
        except (ValueError, OSError, http.client.HTTPException):
            detail = None
        if detail:
            raise WebserverError(f"the Dagster webserver at {url} answered HTTP {e.code}: {detail}; "
                                 f"{SERVES_US}") from None
        raise WebserverError(f"{endpoint} answered HTTP {e.code} {_one_line(e.reason)}: is a Dagster webserver "
                             f"serving there? {START}") from None
    except urllib.error.URLError as e:
        raise WebserverError(f"no Dagster webserver answers at {url} ({_one_line(e.reason)}): {START}") from None
    except TimeoutError:
        landed = (f"; the backfill may still have been launched: look for it in the UI at {url} before "
                  "launching it again" if launches else "")
        raise WebserverError(f"the Dagster webserver at {url} did not answer within {REQUEST_TIMEOUT_S:.0f}s"
                             f"{landed}") from None
    except (OSError, http.client.HTTPException) as e:
        raise WebserverError(f"no Dagster webserver answers at {url} ({_one_line(e) or type(e).__name__}): "
                             f"{START}") from None
    try:
        body = json.loads(raw)
    except ValueError:
        raise WebserverError(f"{endpoint} did not answer GraphQL (not JSON): is a Dagster webserver serving "
                             f"there? {START}") from None
    detail = _graphql_errors(body)
    if detail:
        raise WebserverError(f"the Dagster webserver at {url} answered an error: {detail}; {SERVES_US}")
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise WebserverError(f"{endpoint} answered without GraphQL data: is a Dagster webserver serving there? {START}")
    return body["data"]


def _known_versions(url: str) -> list[str]:
    """The model versions registered in the webserver's instance (the one the backfill lands in)."""
    node = _graphql(url, KNOWN_VERSIONS, {"assetKey": {"path": [EVAL_ASSET]}}).get("assetNodeOrError") or {}
    if node.get("__typename") != "AssetNode":
        raise WebserverError(f"the Dagster webserver at {url} has no asset {EVAL_ASSET} "
                             f"({_one_line(node.get('message', node.get('__typename')))}): {SERVES_US}")
    return list(node["partitionKeys"])


def _launch_error(result: dict) -> str:
    kind = result.get("__typename", "unknown result")
    if result.get("message"):
        return f"{kind}: {_one_line(result['message'])}"
    if result.get("errors"):
        return f"{kind}: " + "; ".join(_one_line(e.get("message", e)) for e in result["errors"][:3])
    return _one_line(f"{kind}: {', '.join(f'{k}={v}' for k, v in result.items() if k != '__typename')}")


def cmd_backfill_evals(args: argparse.Namespace) -> int:
    """Launch a real Dagster asset backfill of model_eval over model versions.

    The webserver at --url records it in its instance exactly as when launched from
    the UI (Overview -> Backfills); the daemon that `dagster dev` starts executes it,
    one run per version (model_eval's backfill policy), then the leaderboard,
    champion and serving spec once every eval is done.
    """
    url = args.url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"--url {args.url!r}: give the webserver's address with its scheme, e.g. {DEFAULT_URL}")
    cfg_path = Path(args.config).resolve() if args.config else None
    if cfg_path is not None:
        load_config(cfg_path)  # fail here, with the file named, not in every run

    known = _known_versions(url)
    versions = list(dict.fromkeys(args.versions)) or known
    unknown = sorted(set(versions) - set(known))
    if unknown:
        raise ValueError(f"not model versions in this instance: {unknown} (known: {', '.join(known) or 'none'})")
    if not versions:
        raise ValueError("no model versions registered yet: materialize base_model (or run "
                         "`finetune-pipeline demo`) first")
    suites = list(SUITES[getattr(args, "suite", "all")])
    selection = suites + ([] if args.no_promote else list(PROMOTION))
    params = {
        "partitionNames": versions,
        "assetSelection": [{"path": [key]} for key in selection],
        "tags": [{"key": "finetune/command", "value": "backfill-evals"}],
        "title": f"backfill-evals: {len(versions)} model version(s)",
        "description": "Re-evaluate model versions on the current eval set",
    }
    if cfg_path is not None:
        params["runConfigData"] = {"resources": {"settings": {"config": {"config_path": str(cfg_path)}}}}
    result = _graphql(url, LAUNCH, {"backfillParams": params}, launches=True).get("launchPartitionBackfill") or {}
    if result.get("__typename") != "LaunchBackfillSuccess":
        raise WebserverError(f"the Dagster webserver at {url} did not launch the backfill: {_launch_error(result)}")
    backfill_id = result["backfillId"]
    print(f"backfill {backfill_id}: {', '.join(suites)} over {len(versions)} version(s): {', '.join(versions)}"
          + ("" if args.no_promote else f"; then {', '.join(PROMOTION)}"))
    print(f"  launched through {url}/graphql, as the UI's Materialize button does; the daemon started by "
          f"`dagster dev -w workspace.yaml` runs it; watch it at {url}/runs/b/{backfill_id}")
    return 0
