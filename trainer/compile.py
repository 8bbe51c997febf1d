"""XLA compiler options for the train step, from `train.compiler_options`.

'auto' (or '') gives XLA's own defaults, 'fast_compile' this backend's faster-compiling
settings, or 'name=value,name=value' explicit XLA debug options (values true/false, integers,
floats or strings), passed to `jax.jit`.

'fast_compile' on CPU: the legacy (non-MLIR) fusion emitters. Measured on the 2-core
development VM (benchmarks/README.md): the full-depth large MERLOT Reserve step with scanned
layers compiles in ~25% less time (11.4-12.2 s vs 14.5-15.3 s under the same load), but steps
run slower: the MERLOT Reserve bench step 8.6 vs 7.9 s, the tiny step ~15% more CPU time, the
AdamW update of the HERO bench tree 0.29 vs 0.085 CPU-s. MERLOT Reserve configs select it
with `scan_layers` (the setting for when compile time matters). TPU and GPU: XLA's defaults.
"""
from __future__ import annotations

PRESETS = {'auto': {}, 'fast_compile': {'cpu': {'xla_cpu_use_fusion_emitters': False}}}


def compiler_options(spec: str, backend: str) -> dict:
    if spec in PRESETS:
        return dict(PRESETS[spec].get(backend, {}))
    options = {}
    for item in filter(None, (part.strip() for part in spec.split(','))):
        name, sep, value = item.partition('=')
        if not sep or not name.strip():
            raise ValueError(f'train.compiler_options: {item!r} is not name=value '
                             f'(in {spec!r})')
        options[name.strip()] = _value(value.strip())
    return options


def _value(text: str):
    if text.lower() in ('true', 'false'):
        return text.lower() == 'true'
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text
