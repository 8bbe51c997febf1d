"""Export a training checkpoint to params only (bf16), then start a new run from the export."""
import json

import jax
import numpy as np
from engine_utils import lm_config, restore_params, run_module

from trainer import params_io
from trainer.examples.lm import build_task
from trainer.loop import train
from trainer.state import param_shardings


def test_export_bf16_and_init_from(tmp_path):
    config = lm_config(steps=10)
    train(config, str(tmp_path / 'run'), build_task(config))
    run_module('trainer.export', ['--workdir', str(tmp_path / 'run'), '--out',
                                  str(tmp_path / 'export'), '--dtype', 'bfloat16'])
    exported = json.loads((tmp_path / 'export' / 'config.json').read_text())
    assert exported['exported_from']['step'] == 10
    raw = params_io.load_params(str(tmp_path / 'export'))
    assert {str(x.dtype) for x in jax.tree.leaves(raw)} == {'bfloat16'}
    assert not (tmp_path / 'export' / 'params' / 'opt_state').exists()

    from trainer import mesh as mesh_lib
    task = build_task(config)
    mesh = mesh_lib.build_mesh(config.mesh)
    abstract, _ = param_shardings(task, mesh, mesh_lib.rules_from_config(config.mesh.rules))
    loaded = params_io.load_params(str(tmp_path / 'export'), abstract)
    trained = restore_params(tmp_path / 'run', 10)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(trained)):
        assert a.dtype == np.float32
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-2, atol=1e-2)

    config2 = lm_config(steps=2)
    config2.init_from = str(tmp_path / 'export')
    config2.optim.lr = 0.0
    result = train(config2, str(tmp_path / 'finetune'), build_task(config2))
    for a, b in zip(jax.tree.leaves(result['state'].params), jax.tree.leaves(loaded)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_shape_mismatch_names_path(tmp_path):
    config = lm_config(steps=1)
    params_io.save_params(str(tmp_path / 'p'), {'embed': np.zeros((3, 4), np.float32)})
    config.init_from = str(tmp_path / 'p')
    import pytest
    with pytest.raises(ValueError, match='embed'):
        train(config, str(tmp_path / 'run'), build_task(config))
