"""`argus-task train --condition C`: train the clear -> C weather generator of this run.

Reads only what validation accepted (clear train frames + C train frames), trains the CUT-family
translator (:mod:`argus_tasks.models.generator`) with atomic checkpoints in
``train/<C>/checkpoints/`` (a retry resumes from the latest), logs to MLflow (config, per-step
losses, sample grids, the model with a signature) and registers it as a new version of
``argus-weather-<C>`` with alias ``challenger``, tagged with the run's lineage.

Reuse (:mod:`argus_tasks.reuse`): the result, the checkpoint folder
(``train/<C>/checkpoints/<key>/``), the MLflow run and the registered version all belong to one
reuse key (accepted data, config incl. ``--init-from``, code). A rerun with the same key returns the
earlier result (``"reused"``) or resumes its checkpoints and finds its version; a changed key
recomputes, says why (``"recomputed_because"``), never resumes another key's checkpoints and
registers a new version. ``--init-from champion`` warm-starts the generator from the current
champion's weights (scratch, with a log line, when there is none).

Under torchrun (``argus-task torchrun --nproc-per-node=N ... -m argus_tasks train ...``, WORLD_SIZE > 1)
every rank trains with DDP on its shard of the frames (:mod:`argus_tasks.models.ddp`); rank 0 alone logs
to MLflow, writes checkpoints and registers the model; every rank resumes from the same checkpoint. At the
end the ranks compare the hashes of their weights (``rank_content_hashes`` in the result; a mismatch fails
the step before anything is registered) and every rank returns rank 0's result.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time

from argus_tasks.contract import CONDITIONS, PermanentStepError, StepContext

HELP = "train the clear -> condition weather generator (CUT family, physics head) and register it"
log = logging.getLogger("argus.train")
N_GRID = 6


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--condition", required=True, choices=CONDITIONS)
    p.add_argument("--model-config", default="tiny", help="tiny (CPU, 64 px) or full (GPU, 256 px)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default, or 0: the config's)")
    p.add_argument("--head", choices=("physics", "free"), default=None, help="output head (default: physics)")
    p.add_argument("--seed", type=int, default=None, help="training seed (default: the config's, 0)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set lr=5e-4 (repeatable; unknown keys are rejected)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop training after this many seconds even before --steps (a time budget)")
    p.add_argument("--init-from", choices=("scratch", "champion"), default="scratch",
                   help="start the generator from scratch (default) or from the weights of the current "
                        "argus-weather-<condition>@champion (scratch when there is none yet)")
    p.add_argument("--min-train-frames", type=int, default=1,
                   help="fail (permanently) when fewer accepted train frames of the condition than this")
    p.add_argument("--hard-frame-weight", type=float, default=0.0,
                   help="oversample source frames like the condition's hard set: such a frame is drawn 1 + W times "
                        "as often (default 0: uniform; see argus_tasks.hardframes.training)")
    p.add_argument("--hard-set", default="latest", help="hard set to oversample: latest (default), a version, or none")


def require_enough(rows, condition: str, minimum: int) -> None:
    """A generator trained on a handful of frames must not become a champion: fail before training."""
    if len(rows) < minimum:
        raise PermanentStepError(
            f"too few frames to train {condition}: {len(rows)} accepted {condition}/train frame(s), the run "
            f"requires at least {minimum} (Param min_train_frames). Pull a dataset revision or data window "
            "with more frames (data_window=cumulative or all), or lower min_train_frames.")


def _config(args):
    from argus_tasks.models.config import ConfigError, load_config, parse_overrides

    try:
        overrides = parse_overrides(args.overrides)
        overrides.update({k: v for k, v in (("steps", args.steps or None), ("head", args.head), ("seed", args.seed))
                          if v is not None})
        return load_config(args.model_config, overrides)
    except ConfigError as exc:
        raise PermanentStepError(f"bad model config: {exc}") from exc


def run(args: argparse.Namespace, ctx: StepContext) -> dict:
    from argus_tasks import reuse
    from argus_tasks.data.access import accepted_fingerprint, load_accepted
    from argus_tasks.hardframes import training as hardframes

    where = f"train/{args.condition}"
    cfg = _config(args)
    manifest, root = load_accepted(ctx.run)  # fails closed on data that validate did not accept
    data_fp = accepted_fingerprint(ctx.run)
    registry, init = _resolve_init(args)
    hard = hardframes.resolve(ctx, args.condition, args.hard_frame_weight, args.hard_set)
    config = {"condition": args.condition, "model_config": cfg.to_dict(), "max_seconds": args.max_seconds,
              "init_from": args.init_from, "init_from_version": init["version"], **hardframes.config_entry(hard)}
    key = reuse.make_key(data_fp, config, ctx.git_commit)
    verdict = reuse.check(ctx.run, f"{where}/result.json", key, f"train {args.condition}")
    if verdict.reuse:
        return verdict.result

    import torch

    from argus_tasks.data.access import lineage
    from argus_tasks.models import ddp
    from argus_tasks.models import frames as F
    from argus_tasks.models.checkpoints import CheckpointStore, remove_stale
    from argus_tasks.models.generator import WeatherTranslator
    from argus_tasks.models.runtime import set_threads
    from argus_tasks.models.segmenter import content_hash
    from argus_tasks.models.trainer import train_translator

    clear_rows = F.select(manifest, "clear", ("train",))
    adverse_rows = F.select(manifest, args.condition, ("train",))
    F.require_rows(clear_rows, "clear/train (generator source)", manifest)
    F.require_rows(adverse_rows, f"{args.condition}/train (generator target)", manifest)
    require_enough(adverse_rows, args.condition, args.min_train_frames)
    # frames are resized to the config's size, unless the config trains on random crops of larger frames
    native = int(min(clear_rows["width"].min(), clear_rows["height"].min()))
    size = None if (cfg.random_crop and native >= cfg.image_size) else cfg.image_size
    if size is None:
        size = native
    clear, clear_labels = F.load_frames(root, clear_rows, size=size, labels=hard is not None)
    clear_weights, hard_summary = hardframes.weights(hard, clear_rows, None if hard is None else clear_labels.numpy())
    adverse, _ = F.load_frames(root, adverse_rows, size=size, labels=False)

    rank, world, device = ddp.setup()
    if device.type == "cpu":  # the ranks of one machine share its CPUs
        set_threads(max(1, cfg.threads // ddp.local_world_size()))
    # seeded initialisation: the same data, config and seed give the same weights (an A/A rerun is identical)
    torch.manual_seed(cfg.seed)
    model = WeatherTranslator(cfg, args.condition, device)
    if init["version"] is not None:
        _warm_start(model, registry, init)
    if world > 1:
        model.wrap_ddp([device.index] if device.type == "cuda" else None)
    # checkpoints belong to one key (without the run length: a longer run continues the same trajectory);
    # those of another key (other data, config, code or init) are never resumed from
    ckpt_key = reuse.make_key(data_fp, {**config, "max_seconds": None,
                                        "model_config": {**config["model_config"], "steps": None}}, ctx.git_commit)
    folder = f"{where}/checkpoints"
    if rank == 0:
        stale = remove_stale(ctx.run, folder, ckpt_key.short)
        if stale:
            log.warning("train %s: removed checkpoints made for another reuse key: %s", args.condition, stale)
    ckpts = CheckpointStore(ctx.run, f"{folder}/{ckpt_key.short}")
    log.info("train %s: config %s (head %s, %d steps, batch %d, %d px) on %s x%d; %d clear + %d %s frames; "
             "generator %d params; init from %s; checkpoints %s", args.condition, cfg.name, cfg.head, cfg.steps,
             cfg.batch_size, cfg.image_size, device, world, len(clear_rows), len(adverse_rows), args.condition,
             model.n_params["generator"], init["describe"], ckpts.folder)
    if rank != 0:
        train_translator(model, clear, adverse, steps=cfg.steps, checkpoints=ckpts, seed=cfg.seed, rank=rank,
                         max_seconds=args.max_seconds, clear_weights=clear_weights)
        ddp.gather(content_hash(model.G))
        return _share_result(None, world)
    hard_info = {"hard": hard, "weights": clear_weights, "summary": hard_summary}
    result = _train_and_register(args, ctx, cfg, model, clear, adverse, ckpts, world, device, lineage(ctx.run),
                                 len(clear_rows), len(adverse_rows), train_translator, key, init, hard_info)
    return _share_result(reuse.stamp(result, key, ctx.try_number, verdict.reason), world)


def _resolve_init(args) -> tuple[object | None, dict]:
    """(registry or None, what the generator starts from): scratch, or the current champion's version."""
    if args.init_from == "scratch":
        return None, {"requested": "scratch", "from": "scratch", "version": None, "describe": "scratch"}
    from argus_tasks.models.registry_adapter import CHAMPION, Registry, weather_model_name

    registry = Registry()
    name = weather_model_name(args.condition)
    champion = registry.alias(name, CHAMPION)
    if champion is None:
        log.warning("train %s: --init-from champion, but %s has no champion yet: training from scratch",
                    args.condition, name)
        return registry, {"requested": "champion", "from": "scratch", "version": None,
                          "describe": f"scratch (no {name}@champion yet)"}
    return registry, {"requested": "champion", "from": "champion", "version": str(champion.version), "name": name,
                      "describe": f"{name}@champion v{champion.version}"}


def _warm_start(model, registry, init: dict) -> None:
    """Copy the champion generator's weights into ``model.G`` (same architecture, else a clear error)."""
    from argus_tasks.models.segmenter_registry import load_version

    champion = load_version(registry, init["name"], init["version"])
    try:
        model.G.load_state_dict(champion.state_dict())
    except RuntimeError as exc:
        raise PermanentStepError(
            f"cannot warm-start from {init['describe']}: its generator does not fit model config "
            f"{model.cfg.name!r} ({str(exc).splitlines()[0][:300]}). Train with init_from=scratch, or with the "
            "champion's model config.") from exc
    log.info("warm-started the generator from %s", init["describe"])


def _share_result(result: dict | None, world: int) -> dict:
    """Under torchrun every rank returns rank 0's result, then leaves the process group with the others."""
    if world == 1:
        return result
    from argus_tasks.models import ddp

    result = ddp.from_rank_zero(result)
    ddp.teardown()
    return result


def same_weights(hashes: list[str]) -> list[str]:
    """The ranks' weight hashes, when they are all one; a clear error naming the odd ranks otherwise."""
    odd = [rank for rank, h in enumerate(hashes) if h != hashes[0]]
    if odd:
        raise RuntimeError(f"after training, ranks {odd} hold other weights than rank 0 ({hashes}): the data-"
                           "parallel replicas diverged, so nothing is registered; this is a bug, report it")
    return hashes


def log_params_once(mrun, params: dict) -> None:
    """Log params; on a reopened run (a retry) keep the logged values: MLflow params are immutable."""
    import mlflow

    logged = mlflow.get_run(mrun.info.run_id).data.params
    new = {k: v for k, v in params.items() if k not in logged}
    changed = sorted(k for k, v in params.items() if k in logged and logged[k] != str(v))
    if new:
        mlflow.log_params(new)
    if changed:
        log.warning("this retry runs with other values of %s than the first try; MLflow keeps the first "
                    "try's params, the retry's are in the tag argus.retry_params", changed)
        mlflow.set_tag("argus.retry_params", json.dumps({k: str(params[k]) for k in changed})[:4500])


def _train_and_register(args, ctx, cfg, model, clear, adverse, ckpts, world, device, data_lineage,
                        n_clear, n_adverse, train_translator, key, init, hard_info) -> dict:
    import mlflow
    import torch

    from argus_tasks.hardframes import training as hardframes
    from argus_tasks.models import ddp
    from argus_tasks.models.generator import translate
    from argus_tasks.models.images import grid, png_bytes
    from argus_tasks.models.registry_adapter import CHALLENGER, Registry, weather_model_name
    from argus_tasks.models.segmenter import content_hash
    from argus_tasks.models.segmenter_registry import log_torch_model
    from argus_tasks.tracking import run_url

    where = f"train/{args.condition}"
    name = weather_model_name(args.condition)
    registry = Registry()
    # the reuse key is part of the identity: a retry of the same key finds its version, new data registers anew
    identity = {"argus.dag_id": ctx.dag_id, "argus.run_id": ctx.run_id, "argus.condition": args.condition,
                "argus.reuse_key": key.digest}
    init_tags = {"argus.init_from": init["from"], "argus.init_from_version": init["version"] or "none",
                 "argus.init_from_requested": init["requested"]}
    with _mlflow_run(ctx, args.condition, key) as mrun:
        log_params_once(mrun, {**{f"cfg.{k}": v for k, v in cfg.to_dict().items()}, "condition": args.condition,
                               "world_size": world, "device": str(device), "train_frames_clear": n_clear,
                               f"train_frames_{args.condition}": n_adverse, **model.n_params,
                               "init_from": init["from"], "init_from_version": init["version"] or "none",
                               "init_from_requested": init["requested"], "reuse_key": key.digest,
                               "hard_frame_weight": args.hard_frame_weight,
                               "hard_set": (hard_info["hard"] or {}).get("sha", hardframes.NONE)})
        mlflow.set_tags(hardframes.tags(hard_info["hard"], args.hard_frame_weight))
        hardframes.log_input(hard_info["hard"], args.condition)

        n = min(N_GRID, clear.shape[0], adverse.shape[0])
        src = clear[:n].float() / 255.0

        def sample_grid(generator):
            return grid([src, translate(generator, src.to(device), seed=cfg.seed), adverse[:n].float() / 255.0])

        def on_log(step: int, record: dict) -> None:
            mlflow.log_metrics({k: float(v) for k, v in record.items() if k != "step"}, step=step)
            if cfg.sample_every_steps and step % cfg.sample_every_steps == 0 and step < cfg.steps:
                mlflow.log_image(sample_grid(model.G), artifact_file=f"samples/{args.condition}_grid_step{step:06d}.png")

        started = time.time()
        outcome = train_translator(model, clear, adverse, steps=cfg.steps, checkpoints=ckpts, seed=cfg.seed,
                                   on_log=on_log, max_seconds=args.max_seconds, clear_weights=hard_info["weights"])
        rank_hashes = same_weights(ddp.gather(content_hash(model.G)))
        generator = model.G.float().cpu().eval()
        device = torch.device("cpu")
        image = sample_grid(generator)
        sample_url = ctx.run.write_bytes(f"{where}/samples/grid.png", png_bytes(image))
        mlflow.log_image(image, artifact_file=f"samples/{args.condition}_grid_step{outcome.steps:06d}.png")
        digest = content_hash(generator)
        mlflow.log_metrics({"train_seconds": time.time() - started, "final_images_per_s": outcome.images_per_s},
                           step=outcome.steps)

        existing = registry.find(name, identity)
        if existing is None:
            info = log_torch_model(generator, "generator", cfg.image_size)
            source_uri = info.model_uri
        else:  # an earlier try of this key registered its weights: they are what the version holds
            source_uri = existing.source
            stored = existing.tags.get("argus.content_hash")
            if stored and stored != digest:
                log.warning("%s v%s (registered by an earlier try of this key) holds weights %s, not this "
                            "try's %s: keeping the registered weights and their hash", name, existing.version,
                            stored[:12], digest[:12])
                digest = stored
        tags = {**ctx.lineage_tags(), **{f"argus.{k}": v for k, v in data_lineage.items()},
                "argus.content_hash": digest, "argus.model_config": cfg.name, "argus.head": cfg.head,
                "argus.steps": str(outcome.steps), "argus.mlflow_run_id": mrun.info.run_id, **init_tags,
                "argus.code_source_sha256": key.code["source_sha256"],
                **hardframes.tags(hard_info["hard"], args.hard_frame_weight)}
        mv, created = registry.register(name, source_uri, mrun.info.run_id, identity, tags,
                                        description=f"clear -> {args.condition} weather generator (CUT family)")
        registry.set_alias(name, CHALLENGER, mv.version)
        log.info("%s v%s is the challenger (%s); samples %s", name, mv.version,
                 "new version" if created else "version of an earlier try", sample_url)
        return {
            "condition": args.condition, "mlflow_run_id": mrun.info.run_id, "mlflow_run_url": run_url(mrun),
            "model_name": name, "model_version": str(mv.version), "model_uri": f"models:/{name}/{mv.version}",
            "registered_new_version": created, "content_hash": digest, "model_config": cfg.name, "head": cfg.head,
            "config": cfg.to_dict(), "steps": outcome.steps, "resumed_from_step": outcome.resumed_from,
            "final_losses": outcome.final_losses, "images_per_s": round(outcome.images_per_s, 2),
            "train_seconds": round(outcome.train_seconds, 2), "train_cpu_seconds": round(outcome.cpu_seconds, 2),
            "images_per_cpu_s": round(outcome.images / max(outcome.cpu_seconds, 1e-9), 2),
            "samples": sample_url,
            "generator_params": model.n_params["generator"], "train_frames": {"clear": n_clear, args.condition: n_adverse},
            "init_from": init["from"], "init_from_version": init["version"], "init_from_requested": init["requested"],
            "checkpoints": ckpts.folder, "world_size": world, "rank_content_hashes": rank_hashes,
            "hard_set": (hard_info["hard"] or {}).get("sha"), "hard_frame_weight": args.hard_frame_weight,
            "hard_sampling": hard_info["summary"],
        }


@contextlib.contextmanager
def _mlflow_run(ctx, condition: str, key):
    """The MLflow run of this train and reuse key: a retry of the key reopens it, another key gets its own.

    (``tracking.step_run`` keyed by the reuse key too; it would reopen the run of the earlier data.)
    """
    import mlflow

    from argus_tasks import system_metrics  # CPU, memory (and GPU) of the run, sampled by MLflow
    from argus_tasks.tracking import ensure_reachable, experiment_name, find_run, use_experiment

    ensure_reachable()
    experiment_id = use_experiment(experiment_name(ctx))
    identity = {"argus.dag_id": ctx.dag_id, "argus.run_id": ctx.run_id, "argus.step": "train",
                "argus.condition": condition, "argus.reuse_key": key.digest}
    tags = {**ctx.lineage_tags(), **identity}
    previous = find_run(mlflow.MlflowClient(), experiment_id, identity)
    if previous is not None:
        log.info("reopening MLflow run %s of an earlier try with the same reuse key", previous.info.run_id)
        run = mlflow.start_run(run_id=previous.info.run_id, **system_metrics.run_kwargs())
        mlflow.set_tags(tags)
    else:
        run = mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{condition}", tags=tags,
                               **system_metrics.run_kwargs())
    with run:
        yield run
