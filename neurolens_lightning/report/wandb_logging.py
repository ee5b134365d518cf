"""Weights & Biases logging of a scan: charts, candidate table, the report page and an artifact.

Charts are logged as ``wandb.Html(plotly.io.to_html(fig, ...), inject=False)`` rather than
``wandb.Plotly``, which renders some figures empty (wandb issues #9563, #2191); ``inject=False``
keeps W&B from linking its hosted stylesheet. The x axis is ``trainer/global_step`` (the
Lightning convention): when ``step`` is given it is put into the logged dict, never passed
as ``step=`` to ``run.log``. ``wandb`` is imported lazily, so the rest of the package works
without it.

Example:
    >>> run = wandb_run_for({"enabled": True, "project": "neurolens"})   # doctest: +SKIP
    >>> log_scan_to_wandb(result.to_dict(), "reports/x/report.html", run=run)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping

import plotly.io as pio

from neurolens_lightning.report import figures
from neurolens_lightning.report.page import write_report

__all__ = ["log_scan_to_wandb", "wandb_run_for", "candidate_rows", "CANDIDATE_COLUMNS"]

#: columns of the logged candidate table (also of candidate_rows(data, role="suppressor")); ``status`` stays at
#: position 13; schema 2 dropped the ablation z, so positions 11-12 are now ``ablation_p``, ``ablation_p_holm``.
#: ``status`` and ``ablation_verdict`` use the causal test's one vocabulary (validated, validated suppressor,
#: causal, not a candidate, not causal; ``not ablated`` for an untested neuron); ``ablation_causal`` beside the
#: verdict is the causal criteria alone (True for a causal neuron the ranking did not select)
CANDIDATE_COLUMNS = ["rank", "layer", "index", "selectivity", "selectivity_q", "consistency", "importance", "score",
                     "ablation_delta", "ablation_ci_low", "ablation_ci_high", "ablation_p", "ablation_p_holm",
                     "status", "top_example", "top_activation", "role", "selectivity_ci_low", "selectivity_ci_high",
                     "selectivity_layer", "mean_pos", "mean_neg", "ablation_direction", "ablation_delta_control",
                     "ablation_specificity_ci_low", "ablation_specificity_ci_high", "ablation_null_n",
                     "ablation_null_exceedances", "ablation_p_floor", "ablation_verdict", "ablation_causal",
                     "ablation_reasons"]


def candidate_rows(data: dict[str, Any], role: str = "candidate") -> list[list[Any]]:
    """The top-k candidates (``role="suppressor"``: suppressors) as rows of :data:`CANDIDATE_COLUMNS`.

    Plain JSON values; the p-value is never below its ``p_floor`` (the smallest p the null can give).
    """
    neurons = figures.suppressors(data) if role == "suppressor" else figures.candidates(data)
    rows = []
    for n in neurons:
        ab = n.get("ablation") if isinstance(n.get("ablation"), dict) else {}
        ex = next(iter(n.get("top_examples") or []), None) or {}
        ci = n.get("selectivity_ci") if isinstance(n.get("selectivity_ci"), list) else [None, None]
        p = ab.get("p_value")
        if isinstance(p, (int, float)) and isinstance(ab.get("p_floor"), (int, float)):
            p = max(p, ab["p_floor"])
        rows.append([n.get("rank"), n.get("layer"), n.get("index"), n.get("selectivity"), n.get("selectivity_q"),
                     n.get("consistency"), n.get("importance"), n.get("score"), ab.get("delta"), ab.get("ci_low"),
                     ab.get("ci_high"), p, ab.get("p_holm"), figures.candidate_status(n, data),
                     _example_text(ex), ex.get("activation"),
                     n.get("role"), (ci + [None, None])[0], (ci + [None, None])[1], n.get("selectivity_layer"),
                     n.get("mean_pos"), n.get("mean_neg"), ab.get("direction"), ab.get("delta_control"),
                     ab.get("specificity_ci_low"), ab.get("specificity_ci_high"), ab.get("null_n"),
                     ab.get("null_exceedances"), ab.get("p_floor"), figures.verdict_of(ab) if ab else None,
                     _causal(ab) if ab else None, "; ".join(ab.get("reasons") or []) if ab else None])
    return rows


def _causal(ab: dict[str, Any]) -> bool:
    """The record's ``causal`` (older results without it: whether its verdict is a causal one)."""
    if isinstance(ab.get("causal"), bool):
        return ab["causal"]
    return figures.verdict_of(ab) != "not causal"


def _example_text(ex: dict[str, Any]) -> Any:
    """A top example as table text: the sentence, or the image path, or - for an image the callback inlined as a
    PNG (no file) - its label, never the data URI itself."""
    if ex.get("text") is not None:
        return ex["text"]
    img = ex.get("image")
    if isinstance(img, str) and img.startswith("data:"):
        return f"{ex.get('label') or 'image'} (inline image)"
    return img


def _resolve_run(run: Any) -> Any:
    import wandb

    if run is None:
        run = wandb.run
    elif hasattr(run, "experiment") and not hasattr(run, "log_artifact"):  # a Lightning WandbLogger
        run = run.experiment
    if run is None:
        raise RuntimeError("no active W&B run: pass run=..., or start one with wandb_run_for(config) / wandb.init()")
    return run


def _artifact_name(prefix: str, data: dict[str, Any]) -> str:
    raw = f"{prefix}-{data.get('model') or 'model'}-{data.get('concept') or 'concept'}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", raw)[:120]


def _scalars(data: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The scan's headline counts (and the ablation summary's) as ``{prefix}/{key}`` scalars, where numeric."""
    summ = data.get("ablation_summary")
    sources = [(data, ("n_neurons_scanned", "n_significant_fdr", "n_candidates", "n_suppressors"))]
    if isinstance(summ, dict):
        sources.append((summ, ("n_validated", "n_suppressors_validated", "n_causal", "n_causal_not_candidate",
                               "n_not_causal", "joint_delta", "joint_p_null")))
    return {f"{prefix}/{key}": src[key] for src, keys in sources for key in keys
            if isinstance(src.get(key), (int, float)) and not isinstance(src.get(key), bool)}


def _report_artifact(data: dict[str, Any], prefix: str, results: Path, report: Path) -> Any:
    """A ``neurolens-report`` artifact holding ``results.json`` and ``report.html``, with the scan's metadata."""
    import wandb

    art = wandb.Artifact(_artifact_name(prefix, data), type="neurolens-report",
                         description=f"NeuroLens report: concept {data.get('concept')!s} in {data.get('model')!s}",
                         metadata={k: data.get(k) for k in ("model", "concept", "n_neurons_scanned",
                                                            "n_significant_fdr", "fdr_q", "min_selectivity",
                                                            "n_candidates", "n_suppressors", "top_k", "warnings")})
    art.add_file(str(results), name="results.json")
    art.add_file(str(report), name="report.html")
    return art


def log_scan_to_wandb(data: dict[str, Any], report_path: str | Path | None = None, run: Any = None,
                      step: int | None = None, prefix: str = "neurolens", artifact: bool = True,
                      plotlyjs: str = "cdn", log_page: bool = True) -> dict[str, Any]:
    """Log a scan's figures, candidate table, report page and (optionally) an artifact to W&B.

    Args:
        data: the results dict.
        report_path: ``report.html`` (or its folder) written by :func:`write_report`; when
            None the page is rendered into a temporary folder. ``results.json`` is taken from
            the same folder when present, else written from ``data``.
        run: a ``wandb`` run or a Lightning ``WandbLogger`` (default: ``wandb.run``).
        step: logged as ``"trainer/global_step"`` in the same dict (never ``step=``).
        prefix: key prefix (``neurolens/heatmap`` ...) and artifact name prefix.
        artifact: also log ``results.json`` + ``report.html`` as a ``neurolens-report`` artifact.
        plotlyjs: how each chart's HTML loads plotly.js: ``cdn`` (small; the W&B UI is online)
            or ``inline`` (each chart self-contained, ~4.8 MB each).
        log_page: log the whole report page as ``{prefix}/report`` (``wandb.Html``).

    Returns:
        the dict passed to ``run.log`` (keys -> W&B media objects and scalars).
    """
    import wandb  # lazy: wandb takes about a second to import, paid only when logging

    run = _resolve_run(run)
    include = "cdn" if plotlyjs == "cdn" else True
    log: dict[str, Any] = {}
    for name, fig in figures.build_figures(data).items():
        chart = pio.to_html(fig, full_html=True, include_plotlyjs=include, div_id=f"nl-{name}",
                            config={"displaylogo": False, "responsive": True})
        log[f"{prefix}/{name}"] = wandb.Html(chart, inject=False)
    log[f"{prefix}/candidates"] = wandb.Table(columns=CANDIDATE_COLUMNS, data=candidate_rows(data))
    log.update(_scalars(data, prefix))

    tmp: tempfile.TemporaryDirectory | None = None
    try:
        report = Path(report_path) if report_path is not None else None
        if report is not None and report.is_dir():
            report = report / "report.html"
        if (log_page or artifact) and (report is None or not report.is_file()):
            tmp = tempfile.TemporaryDirectory(prefix="neurolens-wandb-")
            report = write_report(data, Path(tmp.name) / "report.html")
        if log_page and report is not None:
            log[f"{prefix}/report"] = wandb.Html(report.read_text(encoding="utf-8"), inject=False)
        if step is not None:
            log["trainer/global_step"] = int(step)
            try:
                run.define_metric(f"{prefix}/*", step_metric="trainer/global_step")
            except Exception:  # pragma: no cover - define_metric is optional
                pass
        run.log(log)
        if artifact and report is not None:
            results = report.parent / "results.json"
            if not results.is_file():
                if tmp is None:
                    tmp = tempfile.TemporaryDirectory(prefix="neurolens-wandb-")
                results = Path(tmp.name) / "results.json"
                results.write_text(json.dumps(data, indent=1), encoding="utf-8")
            run.log_artifact(_report_artifact(data, prefix, results, report))
    finally:
        if tmp is not None:
            tmp.cleanup()
    return log


# ---------------------------------------------------------------------------- run helper
def _get(cfg: Any, key: str, default: Any = None) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def _api_key_configured() -> bool:
    """Whether W&B credentials are configured (env, session or netrc), without prompting or network."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib import wbauth

        settings = wandb_setup.singleton().settings
        host = settings.base_url
        auth = wbauth.session_credentials(host=host)
        if auth is not None and getattr(auth, "api_key", None):
            return True
        return bool(wbauth.read_netrc_auth(host=host) or settings.api_key)
    except Exception:
        try:
            import wandb

            return bool(getattr(wandb.api, "api_key", None))
        except Exception:
            return False


def wandb_run_for(config: Any, **init_kwargs: Any) -> Any:
    """Start a W&B run when the config asks for one; ``None`` otherwise.

    Args:
        config: ``None``/``False`` (no W&B), ``True`` (defaults), a mapping or object with
            ``enabled``, ``project``, ``entity``, ``mode`` (e.g. ``WandbConfig``), or a config
            that holds one as ``.wandb`` (e.g. ``ScanConfig``). ``enabled`` must be true
            (when the key exists). ``mode`` None: ``WANDB_MODE`` if set, else ``online`` when an
            API key is configured and ``offline`` otherwise; ``disabled`` returns None.
        **init_kwargs: passed on to ``wandb.init`` (``name``, ``config``, ``dir``, ``tags`` ...).

    Returns:
        the run (``wandb.sdk.wandb_run.Run``) or None. Prints where the run is written.
    """
    if config is None or config is False:
        return None
    cfg: Any = {} if config is True else config
    sub = _get(cfg, "wandb")
    if sub is not None and not isinstance(sub, (bool, str)):
        cfg = sub
    elif isinstance(sub, bool):
        cfg = {"enabled": sub}
    enabled = _get(cfg, "enabled", True)
    if not enabled:
        return None
    mode = _get(cfg, "mode") or os.environ.get("WANDB_MODE") or ("online" if _api_key_configured() else "offline")
    if mode == "dryrun":
        mode = "offline"
    if mode == "disabled":
        return None
    import wandb

    kwargs = {"project": _get(cfg, "project") or "neurolens", "entity": _get(cfg, "entity"), "mode": mode}
    for key in ("name", "group", "tags", "dir", "job_type"):
        if _get(cfg, key) is not None:
            kwargs[key] = _get(cfg, key)
    kwargs.update(init_kwargs)
    run = wandb.init(**kwargs)
    where = getattr(run, "dir", None)
    if mode == "offline":
        run_dir = Path(where).parent if where else None
        print(f"neurolens: W&B run written offline to {run_dir} (upload later with `wandb sync {run_dir}`)")
    else:
        print(f"neurolens: W&B run {getattr(run, 'url', None) or ''} (local files in {where})")
    return run
