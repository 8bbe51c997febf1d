"""The engine's example model (trainer/examples/lm.py): a few-layer causal transformer LM."""
import ml_collections

from configs import common


def get_config(arg=None):
    args = common.parse_arg(arg, steps=200, batch=16)
    c = common.base_config()
    c.task = 'trainer.examples.lm:build_task'
    c.model = ml_collections.ConfigDict()
    c.model.vocab = 64
    c.model.width = 64
    c.model.layers = 2
    c.model.heads = 4
    c.model.mlp_dim = 128
    c.model.seq_len = 32
    c.optim.lr = 3e-3
    c.optim.warmup_steps = 10
    c.optim.weight_decay = 0.01
    c.train.steps = args.steps
    c.train.global_batch = args.batch
    c.train.log_every = 10
    c.train.ckpt_every = 100
    c.train.eval_every = 100
    return c
