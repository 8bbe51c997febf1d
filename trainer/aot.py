"""Ahead-of-time compile check for a TPU topology, on a machine without TPUs.

    python -m trainer.aot --config configs/mreserve/pretrain.py:variant=large \
        --topology v5e:16x16 [--config.train.global_batch=1024 --config.mesh.fsdp=16 ...]

libtpu (the `tpu` extra) lets jax compile the real train step for any topology name that
`jax.experimental.topologies.get_topology_desc` accepts. The report gives, per device: the
parameter, optimizer-state and activation/temporary memory against the chip's HBM, whether it
fits, the FLOPs per step from XLA's cost analysis, a roofline step-time estimate and the model
FLOPs utilisation it implies. Mesh and batch come from the config.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys

os.environ.setdefault('TPU_SKIP_MDS_QUERY', '1')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Chip:
    """Public per-chip figures (HBM bytes, peak bf16 FLOP/s, HBM bytes/s)."""
    hbm_bytes: float
    peak_flops: float
    hbm_bandwidth: float


CHIPS = {
    'v2': Chip(16 * GIB, 45e12, 700e9),
    'v3': Chip(32 * GIB, 123e12, 900e9),
    'v4': Chip(32 * GIB, 275e12, 1200e9),
    'v5e': Chip(16 * GIB, 197e12, 819e9),
    'v5 lite': Chip(16 * GIB, 197e12, 819e9),
    'v5p': Chip(95 * GIB, 459e12, 2765e9),
    'v6e': Chip(32 * GIB, 918e12, 1640e9),
    'v6 lite': Chip(32 * GIB, 918e12, 1640e9),
}


def chip_for(topology_name: str, device_kind: str) -> Chip:
    generation = topology_name.split(':')[0].lower()
    if generation in CHIPS:
        return CHIPS[generation]
    kind = device_kind.lower().replace('tpu ', '')
    for key, chip in CHIPS.items():
        if kind.startswith(key):
            return chip
    raise ValueError(f'no chip figures for topology {topology_name!r} ({device_kind})')


# Chips with two TensorCores that TPU VMs expose as one device ("megacore"): compile for that
# layout, as a real slice runs (libtpu's default description has one device per core).
MEGACORE = ('v4', 'v5p')


def topology_kwargs(topology_name: str) -> dict:
    generation = topology_name.split(':')[0].lower()
    return {'chip_config_name': 'megacore'} if generation in MEGACORE else {}


def chips_in(topology_name: str) -> int:
    dims = topology_name.split(':')[1]
    return math.prod(int(x) for x in dims.split('x'))


def per_device_bytes(abstract_tree) -> int:
    """Bytes one device holds of a sharded pytree of ShapeDtypeStructs."""
    total = 0
    for leaf in __import__('jax').tree.leaves(abstract_tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        total += math.prod(shape) * leaf.dtype.itemsize
    return total


def compile_for_topology(config, topology_name: str, task=None) -> dict:
    import jax
    from jax.experimental import topologies

    from trainer import mesh as mesh_lib
    from trainer.compile import compiler_options
    from trainer.config import validate_engine_config
    from trainer.loop import batch_shardings, build_task_from_config
    from trainer.optim import make_optimizer
    from trainer.state import state_shardings
    from trainer.step import make_train_step

    topology = topologies.get_topology_desc(platform='tpu', topology_name=topology_name,
                                            **topology_kwargs(topology_name))
    devices = topology.devices
    rules = mesh_lib.rules_from_config(config.mesh.rules)
    mesh = mesh_lib.build_mesh(config.mesh, devices)
    task = task or build_task_from_config(config)
    validate_engine_config(config, mesh, rules, task)
    optimizer, schedule = make_optimizer(config.optim, config.train.steps)
    abstract, shardings = state_shardings(task, optimizer, mesh, rules)
    bshard = batch_shardings(task, mesh, rules)
    abstract_batch = {k: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=bshard[k])
                      for k, s in task.batch_spec.items()}
    replicated = mesh_lib.replicated(mesh)
    rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=replicated)
    step = make_train_step(task, optimizer, config.train.micro_batches,
                           config.train.nonfinite == 'skip', schedule, config.train.accumulate,
                           rules)
    jitted = jax.jit(step, in_shardings=(shardings, bshard, replicated),
                     out_shardings=(shardings, replicated), donate_argnums=0,
                     compiler_options=compiler_options(config.train.compiler_options,
                                                       devices[0].platform))
    import time
    start = time.perf_counter()
    params_b = per_device_bytes(abstract.params)
    opt_b = per_device_bytes(abstract.opt_state)
    base = {'topology': topology_name, 'device_kind': devices[0].device_kind,
            'devices': len(devices), 'mesh': dict(mesh.shape),
            'global_batch': int(config.train.global_batch),
            'params_bytes_per_device': params_b, 'optimizer_bytes_per_device': opt_b}
    try:
        with jax.set_mesh(mesh):
            compiled = jitted.lower(abstract, abstract_batch, rng).compile()
    except jax.errors.JaxRuntimeError as error:
        if 'RESOURCE_EXHAUSTED' not in str(error):
            raise
        return dict(base, **out_of_memory_report(str(error), params_b, opt_b),
                    compile_time_s=time.perf_counter() - start)
    compile_s = time.perf_counter() - start

    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else (cost or {})
    chip = chip_for(topology_name, devices[0].device_kind)
    devices_per_chip = max(len(devices) // chips_in(topology_name), 1)
    hbm = chip.hbm_bytes / devices_per_chip
    peak = chip.peak_flops / devices_per_chip
    bandwidth = chip.hbm_bandwidth / devices_per_chip

    temp_b = int(memory.temp_size_in_bytes)
    args_b = int(memory.argument_size_in_bytes)
    out_b = int(memory.output_size_in_bytes)
    alias_b = int(memory.alias_size_in_bytes)
    code_b = int(memory.generated_code_size_in_bytes)
    total_b = args_b + out_b - alias_b + temp_b + code_b
    flops = float(cost.get('flops', 0.0))
    bytes_accessed = float(cost.get('bytes accessed', 0.0))
    model_flops = (task.flops_per_example * config.train.global_batch / len(devices)
                   if task.flops_per_example else flops)
    # XLA's cost analysis counts a `while` body once, so with scanned layers it reports a
    # fraction of the step's FLOPs (and bytes); the roofline then uses the task's analytic
    # count, which leaves out remat's recomputation (a lower bound on the step time).
    step_flops = max(flops, model_flops)
    step_s = max(step_flops / peak, bytes_accessed / bandwidth) if step_flops else None
    return dict(base, **{
        'hbm_bytes_per_device': hbm,
        'batch_bytes_per_device': per_device_bytes(abstract_batch),
        'temporaries_bytes_per_device': temp_b,
        'total_bytes_per_device': total_b,
        'fits': total_b <= hbm,
        'xla_flops_per_device_step': flops,
        'model_flops_per_device_step': model_flops,
        'bytes_accessed_per_device_step': bytes_accessed,
        'roofline_flops_source': 'xla' if flops >= model_flops else 'analytic',
        'roofline_step_time_s': step_s,
        'roofline_mfu': (model_flops / step_s / peak) if step_s else None,
        'peak_flops_per_device': peak,
        'compile_time_s': compile_s,
    })


def out_of_memory_report(message: str, params_b: int, opt_b: int) -> dict:
    """XLA refuses to compile a step that cannot fit; report which term is too large."""
    import re
    found = re.search(r'HLO temporaries \(([\d.]+)G\) exceeds available HBM \(([\d.]+)G\)',
                      message)
    temp_b = float(found.group(1)) * GIB if found else None
    hbm = float(found.group(2)) * GIB if found else None
    advice = ('activations/temporaries are too large: set model.remat (e.g. full), use '
              'micro-batches (train.micro_batches) or a larger fsdp/model axis'
              if temp_b and temp_b > params_b + opt_b else
              'parameters and optimizer state are too large: shard them over a larger '
              'fsdp/model axis or use bf16 moments (optim.mu_dtype=bfloat16)')
    return {'fits': False, 'hbm_bytes_per_device': hbm, 'temporaries_bytes_per_device': temp_b,
            'total_bytes_per_device': None, 'xla_flops_per_device_step': None,
            'roofline_step_time_s': None, 'roofline_mfu': None,
            'error': message.strip().splitlines()[0][:300], 'advice': advice}


def table(result: dict) -> str:
    gib = lambda b: f'{b / GIB:8.2f} GiB' if b is not None else '       ? GiB'
    if not result['fits'] and result.get('error'):
        return '\n'.join([
            f"{result['topology']}: does NOT fit (mesh {result['mesh']}, global batch "
            f"{result['global_batch']})",
            f"  parameters               {gib(result['params_bytes_per_device'])}",
            f"  optimizer state          {gib(result['optimizer_bytes_per_device'])}",
            f"  temporaries              {gib(result['temporaries_bytes_per_device'])}",
            f"  HBM per device           {gib(result['hbm_bytes_per_device'])}",
            f"  advice: {result['advice']}"])
    rows = [
        ('parameters', gib(result['params_bytes_per_device'])),
        ('optimizer state', gib(result['optimizer_bytes_per_device'])),
        ('activations/temporaries', gib(result['temporaries_bytes_per_device'])),
        ('total', gib(result['total_bytes_per_device'])),
        ('HBM per device', gib(result['hbm_bytes_per_device'])),
        ('fits', 'yes' if result['fits'] else 'NO'),
        ('XLA FLOPs per step', f"{result['xla_flops_per_device_step']:.3e}"),
        ('model FLOPs per step', f"{result['model_flops_per_device_step']:.3e}"),
        ('roofline step time', f"{result['roofline_step_time_s'] or float('nan'):.4f} s "
                               f"({result['roofline_flops_source']} FLOPs)"),
        ('roofline MFU', f"{(result['roofline_mfu'] or float('nan')) * 100:.1f} %"),
    ]
    head = (f"{result['topology']} ({result['devices']} x {result['device_kind']}), "
            f"mesh {result['mesh']}, global batch {result['global_batch']}")
    return '\n'.join([head] + [f'  {name:<25} {value}' for name, value in rows])


def main():
    from absl import flags

    from trainer import cli
    cli.define_flags()
    flags.DEFINE_string('topology', 'v5e:2x2', 'TPU topology name, e.g. v5e:16x16, v4:8x8x8')
    config = cli.parse(sys.argv)
    from trainer.errors import ConfigError
    try:
        result = compile_for_topology(config, flags.FLAGS.topology)
    except ConfigError as error:
        cli.config_error(str(error))
    print(table(result))
    print(json.dumps(result, sort_keys=True))


if __name__ == '__main__':
    main()
