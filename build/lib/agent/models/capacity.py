"""How many free parameters a model has, layer by layer, against how much the data can pin down.

The ratio reported is the data's degrees of freedom, samples x (inputs + outputs) numbers, over the
model's trainable parameters. Far above 1 the data over-determines the parameters; near or below 1 the
model can fit the data by memorising it, whatever the data mean. It is a crude bound (pixels of one frame
are far from independent), which is why the samples-per-parameter ratio is reported beside it.
"""

from __future__ import annotations

from torch import nn


def capacity_report(model: nn.Module, samples: int, inputs_per_sample: int, outputs_per_sample: int) -> dict:
    """Parameters per layer of `model` and the data-to-parameter ratios.

    Args:
        model: any module; a "layer" is a module that holds parameters of its own.
        samples: training samples the model will see (for the agent: agent steps of the run).
        inputs_per_sample: numbers in one input (for the agent: stack x height x width pixels).
        outputs_per_sample: numbers the losses constrain per sample (for the agent: `agent_outputs`).

    Returns:
        A JSON-ready dict: `layers` (name, type, shapes, params, trainable), `modules` (trainable params
        per top-level child), `total_params`, `trainable_params`, `buffer_elements` (statistics such as
        a normalizer's, not learned by gradient), the three data figures, `data_dof`, `dof_per_param`
        and `samples_per_param` (None when nothing is trainable).
    """
    for name, value in (("samples", samples), ("inputs_per_sample", inputs_per_sample),
                        ("outputs_per_sample", outputs_per_sample)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    layers = []
    for name, module in model.named_modules():
        params = list(module.parameters(recurse=False))
        if not params:
            continue
        layers.append({
            "name": name or type(model).__name__,
            "type": type(module).__name__,
            "shapes": [list(p.shape) for p in params],
            "params": sum(p.numel() for p in params),
            "trainable": sum(p.numel() for p in params if p.requires_grad),
        })
    modules: dict[str, int] = {}
    for child_name, child in model.named_children():
        count = sum(p.numel() for p in child.parameters() if p.requires_grad)
        if count:
            modules[child_name] = count
    trainable = sum(layer["trainable"] for layer in layers)
    dof = samples * (inputs_per_sample + outputs_per_sample)
    return {
        "layers": layers,
        "modules": modules,
        "total_params": sum(layer["params"] for layer in layers),
        "trainable_params": trainable,
        "buffer_elements": sum(b.numel() for b in model.buffers()),
        "samples": samples,
        "inputs_per_sample": inputs_per_sample,
        "outputs_per_sample": outputs_per_sample,
        "data_dof": dof,
        "dof_per_param": dof / trainable if trainable else None,
        "samples_per_param": samples / trainable if trainable else None,
    }


def agent_outputs(agent: nn.Module) -> int:
    """Numbers the agent's losses constrain per sample: the action logits, the value, the reconstructed
    frame's pixels and the locator's cells."""
    frame = agent.obs_shape[1] * agent.obs_shape[2]
    return agent.num_actions + 1 + frame + agent.locator.linear.out_features


def format_capacity(report: dict) -> str:
    """A printable table of `capacity_report`'s result, one row per layer, then the totals and ratios."""
    rows = [("layer", "type", "shape", "params", "share")]
    trainable = report["trainable_params"]
    for layer in report["layers"]:
        shape = " + ".join("x".join(str(d) for d in s) or "scalar" for s in layer["shapes"])
        share = f"{100 * layer['trainable'] / trainable:.1f}%" if trainable else "-"
        rows.append((layer["name"], layer["type"], shape, f"{layer['params']:,}", share))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for idx, row in enumerate(rows):
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in pairs]
        lines.append("  ".join(cells).rstrip())
        if idx == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    if report["modules"]:
        lines.append("by module: " + ", ".join(f"{k} {v:,}" for k, v in report["modules"].items()))
    lines.append(f"parameters: {report['total_params']:,} ({trainable:,} trainable); "
                 f"buffer elements (not learned by gradient): {report['buffer_elements']:,}")
    lines.append(f"data: {report['samples']:,} samples x ({report['inputs_per_sample']:,} inputs + "
                 f"{report['outputs_per_sample']:,} outputs) = {report['data_dof']:,} degrees of freedom")
    if report["dof_per_param"] is None:
        lines.append("ratio: no trainable parameters")
    else:
        lines.append(f"ratio: {report['dof_per_param']:,.1f} data degrees of freedom per free parameter, "
                     f"{report['samples_per_param']:,.3f} samples per free parameter")
    return "\n".join(lines)
