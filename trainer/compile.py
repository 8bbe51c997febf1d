"""XLA compiler options for the train step, from `train.compiler_options`.

'auto' gives this backend's defaults, '' none, or 'name=value,name=value' explicit XLA debug
options (values true/false, integers, floats or strings), passed to `jax.jit`.

CPU default: the legacy (non-MLIR) fusion emitters. Measured on the 2-core development VM,
idle: the full-depth large MERLOT Reserve step with scanned layers compiles in 10.6 s instead
of 15.3 s, with the same step time (benchmarks/README.md). TPU and GPU: XLA's own defaults.
"""
from __future__ import annotations

AUTO = {'cpu': {'xla_cpu_use_fusion_emitters': False}}


def compiler_options(spec: str, backend: str) -> dict:
    if spec == 'auto':
        return dict(AUTO.get(backend, {}))
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
