"""Which input channels does a network use, and does input normalization matter? Measures both.

1. The agent: weight magnitude per input channel of every layer that reads a multi-channel map (the
   first conv over the frame stack, the trunk, the code layer and the heads after the encoder), and the
   loss change when each stacked frame is ablated, on frames of random play. A fresh agent always; a
   trained one as well with a checkpoint.
2. The oracle experiment: a synthetic two-class segmentation task, C = 512 distractor channels plus one
   oracle channel equal to the mask. Accuracy, and the oracle's share of weight magnitude and of ablation
   importance, as its scale, the distractors' scale and normalization, its alignment and the head change.
3. Up to 2**20 (about a million) channels with the per-pixel linear head a 1x1 conv is.
4. Net surgery: the head hand-set to the oracle alone, its gradient there, and how far training moves it.
5. Normalization: raw / scaled / mean-subtracted / standardized inputs for a dense and an image-level task,
   and what each of the agent's normalizations does to the 5x2 knife of contrast 11/255.
6. The agent's parameters per layer against the data's degrees of freedom.

The experiments themselves live in agent.research.channels; this module runs them as one report.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from agent.config import NORMALIZATIONS, Config, EnvConfig, ModelConfig
from agent.env.game import GameEnv
from agent.models import Agent, recon_target
from agent.models.capacity import agent_outputs, capacity_report, format_capacity
from agent.research.channels import (
    FEATURE_NORMS,
    LinearOracleSpec,
    NormSpec,
    OracleSpec,
    channel_ablation,
    channel_weight_magnitudes,
    find_map_consumers,
    knife_contrast,
    net_surgery,
    oracle_data,
    run_linear_oracle,
    run_normalization,
    run_oracle,
)
from agent.runs.files import write_json_atomic
from agent.watching.plotting import plt, save_figure

NUM_ACTIONS = 14

# Sizes of the full run and of --quick. The full run takes a few minutes on one CPU thread.
FULL = {
    "frames": 256,
    "oracle": OracleSpec(channels=512, size=8, train=1024, test=128, steps=400),
    "linear_channels": (512, 8192, 131072, 1 << 20),
    "linear": LinearOracleSpec(train_pixels=1 << 17, test_pixels=1 << 15, steps=60),
    "linear_big": LinearOracleSpec(channels=1 << 20, train_pixels=1 << 22, batch=1 << 17, steps=120, lr=0.1),
    "norm_steps": 400,
}
QUICK = {
    "frames": 32,
    "oracle": OracleSpec(channels=32, size=8, train=64, test=32, steps=30, ablation_samples=16),
    "linear_channels": (64, 4096),
    "linear": LinearOracleSpec(train_pixels=1 << 12, test_pixels=1 << 10, steps=10, ablation_channels=16),
    "linear_big": LinearOracleSpec(channels=1 << 13, train_pixels=1 << 15, batch=1 << 12, steps=10, lr=0.1,
                                   ablation_channels=16),
    "norm_steps": 20,
}
LINEAR_OPTIMIZERS = {"sgd": 1.0, "adam": 0.05}
NORM_OPTIMIZERS = {"adam": 1e-2, "sgd": 1e-2}
# Oracle variants whose per-channel lists stay in the report (for the plots).
PLOTTED = ("base", "sgd", "standardized", "oracle_x100", "features_x100")


def oracle_variants(base: OracleSpec) -> dict[str, OracleSpec]:
    """The oracle experiments: `base` is the pixel head (a 1x1 conv) trained by Adam on raw distractors."""
    std = replace(base, standardize=True)
    return {
        "base": base,
        "sgd": replace(base, optimizer="sgd", lr=0.1),
        "standardized": std,
        "no_oracle": replace(base, oracle="none"),
        "oracle_x0.01": replace(base, oracle_scale=0.01),
        "oracle_x100": replace(base, oracle_scale=100.0),
        "features_x100": replace(base, feature_scale=100.0),
        "oracle_x0.01_standardized": replace(std, oracle_scale=0.01),
        "features_x100_standardized": replace(std, feature_scale=100.0),
        "transposed": replace(base, oracle="transposed"),
        "shuffled": replace(base, oracle="shuffled"),
        "conv3x3": replace(base, head="conv3x3", lr=3e-3),
        "conv3x3_standardized": replace(std, head="conv3x3", lr=3e-3),
        "conv3x3_transposed_standardized": replace(std, head="conv3x3", lr=3e-3, oracle="transposed"),
        "pool_fc_standardized": replace(std, head="pool_fc", lr=3e-4),
        "flatten_fc_standardized": replace(std, head="flatten_fc", lr=3e-4),
        "flatten_fc_transposed_standardized": replace(std, head="flatten_fc", lr=3e-4, oracle="transposed"),
    }


# ---------------------------------------------------------------------------------------------------
# The agent


def collect_frames(env_cfg: EnvConfig, count: int, seed: int) -> np.ndarray:
    """`count` observations (N, stack, h, w) uint8 of random play, from 4 emulators."""
    env = GameEnv(replace(env_cfg, num_envs=4, num_threads=1), seed=seed)
    rng = np.random.default_rng(seed)
    try:
        env.reset()
        frames = []
        while sum(len(f) for f in frames) < count:
            frames.append(env.step(rng.integers(0, env.num_actions, env.num_envs)).obs.copy())
    finally:
        env.close()
    return np.concatenate(frames)[:count]


def agent_channels(agent: Agent, obs: np.ndarray) -> dict[str, Any]:
    """Weight magnitude per input channel of every map-reading layer, and the frame-stack ablation."""
    agent.eval()
    x = torch.from_numpy(obs)
    layers = []
    for consumer in find_map_consumers(agent, lambda: (agent.get_action_and_value(x[:2]), agent.reconstruct(x[:2]))):
        magnitude = channel_weight_magnitudes(consumer.module, consumer.in_shape)
        layers.append({
            "layer": consumer.name, "type": type(consumer.module).__name__, "in_shape": list(consumer.in_shape),
            "channels": consumer.channels, "magnitudes": magnitude.tolist(),
            "max_over_median": float(magnitude.max() / np.median(magnitude)),
            "max_share": float(magnitude.max() / magnitude.sum()),
            "coefficient_of_variation": float(magnitude.std() / magnitude.mean()),
        })
    with torch.no_grad():
        normalized = agent.normalizer(x)
        target = recon_target(x)
        reference = F.log_softmax(agent.actor(agent.encoder(normalized)), dim=-1)

        def recon_loss(v: torch.Tensor) -> torch.Tensor:
            return F.mse_loss(agent.decoder(agent.encoder(v)), target)

        def policy_kl(v: torch.Tensor) -> torch.Tensor:
            logp = F.log_softmax(agent.actor(agent.encoder(v)), dim=-1)
            return F.kl_div(logp, reference, log_target=True, reduction="batchmean")

        ablation = {
            f"{name}_{mode}": channel_ablation(fn, normalized, mode=mode).tolist()
            for name, fn in (("recon_mse", recon_loss), ("policy_kl", policy_kl)) for mode in ("zero", "mean")
        }
    ablation["channels"] = [f"frame t-{agent.obs_shape[0] - 1 - i}" for i in range(agent.obs_shape[0])]
    return {"layers": layers, "frame_ablation": ablation, "frames": len(obs)}


# ---------------------------------------------------------------------------------------------------
# Plots


def plot_agent(results: dict[str, dict], path: Path) -> None:
    names = list(results)
    layers = [layer["layer"] for layer in results[names[0]]["layers"]]
    fig, axes = plt.subplots(len(layers), len(names), figsize=(6 * len(names), 1.8 * len(layers)), squeeze=False)
    for col, name in enumerate(names):
        by_name = {layer["layer"]: layer for layer in results[name]["layers"]}
        for row, layer_name in enumerate(layers):
            ax = axes[row][col]
            layer = by_name.get(layer_name)
            if layer is None:
                ax.axis("off")
                continue
            ax.bar(range(layer["channels"]), layer["magnitudes"], width=1.0, color="tab:blue")
            ax.set_title(f"{name}: {layer_name} ({layer['type']}, {layer['channels']} channels)", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.supxlabel("input channel")
    fig.supylabel("L2 norm of the channel's weights")
    fig.tight_layout()
    save_figure(fig, path)


def plot_oracle_channels(oracle: dict[str, dict], path: Path) -> None:
    names = [n for n in PLOTTED if n in oracle and "magnitudes" in oracle[n]]
    fig, axes = plt.subplots(len(names), 2, figsize=(13, 2.2 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        result = oracle[name]
        for col, (key, label) in enumerate((("magnitudes", "weight magnitude"),
                                            ("importance", "ablation: loss increase"))):
            values = np.asarray(result[key])
            ax = axes[row][col]
            colors = ["tab:gray"] * (len(values) - 1) + ["tab:red"]
            ax.bar(range(len(values)), values, width=1.0, color=colors)
            ax.set_title(f"{name}: {label} (oracle, red, is channel {len(values) - 1}); "
                         f"acc {result['accuracy']:.3f}", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def plot_oracle_variants(oracle: dict[str, dict], path: Path) -> None:
    names = list(oracle)
    y = np.arange(len(names))
    fig, axes = plt.subplots(1, 3, figsize=(15, 0.35 * len(names) + 1.5), sharey=True)
    axes[0].barh(y - 0.2, [oracle[n]["accuracy"] for n in names], 0.4, label="test accuracy")
    axes[0].barh(y + 0.2, [oracle[n]["accuracy_oracle_ablated"] for n in names], 0.4, label="oracle ablated")
    axes[0].axvline(oracle[names[0]]["majority_accuracy"], color="k", lw=0.8, ls="--", label="majority class")
    axes[0].set_xlim(0.5, 1.0)
    axes[0].legend(fontsize=7)
    axes[1].barh(y - 0.2, [oracle[n]["weight"]["share"] for n in names], 0.4, label="weight magnitude")
    axes[1].barh(y + 0.2, [oracle[n]["effective_weight"]["share"] for n in names], 0.4,
                 label="weight x input std")
    axes[1].set_xscale("log")
    axes[1].legend(fontsize=7)
    axes[1].set_title("oracle's share of all channels'", fontsize=9)
    axes[2].barh(y, [max(oracle[n]["ablation"]["share"], 1e-4) for n in names], 0.6, color="tab:red")
    axes[2].set_xscale("log")
    axes[2].set_title("oracle's share of ablation importance", fontsize=9)
    axes[0].set_yticks(y, names, fontsize=7)
    axes[0].invert_yaxis()
    fig.tight_layout()
    save_figure(fig, path)


def plot_large_c(runs: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    keys = (("test_accuracy", "test accuracy"), ("weight_energy_share", "oracle share of squared weight"),
            ("weight_over_median", "oracle |w| / median distractor |w|"),
            ("ablation_share_estimate", "oracle share of ablation importance"))
    for optimizer in LINEAR_OPTIMIZERS:
        picked = [r for r in runs if r["spec"]["optimizer"] == optimizer and r["role"] == "sweep"]
        for ax, (key, title) in zip(axes, keys, strict=True):
            ax.plot([r["spec"]["channels"] for r in picked], [r[key] for r in picked], "o-", label=optimizer)
            ax.set_title(title, fontsize=9)
            ax.set_xscale("log", base=2)
    big = [r for r in runs if r["role"] == "more_data"]
    for r in big:
        for ax, (key, _) in zip(axes, keys, strict=True):
            ax.plot([r["spec"]["channels"]], [r[key]], "*", ms=12, color="tab:green",
                    label=f"sgd, {r['spec']['train_pixels']:,} pixels")
    axes[2].set_yscale("log")
    axes[3].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("channels C")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def plot_normalization(runs: list[dict], contrast: dict[str, dict], path: Path) -> None:
    groups = sorted({(r["spec"]["task"], r["spec"]["optimizer"]) for r in runs})
    fig, axes = plt.subplots(1, len(groups) + 1, figsize=(4.2 * (len(groups) + 1), 3.6))
    for ax, (task, optimizer) in zip(axes, groups, strict=False):
        for r in runs:
            if (r["spec"]["task"], r["spec"]["optimizer"]) == (task, optimizer):
                ax.plot(r["curve"]["step"], r["curve"]["test_loss"], label=r["spec"]["normalization"])
        ax.set_yscale("log")
        ax.set_title(f"{task}, {optimizer} (lr {NORM_OPTIMIZERS[optimizer]:g})", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("test loss (BCE)")
    axes[0].legend(fontsize=7)
    kinds = list(contrast)
    # None: an input without spread (a flat frame), where any knife is infinitely loud; not drawn.
    heights = [math.nan if contrast[k]["relative_contrast"] is None else contrast[k]["relative_contrast"]
               for k in kinds]
    axes[-1].bar(kinds, heights, color="tab:purple")
    axes[-1].set_title("knife contrast / input spread (real frames)", fontsize=9)
    axes[-1].tick_params(axis="x", labelsize=7, rotation=30)
    fig.tight_layout()
    save_figure(fig, path)


# ---------------------------------------------------------------------------------------------------
# The summary


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def _oracle_row(name: str, r: dict) -> str:
    w, e, a = r["weight"], r["effective_weight"], r["ablation"]
    return (f"| {name} | {r['accuracy']:.3f} | {r['accuracy_oracle_ablated']:.3f} | {_pct(w['share'])} | "
            f"{w['rank']} | {_num(w['over_median_other'], 1)} | {_pct(e['share'])} | {_pct(a['share'])} | "
            f"{a['rank']} |")


def _oracle_section(o: dict) -> list[str]:
    base, sgd, std, blind = o["base"], o["sgd"], o["standardized"], o["no_oracle"]
    spec = base["spec"]
    main_runs = {"Adam": base, "SGD": sgd, "Adam on standardized inputs": std}
    found = [name for name, r in main_runs.items()
             if r["ablation"]["rank"] == 1 and r["accuracy"] > blind["accuracy"] + 0.02]
    verdict = "Yes" if len(found) == len(main_runs) else "Partly" if found else "Not in this run"
    x100, small, big = o["oracle_x100"], o["oracle_x0.01"], o["features_x100"]
    fc = {k: o[k] for k in ("pool_fc_standardized", "flatten_fc_standardized")}
    flat, flat_t = o["flatten_fc_standardized"], o["flatten_fc_transposed_standardized"]
    labels = spec["train"] * spec["size"] ** 2
    return [
        "## 1. Can a network weigh one near-perfect channel far above 512, or a million, others?",
        "",
        f"Task: two-class segmentation of {spec['size']}x{spec['size']} maps ({spec['train']} training maps, "
        f"{spec['test']} test maps); {spec['channels']} distractor channels shaped like post-ReLU features "
        f"(non-negative, unequal scales, {spec['informative']:.0%} of them weakly tied to a blurred mask) plus the "
        "oracle channel = the ground-truth mask, concatenated last. Base head: a 1x1 conv (one linear classifier "
        f"shared by all pixels), Adam lr {spec['lr']:g}, {spec['steps']} steps of {spec['batch']} maps. Weight "
        "magnitude = L2 norm of the weights that read a channel; ablation = test-loss increase when the channel "
        "is replaced by its mean (all channels, "
        f"{spec['ablation_samples']} test maps); a share is the oracle's part of the sum over all channels.",
        "",
        "| variant | accuracy | acc. oracle ablated | weight share | weight rank | oracle / median weight "
        "| (weight x input std) share | ablation share | ablation rank |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *[_oracle_row(name, r) for name, r in o.items()],
        "",
        f"Majority-class accuracy {base['majority_accuracy']:.3f}; the distractors alone (`no_oracle`) give "
        f"{blind['accuracy']:.3f}.",
        "",
        f"**{verdict}.** At C = {spec['channels']} the oracle is the most important channel by ablation and lifts "
        f"accuracy above the distractors-only {blind['accuracy']:.3f} in {len(found)} of {len(main_runs)} runs "
        f"({'; '.join(found) or 'none'}): accuracy {base['accuracy']:.3f} / {sgd['accuracy']:.3f} / "
        f"{std['accuracy']:.3f}, ablation share {_pct(base['ablation']['share'])} / {_pct(sgd['ablation']['share'])}"
        f" / {_pct(std['ablation']['share'])}, oracle weight {_num(base['weight']['over_median_other'], 0)}x / "
        f"{_num(sgd['weight']['over_median_other'], 0)}x / {_num(std['weight']['over_median_other'], 0)}x the "
        f"median distractor's. Why a practitioner can still see {spec['channels'] + 1} similar magnitudes, each "
        "measured above:",
        "",
        f"- Summed over channels the oracle holds only {_pct(base['weight']['share'])} / "
        f"{_pct(sgd['weight']['share'])} / {_pct(std['weight']['share'])} of the weight magnitude: "
        f"{spec['channels']} small weights add up. Compare channels one by one (ratio to the median, rank).",
        f"- Magnitude is not importance when channels differ in scale. Oracle at 100x: accuracy "
        f"{x100['accuracy']:.3f} and {_pct(x100['ablation']['share'])} of the ablation importance, but its weight is "
        f"{_num(x100['weight']['over_median_other'], 1)}x the median ({_pct(x100['weight']['share'])} of the "
        f"magnitude) against {_num(base['weight']['over_median_other'], 1)}x at 1x. Features at 100x: the oracle's "
        f"weight is {_num(big['weight']['over_median_other'], 0)}x the median, yet its weight x input std share is "
        f"{_pct(big['effective_weight']['share'])}. Multiply by the input's std, or ablate.",
        f"- A small oracle beside large features is learned slowly: oracle at 0.01x gives {small['accuracy']:.3f} "
        f"(ablation share {_pct(small['ablation']['share'])}), features at 100x {big['accuracy']:.3f} "
        f"({_pct(big['ablation']['share'])}), within {spec['steps']} steps. Standardizing every channel (oracle "
        f"included) removes the difference: {o['oracle_x0.01_standardized']['accuracy']:.3f} and "
        f"{o['features_x100_standardized']['accuracy']:.3f}.",
        f"- A misaligned oracle is no use to a conv head: transposed {o['transposed']['accuracy']:.3f} (ablation "
        f"share {_pct(o['transposed']['ablation']['share'])}), another sample's mask {o['shuffled']['accuracy']:.3f}"
        f" ({_pct(o['shuffled']['ablation']['share'])}), distractors alone {blind['accuracy']:.3f}; conv3x3 on a "
        f"transposed oracle {o['conv3x3_transposed_standardized']['accuracy']:.3f} against "
        f"{o['conv3x3_standardized']['accuracy']:.3f} aligned.",
        "- Heads that pool or flatten into a fully connected layer (standardized inputs): conv3x3 "
        f"{o['conv3x3_standardized']['accuracy']:.3f}, " + ", ".join(
            f"{k.split('_standardized')[0]} {r['accuracy']:.3f} ({r['params']:,} parameters, final training loss "
            f"{r['train_loss_final']:.3f})" for k, r in fc.items())
        + f", for {labels:,} training labels: they fit the training set through the distractors and test near "
        f"the majority class. The flattened head on a transposed oracle, which it could in principle undo, "
        f"reaches {flat_t['accuracy']:.3f}; its oracle weight is {_num(flat_t['weight']['over_median_other'], 2)}x "
        f"the median against {_num(flat['weight']['over_median_other'], 2)}x on the aligned oracle: Adam moved "
        "every weight by about the same amount, whether the channel could help or not.",
        "",
    ]


def _large_c_section(runs: list[dict]) -> list[str]:
    sweep = [r for r in runs if r["role"] == "sweep"]
    first = sweep[0]
    lines = [
        "### Larger C: the per-pixel linear head, up to 2**20 channels",
        "",
        f"A 1x1 conv treats every pixel as a sample, so its C-channel question is a linear classifier on C "
        f"features. Distractors are unit noise, the oracle is the label; {first['spec']['train_pixels']:,} "
        f"training pixels, full batch, {first['spec']['steps']} steps (SGD lr {LINEAR_OPTIMIZERS['sgd']:g} with "
        f"momentum, Adam lr {LINEAR_OPTIMIZERS['adam']:g}); the distractors' ablation importance is estimated from "
        f"{first['ablation_sampled']} sampled channels. The last row has 32x the pixels.",
        "",
        "| C | optimizer | pixels per channel | train acc. | test acc. | oracle weight share | squared-weight share "
        "| oracle / median weight | weight rank | ablation share (est.) | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        lines.append(
            f"| {r['spec']['channels']:,} | {r['spec']['optimizer']} | {r['pixels_per_channel']:g} | "
            f"{r['train_accuracy']:.3f} | {r['test_accuracy']:.3f} | {_pct(r['weight_share'])} | "
            f"{_pct(r['weight_energy_share'])} | {_num(r['weight_over_median'], 0)} | {r['weight_rank']:,} | "
            f"{_pct(r['ablation_share_estimate'])} | {r['seconds']:.0f} |")
    found = [r for r in sweep if r["test_accuracy"] >= 0.99]
    lost = [r for r in sweep if r["test_accuracy"] < 0.9]

    def channel_list(picked: list[dict]) -> str:
        return ", ".join(f"{c:,}" for c in sorted({r["spec"]["channels"] for r in picked}))

    lines.append("")
    if found:
        lines.append(f"- Found (test accuracy >= 0.99) at {channel_list(found)} channels, where there are >= "
                     f"{min(r['pixels_per_channel'] for r in found):g} training pixels per channel.")
    if lost:
        lines.append(
            f"- Lost at {channel_list(lost)} channels "
            f"(<= {max(r['pixels_per_channel'] for r in lost):g} training pixels per channel): training accuracy "
            f"at least {min(r['train_accuracy'] for r in lost):.3f}, test accuracy "
            f"{min(r['test_accuracy'] for r in lost):.3f} to {max(r['test_accuracy'] for r in lost):.3f} (majority "
            f"class {lost[0]['majority_accuracy']:.3f}). The noise channels fit the training set by themselves: "
            "what limits the oracle is data per channel, the data's degrees of freedom against the parameters.")
    pairs = {}
    for r in sweep:
        pairs.setdefault(r["spec"]["channels"], {})[r["spec"]["optimizer"]] = r
    adam_vs_sgd = [(c, p["adam"]["weight_over_median"], p["sgd"]["weight_over_median"])
                   for c, p in sorted(pairs.items()) if {"adam", "sgd"} <= set(p)]
    if adam_vs_sgd:
        lines.append("- Oracle / median weight, Adam vs SGD: " + "; ".join(
            f"C {c:,}: {a:,.0f} vs {s:,.0f}" for c, a, s in adam_vs_sgd) + ". Adam steps every weight by about "
            "its learning rate whatever the gradient's size, so noise channels grow nearly as fast as the oracle "
            "and the magnitudes look alike; SGD moves each weight in proportion to its gradient.")
    enough = [r["pixels_per_channel"] for r in runs if r["test_accuracy"] >= 0.95]
    if enough:
        ppc = min(enough)
        lines.append(
            f"- In this setting {ppc:g} training pixels per channel sufficed (test accuracy >= 0.95). A 90x45 map "
            f"has 4,050 pixels: at that rate 512 channels would need {512 * ppc / 4050:.1f} such maps and 2**20 "
            f"channels {2**20 * ppc / 4050:,.0f}; real distractors are correlated and partly informative, so count "
            "this as a lower bound.")
    for r in runs:
        if r["role"] == "more_data":
            lines.append(
                f"- With {r['spec']['train_pixels']:,} pixels ({r['pixels_per_channel']:g} per channel, minibatches "
                f"of {r['spec']['batch']:,}, SGD lr {r['spec']['lr']:g}) and {r['spec']['channels']:,} channels: test "
                f"accuracy {r['test_accuracy']:.3f}; the oracle's weight is {_num(r['weight_over_median'], 0)}x the "
                f"median distractor's (rank {r['weight_rank']}) and {_pct(r['weight_energy_share'])} of the squared "
                f"weight, but {_pct(r['weight_share'])} of the summed magnitudes. {r['spec']['channels']:,} channels "
                f"is the largest C here; the FFT formulation (see `run_linear_oracle`) ran it in {r['seconds']:.0f} s "
                "on one CPU thread, where a dense pixels x channels input would need "
                f"{r['spec']['batch'] * r['spec']['channels'] * 4 / 2**30:.0f} GiB per minibatch.")
    return lines + [""]


def _surgery_section(surgery: dict) -> list[str]:
    lines = ["### Net surgery", "",
             "The head hand-set to read the oracle alone (logit = 20 x (mask - 1/2), every other weight 0), then "
             "trained with the same optimizer and steps as a normal run; beside it the same head from its random "
             "initialization:", "",
             "| head, optimizer | start | train loss | accuracy | gradient norm | after training: accuracy "
             "| weights moved (L2) | largest distractor weight |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in surgery.items():
        for start in ("surgery", "init"):
            v = r[start]
            lines.append(f"| {name} | {'hand-set' if start == 'surgery' else 'random init'} | "
                         f"{v['train_loss']:.2e} | {v['accuracy']:.3f} | {v['grad_norm']:.2e} | "
                         f"{v['trained_accuracy']:.3f} | {v['travel']:.3g} | {v['distractor_weight_max']:.3g} |")
    lines.append("")
    for name, r in surgery.items():
        s, i = r["surgery"], r["init"]
        lines.append(f"- {name}: gradient norm {s['grad_norm']:.1e} at the hand-set weights against "
                     f"{i['grad_norm']:.1e} at initialization ({i['grad_norm'] / s['grad_norm']:,.0f}x smaller); "
                     f"training from there moves the weights by {s['travel']:.3g} (from initialization: "
                     f"{i['travel']:.3g}) and ends at accuracy {s['trained_accuracy']:.3f}.")
    lines += ["", "The oracle-only solution is a near-stationary point: its gradient is orders of magnitude below the "
              "one at initialization. Adam divides each gradient by its own running size, so even near-zero "
              "gradients give steps of about its learning rate and it walks away from the hand-set weights; SGD "
              "takes steps in proportion to the gradient."]
    broken = [f"{name} (accuracy {r['surgery']['accuracy']:.3f} -> {r['surgery']['trained_accuracy']:.3f})"
              for name, r in surgery.items() if r["surgery"]["trained_accuracy"] < r["surgery"]["accuracy"] - 0.02]
    if broken:
        lines.append("Training from the hand-set weights lost the solution for " + ", ".join(broken) + ".")
    return lines + [""]


def _normalization_section(n: dict) -> list[str]:
    table = n["final_loss_table"]
    lines = ["## 2. Why subtract the mean, and does normalization matter beyond classification?", "",
             "The same per-pixel linear head on the distractor maps alone (non-negative, per-channel offsets and "
             "scales, values up to a few hundred like raw pixels), for a dense task (segment: a label per pixel) "
             "and an image-level one (classify: is the mask larger than the training median?), one learning rate "
             "per optimizer for every normalization. Final test loss (BCE; chance is 0.693), and after 20 steps:", "",
             "| task | optimizer | " + " | ".join(FEATURE_NORMS) + " | best |",
             "| --- | --- | " + " | ".join("---" for _ in FEATURE_NORMS) + " | --- |"]
    bests = {}
    for key, row in table.items():
        task, optimizer = key.split("/")
        finite = {k: v["final"] for k, v in row.items() if not v["diverged"] and math.isfinite(v["final"])}
        bests[key] = min(finite, key=finite.get) if finite else None
        lines.append(f"| {task} | {optimizer} | " + " | ".join(
            "diverged" if row[k]["diverged"] else f"{row[k]['final']:.3f} ({row[k]['early']:.3f})"
            for k in FEATURE_NORMS) + f" | {bests[key]} |")
    mean_gap = [row["scale"]["final"] - row["scale_mean"]["final"] for row in table.values()]

    def raw_vs_best(task: str) -> str:
        keys = [k for k in table if k.startswith(task + "/")]
        return "; ".join(f"{k.split('/')[1]}: raw {table[k]['raw']['final']:.3g}, "
                         f"best {table[k][bests[k]]['final']:.3f}" for k in keys if bests[k])

    lines += [
        "",
        f"- Raw inputs end above chance (worse than predicting nothing) in both tasks. Segmentation: "
        f"{raw_vs_best('segment')}. Image-level classification: {raw_vs_best('classify')}. Normalization is about "
        "optimizing the layer that reads the input; nothing in it depends on the output being a class, and the "
        "dense task needs it as much.",
        "- Subtracting the mean on the raw scale (what VGG does to pixels in [0, 255]): "
        + ", ".join(f"{k} {row['mean']['final']:.3g}" for k, row in table.items())
        + ". Once the inputs are scaled to [0, 1], also subtracting the mean changed the final loss by "
        + ", ".join(f"{g:+.3f}" for g in mean_gap)
        + " (scale minus scale_mean): here the scale of the inputs mattered far more than their mean. Equalizing "
        f"the channels' scales (standardize) was best in {list(bests.values()).count('standardize')} of "
        f"{len(bests)} settings.",
        "- Why subtract the mean at all (the argument of LeCun et al., Efficient BackProp, 1998): with "
        "all-positive inputs every weight of a unit gets a gradient of the "
        "same sign (that of the unit's error), so the weights can only move together and zig-zag towards a "
        "solution; centred inputs remove that coupling and let the bias start near its final value. It is a "
        "constant, so it changes no contrast (next table) and costs nothing at test time.",
        "",
    ]
    k = n["knife_contrast"]
    lines += ["What the agent's normalizations do to a planted 5x2 knife (74 on 85, contrast 11/255) in "
              f"{n['frames']} frames of random play (play band, 64x144; stats fitted on the same frames):", "",
              "| normalization | knife change | input spread (std) | knife / spread | vs raw |",
              "| --- | --- | --- | --- | --- |"]
    for kind in NORMALIZATIONS:
        v = k[kind]
        lines.append(f"| {kind} | {v['knife_delta']:.4g} | {v['spread']:.4g} | {_num(v['relative_contrast'])} | "
                     f"{_num(v['gain_vs_raw'], 2)}x |")
    lines += ["",
              f"- scale and channel_mean leave the knife's size against the input's spread as it was "
              f"({_num(k['scale']['gain_vs_raw'], 2)}x, {_num(k['channel_mean']['gain_vs_raw'], 2)}x): one constant "
              f"per frame. pixel_mean removes the static scene, so the spread shrinks and the knife stands out "
              f"{_num(k['pixel_mean']['gain_vs_raw'], 2)}x more. running divides each pixel by its own std, tiny on "
              f"the flat floor where knives fly: {_num(k['running']['gain_vs_raw'], 2)}x, the knife moves the input "
              f"by {k['running']['knife_delta']:.2f} (the clip is 3). The same gain applies to any noise on those "
              "pixels, and a statistic that drifts during training moves the encoder's input under it. "
              "row_contrast (the default) fits nothing: each row minus its own background, in units of 4 gray "
              f"levels, so the knife moves the input by {k['row_contrast']['knife_delta']:.2f} wherever it flies "
              f"({_num(k['row_contrast']['gain_vs_raw'], 2)}x).",
              "- For the agent: `model.normalization` selects one of these, the statistics are buffers saved in the "
              "checkpoint and frozen in evaluation and video. By this measure pixel_mean, running and row_contrast "
              "make the knife a larger part of what the first conv sees; scale and channel_mean do not change it.",
              ""]
    return lines


def _agent_section(agents: dict) -> list[str]:
    lines = ["## The agent's channels", "",
             "Weight magnitude per input channel of each layer that reads a multi-channel map (plot: "
             "`agent_weights.png`). Frame-stack ablation: each stacked frame of the normalized input replaced by its "
             "mean, the increase of the decoder's MSE and the policy's KL divergence from its unablated self.", ""]
    for name, a in agents.items():
        lines += [f"{name} ({a['frames']} frames of random play):", "",
                  "| layer | type | channels | max / median magnitude | coefficient of variation |",
                  "| --- | --- | --- | --- | --- |"]
        for layer in a["layers"]:
            lines.append(f"| {layer['layer']} | {layer['type']} | {layer['channels']} | "
                         f"{layer['max_over_median']:.2f} | {layer['coefficient_of_variation']:.3f} |")
        ab = a["frame_ablation"]
        recon = ", ".join(f"{c} {v:.2e}" for c, v in zip(ab["channels"], ab["recon_mse_mean"], strict=True))
        kl = ", ".join(f"{c} {v:.2e}" for c, v in zip(ab["channels"], ab["policy_kl_mean"], strict=True))
        first = a["layers"][0]
        per_frame = ", ".join(f"{c} {m:.3f}" for c, m in zip(ab["channels"], first["magnitudes"], strict=False))
        lines += ["", f"First conv over the frame stack ({first['layer']}), weight magnitude per frame: {per_frame}. "
                  f"Frame ablation: recon MSE increase {recon}; policy KL {kl}.", ""]
    fresh = agents.get("fresh agent")
    if fresh is not None:
        ratios = [layer["max_over_median"] for layer in fresh["layers"]]
        lines += [f"The fresh agent shows what the orthogonal initialization alone gives: max / median "
                  f"{min(ratios):.2f} to {max(ratios):.2f} (the spread is largest in the output layers, which have "
                  "fewer outputs than inputs), and ablation changes at the level of float rounding. Differences "
                  "beyond these are learned.", ""]
    return lines


def summarize(report: dict) -> str:
    settings = report["settings"]
    quick = ", QUICK mode: tiny sizes, the numbers only show that the code runs" if settings["quick"] else ""
    lines = ["# Channel diagnostics", "",
             f"Written by `scripts/diagnose_channels.py` (seed {settings['seed']}{quick}; {settings['seconds']:.0f} s "
             f"on {settings['threads']} CPU thread(s)). Every number is read from `report.json`; plots are beside it.",
             ""]
    lines += _oracle_section(report["oracle"])
    lines += _large_c_section(report["large_c"])
    lines += _surgery_section(report["surgery"])
    lines += _normalization_section(report["normalization"])
    lines += _agent_section(report["agent"])
    lines += ["## Capacity", "", report["capacity"]["note"] + ".", "", "```", report["capacity"]["table"], "```",
              "", "Oracle heads, training labels per parameter: " + ", ".join(
                  f"{head} {v['labels_per_param']:.3g} ({v['params']:,} parameters)"
                  for head, v in report["capacity"]["oracle_heads"].items()), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------


def run_report(args: Any, out: Path) -> dict:
    """Runs every experiment with `args` (out, checkpoint, seed, quick, threads, no_progress), writes
    out/report.json, out/summary.md and the plots; returns the report. A bad checkpoint is a
    CheckpointError."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # the fresh agent's initialization
    started = time.time()
    sizes = QUICK if args.quick else FULL
    agents: dict[str, tuple[Agent, EnvConfig]] = {
        "fresh agent": (Agent((4, 64, 144), NUM_ACTIONS, ModelConfig()), EnvConfig())
    }
    if args.checkpoint is not None:
        from agent.runs.checkpoint import load_agent

        trained, config = load_agent(args.checkpoint, "cpu")
        agents["trained agent"] = (trained, config.env)

    base = replace(sizes["oracle"], seed=args.seed)
    variants = oracle_variants(base)
    linear_runs = [("sweep", replace(sizes["linear"], channels=c, optimizer=opt, lr=lr, seed=args.seed))
                   for c in sizes["linear_channels"] for opt, lr in LINEAR_OPTIMIZERS.items()]
    linear_runs.append(("more_data", replace(sizes["linear_big"], seed=args.seed)))
    surgery_specs = {"pixel, adam": base, "pixel, sgd": variants["sgd"], "conv3x3, adam": variants["conv3x3"]}
    norm_base = NormSpec(steps=sizes["norm_steps"], data=replace(base, oracle="none", feature_scale=100.0),
                         seed=args.seed)
    norm_specs = [replace(norm_base, task=task, normalization=kind, optimizer=opt, lr=lr)
                  for task in ("segment", "classify") for opt, lr in NORM_OPTIMIZERS.items() for kind in FEATURE_NORMS]

    report: dict[str, Any] = {"agent": {}, "oracle": {}, "large_c": [], "surgery": {}, "normalization": {}}
    jobs = len(agents) + 1 + len(variants) + len(linear_runs) + len(surgery_specs) + len(norm_specs)
    bar = tqdm(total=jobs, desc="diagnostics", unit="run", disable=args.no_progress, dynamic_ncols=True)

    def step(label: str) -> None:
        bar.set_postfix_str(label)

    frames_cache: dict[str, np.ndarray] = {}

    def frames_for(env_cfg: EnvConfig) -> np.ndarray:
        key = repr(env_cfg)
        if key not in frames_cache:
            frames_cache[key] = collect_frames(env_cfg, sizes["frames"], args.seed)
        return frames_cache[key]

    for name, (model, env_cfg) in agents.items():
        step(name)
        report["agent"][name] = agent_channels(model, frames_for(env_cfg))
        bar.update()
    step("knife contrast")
    play = frames_for(EnvConfig())
    report["normalization"]["knife_contrast"] = knife_contrast(play)
    report["normalization"]["frames"] = len(play)
    bar.update()
    for name, spec in variants.items():
        step(f"oracle {name}")
        result = run_oracle(spec)
        result.pop("train_losses")
        if name not in PLOTTED:
            result.pop("magnitudes")
            result.pop("importance")
        report["oracle"][name] = result
        bar.update()
    for role, spec in linear_runs:
        step(f"C={spec.channels} {spec.optimizer}")
        began = time.time()
        result = run_linear_oracle(spec)
        report["large_c"].append({"role": role, **result, "seconds": time.time() - began})
        bar.update()
    for name, spec in surgery_specs.items():
        step(f"surgery {name}")
        report["surgery"][name] = net_surgery(spec)
        bar.update()
    norm_data = oracle_data(norm_base.data)
    runs = []
    for spec in norm_specs:
        step(f"{spec.task} {spec.optimizer} {spec.normalization}")
        runs.append(run_normalization(spec, norm_data))
        bar.update()
    bar.close()
    report["normalization"]["training"] = runs
    table: dict[str, dict] = {}
    for r in runs:
        key = f"{r['spec']['task']}/{r['spec']['optimizer']}"
        curve = r["curve"]
        early = curve["test_loss"][1] if len(curve["test_loss"]) > 1 else curve["test_loss"][0]
        table.setdefault(key, {})[r["spec"]["normalization"]] = {
            "final": r["final_test_loss"], "early": early, "diverged": r["diverged"],
            "final_accuracy": r["final_accuracy"]}
    report["normalization"]["final_loss_table"] = table

    cfg = Config()
    fresh = agents["fresh agent"][0]
    samples = cfg.train.total_frames // cfg.env.frameskip
    capacity = capacity_report(fresh, samples, math.prod(cfg.env.obs_shape), agent_outputs(fresh))
    capacity["table"] = format_capacity(capacity)
    capacity["note"] = (f"samples = agent steps of the default config ({cfg.train.total_frames:,} frames / "
                        f"frameskip {cfg.env.frameskip}); outputs = {NUM_ACTIONS} logits + 1 value + the newest "
                        "frame's pixels + the locator's cells")
    capacity["oracle_heads"] = {
        r["spec"]["head"]: {"params": r["params"], "training_labels": r["spec"]["train"] * r["spec"]["size"] ** 2,
                            "labels_per_param": r["spec"]["train"] * r["spec"]["size"] ** 2 / r["params"]}
        for r in report["oracle"].values()}
    report["capacity"] = capacity
    report["settings"] = {"seed": args.seed, "quick": args.quick, "threads": args.threads,
                          "checkpoint": str(args.checkpoint) if args.checkpoint else None,
                          "torch": torch.__version__, "seconds": time.time() - started,
                          "oracle_base": asdict(base)}

    plot_agent(report["agent"], out / "agent_weights.png")
    plot_oracle_channels(report["oracle"], out / "oracle_channels.png")
    plot_oracle_variants(report["oracle"], out / "oracle_variants.png")
    plot_large_c(report["large_c"], out / "large_c.png")
    plot_normalization(runs, report["normalization"]["knife_contrast"], out / "normalization.png")
    report["settings"]["seconds"] = time.time() - started
    write_json_atomic(report, out / "report.json")
    (out / "summary.md").write_text(summarize(report))
    return report
