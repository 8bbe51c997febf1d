"""`train.compiler_options` (trainer/compile.py): parsing, per-backend defaults, and the options
reaching XLA."""
import jax
import jax.numpy as jnp
import pytest

from trainer.compile import compiler_options


def test_parse_and_defaults():
    assert compiler_options('auto', 'cpu') == {}
    assert compiler_options('fast_compile', 'cpu') == {'xla_cpu_use_fusion_emitters': False}
    assert compiler_options('fast_compile', 'tpu') == {}
    assert compiler_options('', 'cpu') == {}
    assert compiler_options('a=true, b=3,c=0.5,d=name', 'tpu') == {
        'a': True, 'b': 3, 'c': 0.5, 'd': 'name'}
    with pytest.raises(ValueError, match='not name=value'):
        compiler_options('xla_cpu_use_fusion_emitters', 'cpu')


def test_options_reach_xla():
    f = jax.jit(lambda x: jnp.tanh(x) * 2,
                compiler_options=compiler_options('fast_compile', jax.default_backend()))
    assert float(f(jnp.float32(0.5))) == pytest.approx(2 * 0.46211716)
    bad = jax.jit(lambda x: x + 1, compiler_options={'xla_no_such_option': True})
    with pytest.raises(Exception, match='xla_no_such_option'):
        bad(jnp.float32(1))
