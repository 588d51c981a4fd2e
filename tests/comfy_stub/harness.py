"""Test helpers playing ComfyUI's part around a pack (loading, schema, execution).

- `install()` puts the stand-in modules on sys.path (only tests call it);
- `load_pack(dir)` imports a pack like `nodes.py: load_custom_node` (module key = its path,
  V1 mapping wins over comfy_entrypoint, V3 schemas validated and finalized);
- `object_info(registry)` is what `/object_info` would show;
- `validate_node_inputs` / `run_node` / `execute_prompt` follow `execution.py` for what a pack
  sees (required inputs, widget coercion, min/max and combo checks unless the node's
  validate_inputs takes that input, link types, hidden inputs, locked class clone);
- `ui_to_api(workflow, info)` converts a saved UI workflow to an API prompt (widgets_values
  positional over the widgets, control_after_generate and upload values skipped);
- `apply_extra_model_paths(config)` applies an extra_model_paths.yaml mapping like ComfyUI does
  before packs load.
"""
from __future__ import annotations

import asyncio
import importlib.util
import inspect
import os
import sys

STUB_DIR = os.path.dirname(os.path.abspath(__file__))
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


def install() -> None:
    if STUB_DIR not in sys.path:
        sys.path.insert(0, STUB_DIR)


def _run(x):
    return asyncio.run(x) if inspect.isawaitable(x) else x


def load_pack(pack_dir: str) -> tuple:
    """(module, {node_id: class}) — imports `pack_dir/__init__.py` as ComfyUI does."""
    install()
    pack_dir = os.path.abspath(pack_dir)
    name = pack_dir.replace(".", "_x_")
    spec = importlib.util.spec_from_file_location(name, os.path.join(pack_dir, "__init__.py"),
                                                  submodule_search_locations=[pack_dir])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    registry = {}
    rel = "custom_nodes." + os.path.basename(pack_dir)
    if getattr(module, "NODE_CLASS_MAPPINGS", None):
        registry.update(module.NODE_CLASS_MAPPINGS)
    elif getattr(module, "comfy_entrypoint", None) is not None:
        ext = _run(module.comfy_entrypoint())
        _run(ext.on_load())
        for cls in _run(ext.get_node_list()):
            schema = cls.GET_SCHEMA()
            cls.RELATIVE_PYTHON_MODULE = rel
            registry[schema.node_id] = cls
    else:
        raise ImportError(f"Skip {pack_dir}: lack of NODE_CLASS_MAPPINGS or comfy_entrypoint")
    return module, registry


def apply_extra_model_paths(config: dict, yaml_dir: str = "") -> None:
    """Apply a parsed extra_model_paths.yaml (utils/extra_config.py semantics)."""
    import folder_paths

    for _, conf in config.items():
        conf = dict(conf)
        base = conf.pop("base_path", None)
        if base:
            base = os.path.join(yaml_dir, os.path.expandvars(os.path.expanduser(base)))
        is_default = bool(conf.pop("is_default", False))
        for folder_name, value in conf.items():
            for p in str(value).split("\n"):
                if not p:
                    continue
                full = os.path.join(base, p) if base else p
                folder_paths.add_model_folder_path(folder_name, os.path.normpath(full), is_default)


def object_info(registry: dict) -> dict:
    return {nid: cls.GET_SCHEMA().get_v1_info(cls) for nid, cls in registry.items()}


def _input_spec(info: dict, name: str):
    for group in ("required", "optional"):
        if name in info["input"].get(group, {}):
            return info["input"][group][name], group
    return None, None


def widget_names(info: dict) -> list[tuple[str, str, dict]]:
    """(name, type, options) of the widget inputs in UI order (required then optional)."""
    out = []
    for group in ("required", "optional"):
        for name, spec in info["input"].get(group, {}).items():
            t, opts = spec[0], (spec[1] if len(spec) > 1 else {})
            if isinstance(t, list):
                t, opts = "COMBO", {**opts, "options": t}
            if t in WIDGET_TYPES and not opts.get("forceInput"):
                out.append((name, t, opts))
    return out


def check_widget_value(node_id: str, name: str, t: str, opts: dict, value, skip=()):
    """Coerce and check one widget value like execution.py: returns the value or raises ValueError."""
    if t == "INT":
        value = int(value)
    elif t == "FLOAT":
        value = float(value)
    elif t == "STRING":
        value = str(value)
    elif t == "BOOLEAN":
        if not isinstance(value, bool):
            raise ValueError(f"{node_id}.{name}: expected a boolean, got {value!r}")
    if name in skip:
        return value
    if t in ("INT", "FLOAT"):
        if opts.get("min") is not None and value < opts["min"]:
            raise ValueError(f"{node_id}.{name}: Value {value} smaller than min of {opts['min']}")
        if opts.get("max") is not None and value > opts["max"]:
            raise ValueError(f"{node_id}.{name}: Value {value} bigger than max of {opts['max']}")
    if t == "COMBO" and value not in opts.get("options", []):
        raise ValueError(f"{node_id}.{name}: Value not in list: {value!r} not in {opts.get('options')}")
    return value


def _validate_skip(cls) -> set:
    fn = getattr(cls, "validate_inputs", None)
    if fn is None:
        return set()
    return set(inspect.signature(fn).parameters) - {"cls", "kwargs", "input_types"}


def validate_node_inputs(cls, inputs: dict, linked_types: dict | None = None) -> dict:
    """Check and coerce the inputs of one node; `linked_types` maps linked input → source type."""
    schema = cls.GET_SCHEMA()
    info = schema.get_v1_info(cls)
    linked_types = linked_types or {}
    skip = _validate_skip(cls)
    out = {}
    for i in schema.inputs:
        name = i.id
        if name not in inputs:
            if not i.optional:
                raise ValueError(f"{schema.node_id}: Required input is missing: {name}")
            continue
        spec, _ = _input_spec(info, name)
        t = spec[0]
        opts = spec[1] if len(spec) > 1 else {}
        if name in linked_types:
            src = linked_types[name]
            if not (src == t or "*" in (src, t) or (t == "COMBO" and src in ("COMBO", "STRING"))):
                raise ValueError(f"{schema.node_id}.{name}: Return type mismatch between linked nodes: "
                                 f"{name}, received_type({src}) mismatch input_type({t})")
            out[name] = inputs[name]
        elif t in WIDGET_TYPES:
            out[name] = check_widget_value(schema.node_id, name, t, opts, inputs[name], skip)
        else:
            raise ValueError(f"{schema.node_id}.{name}: socket input of type {t} needs a link")
    if skip:
        args = {k: v for k, v in out.items() if k in skip}
        res = cls.validate_inputs(**args)
        if res is not True:
            raise ValueError(f"{schema.node_id}: {res}")
    return out


def run_node(cls, inputs: dict, unique_id: str = "1", prompt=None, linked: tuple = ()):
    """Validate widget inputs (linked ones are taken as they are) and execute like ComfyUI."""
    from comfy_api.latest import io

    schema = cls.GET_SCHEMA()
    linked_types = {}
    for name in linked:
        spec, _ = _input_spec(schema.get_v1_info(cls), name)
        linked_types[name] = spec[0]
    values = validate_node_inputs(cls, inputs, linked_types)
    hidden = {io.Hidden.unique_id: unique_id, io.Hidden.prompt: prompt, io.Hidden.extra_pnginfo: None}
    clone = cls.PREPARE_CLASS_CLONE(hidden)
    result = _run(clone.execute(**values))
    if not isinstance(result, io.NodeOutput):
        raise TypeError(f"{schema.node_id}.execute must return io.NodeOutput, got {type(result).__name__}")
    n_out = len(schema.outputs)
    if result.args and len(result.args) != n_out:
        raise ValueError(f"{schema.node_id}: returned {len(result.args)} values for {n_out} outputs")
    if not result.args and n_out and not schema.is_output_node:
        raise ValueError(f"{schema.node_id}: returned no values")
    return result


def execute_prompt(prompt: dict, registry: dict) -> dict:
    """Run an API prompt: every output node and what it needs, each node once.
    Returns {node id: NodeOutput}."""
    results: dict = {}
    info = object_info(registry)

    def run(nid: str, stack=()):
        if nid in results:
            return results[nid]
        if nid in stack:
            raise ValueError(f"cycle at node {nid}")
        node = prompt[nid]
        cls = registry[node["class_type"]]
        values, linked = {}, []
        for name, v in node["inputs"].items():
            if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str):
                src = run(v[0], stack + (nid,))
                values[name] = src.args[v[1]]
                src_type = info[prompt[v[0]]["class_type"]]["output"][v[1]]
                spec, _ = _input_spec(info[node["class_type"]], name)
                if spec is None:
                    raise ValueError(f"{node['class_type']} has no input {name}")
                if not (src_type == spec[0] or "*" in (src_type, spec[0])):
                    raise ValueError(f"{node['class_type']}.{name}: link type {src_type} != {spec[0]}")
                linked.append(name)
            else:
                values[name] = v
        results[nid] = run_node(cls, values, unique_id=nid, prompt=prompt, linked=tuple(linked))
        return results[nid]

    outputs = [nid for nid, n in prompt.items() if info[n["class_type"]]["output_node"]]
    if not outputs:
        raise ValueError("Prompt has no outputs")
    for nid in outputs:
        run(nid)
    return results


def ui_to_api(workflow: dict, info: dict) -> dict:
    """UI-format workflow → API prompt (what the frontend's graphToPrompt produces)."""
    links = {l[0]: l for l in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) in (2, 4):
            continue
        ni = info[node["type"]]
        inputs = {}
        values = list(node.get("widgets_values") or [])
        pos = 0
        for name, t, opts in widget_names(ni):
            if pos < len(values):
                inputs[name] = values[pos]
            elif "default" in opts:
                inputs[name] = opts["default"]
            pos += 1
            if t == "INT" and (opts.get("control_after_generate") or name in ("seed", "noise_seed")):
                pos += 1
            if t == "COMBO" and any(opts.get(k) for k in ("image_upload", "video_upload", "audio_upload")):
                pos += 1
        for inp in node.get("inputs", []):
            if inp.get("link") is not None:
                link = links[inp["link"]]
                inputs[inp["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
